"""The HF export's tokenizer.json against the SentencePiece model it came from, through transformers'
AutoTokenizer (what users load), on generated edge strings: leading, trailing and repeated spaces,
NBSP and the other Unicode spaces, tabs and newlines, CJK, emoji with joiners and flags, combining
marks, control characters, and the spellings of the special and byte pieces. BPE models (deepthin's
default, and LLaMA's) must agree on every string, and decode back to SentencePiece's decoding.
Unigram models agree except where two segmentations score exactly the same: SentencePiece's Viterbi
and tokenizers' break such ties differently (a run of four spaces as "▁▁▁" + "▁" or "▁" + "▁▁▁": the
same pieces, the same score, in another order), which no tokenizer.json can express; the rate must
stay at or above UNIGRAM_MIN and every difference must be such a tie."""
import json
import os
import random
import subprocess
import sys
import tempfile

import sentencepiece as spm
from transformers import AutoTokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "python_export"))
import fixtures  # noqa: E402

N_STRINGS = 10_000
VOCAB = 1024
# Ties are inexpressible, not wrong (every difference is checked to be one); how many there are
# depends on the training text and the words below, both read from the README and guides: 0 to 10 of
# 10,001 (at most 10) until 2026-12-05, 14 after the README changed on 2026-12-07. The bound allows 50.
UNIGRAM_MIN = 0.995

SPACES = [" ", "  ", "   ", "\u00a0", "\u2003", "\u3000", "\u2009", "\u202f", "\t", "\n", "\r\n",
          "\u200b", "\ufeff", "\u2028"]
SCRIPTS = {
    "latin": "abcdefghijklmnopqrstuvwxyzéèêëàâäôöûüçñßøå",
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明",
    "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
    "greek": "αβγδεζηθικλμνξοπρστυφχψωΣς",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "devanagari": "कखगघङचछजझञटठडढणतथदधनपफबभमयरलवशषसह",
}
EMOJI = ["😀", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "🏳️\u200d🌈", "❤️", "🤖", "✨"]
COMBINING = ["\u0301", "\u0308", "\u0327", "\u20dd", "\u0336"]
CONTROL = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\u0085", "\u200e", "\u202e"]
SPECIAL = ["<s>", "</s>", "<unk>", "<pad>", "<0x41>", "<0xE2>", "▁", "▁▁", "<s", "s>", "<", ">"]
DIGITS = ["0", "12", "2026", "3.14159", "1,000,000", "٣٤", "½"]


def training_text(rng):
    """Repository text plus generated lines in several scripts, so that the vocabulary holds
    non-ASCII pieces (and merges between them) as well as ASCII ones."""
    parts = []
    for rel in ("README.md", "data/README.md", "docs/performance.md"):
        path = os.path.join(fixtures.ROOT, rel)
        if os.path.exists(path):
            parts.append(open(path, encoding="utf-8").read())
    words = {k: ["".join(rng.choice(v) for _ in range(rng.randint(1, 5))) for _ in range(60)]
             for k, v in SCRIPTS.items()}
    for _ in range(4000):
        script = rng.choice(list(SCRIPTS))
        parts.append(" ".join(rng.choice(words[script]) for _ in range(rng.randint(3, 12))))
    return "\n".join(parts)


def edge_string(rng, words):
    pieces = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        if kind < 0.25:
            pieces.append(rng.choice(words))
        elif kind < 0.45:
            pieces.append(rng.choice(SPACES))
        elif kind < 0.60:
            s = rng.choice(list(SCRIPTS.values()))
            pieces.append("".join(rng.choice(s) for _ in range(rng.randint(1, 4))))
        elif kind < 0.68:
            pieces.append(rng.choice(EMOJI))
        elif kind < 0.74:
            pieces.append(rng.choice("aeiouxyz") + rng.choice(COMBINING))
        elif kind < 0.80:
            pieces.append(rng.choice(CONTROL))
        elif kind < 0.90:
            pieces.append(rng.choice(SPECIAL))
        else:
            pieces.append(rng.choice(DIGITS))
    s = "".join(pieces)
    r = rng.random()
    if r < 0.15:
        s = rng.choice(SPACES) + s  # leading whitespace
    elif r < 0.25:
        s = s + rng.choice(SPACES)  # trailing whitespace
    return s


def export_with(cli, work, name, model_type, text):
    tok_dir = os.path.join(work, name + "_tok")
    fixtures.run([cli, "tokenizer", "train", "--input", text, "--vocab-size", str(VOCAB),
                  "--model-type", model_type, "--out", tok_dir])
    cfg = os.path.join(work, name + ".yaml")
    with open(cfg, "w") as f:
        json.dump({"model": {"vocab_size": VOCAB, "dim": 32, "n_layers": 1, "n_heads": 2,
                             "n_kv_heads": 1, "ffn": {"hidden_dim": 64}, "max_seq_len": 64}}, f)
    mdir = os.path.join(work, name)
    fixtures.run([cli, "init", cfg, "--out", mdir, "--seed", "1"])
    tok = os.path.join(tok_dir, "tokenizer.model")
    out = os.path.join(work, name + ".hf")
    fixtures.run([cli, "export", mdir, "--format", "hf", "--tokenizer", tok, "--out", out])
    return tok, out


def main():
    cli = fixtures.cli_arg()
    failures = []
    rng = random.Random(20261205)
    with tempfile.TemporaryDirectory() as work:
        text = os.path.join(work, "train.txt")
        with open(text, "w", encoding="utf-8") as f:
            f.write(training_text(rng))
        words = open(os.path.join(fixtures.ROOT, "README.md"), encoding="utf-8").read().split()[:2000]
        strings = [""] + [edge_string(rng, words) for _ in range(N_STRINGS)]
        for name, model_type in (("bpe", "bpe"), ("unigram", "unigram")):
            tok, out = export_with(cli, work, name, model_type, text)
            sp = spm.SentencePieceProcessor(model_file=tok)
            hf = AutoTokenizer.from_pretrained(out)
            hf_ids = hf(strings, add_special_tokens=False).input_ids
            agree, decode_bad, first_bad, not_ties = 0, 0, [], []
            for s, got in zip(strings, hf_ids):
                want = sp.encode(s)
                # A tie: the same pieces in another order (unigram only; BPE has none).
                if got != want and not (name == "unigram" and sorted(got) == sorted(want)):
                    not_ties.append(s)
                if got == want:
                    agree += 1
                    if hf.decode(got) != sp.decode(want):
                        decode_bad += 1
                        if len(first_bad) < 3:
                            first_bad.append(f"decode of {s!r}: {hf.decode(got)!r} != {sp.decode(want)!r}")
                elif len(first_bad) < 3:
                    first_bad.append(f"{s!r}: tokenizers {got} != SentencePiece {want}")
            with_bos = hf("hello <s> world", add_special_tokens=True).input_ids
            if with_bos != [sp.bos_id()] + sp.encode("hello <s> world"):
                failures.append(f"{name}: add_special_tokens gave {with_bos}")
            rate = agree / len(strings)
            print(f"{name:8} {agree}/{len(strings)} strings encode identically ({rate:.4%}); "
                  f"{decode_bad} decode differently")
            for line in first_bad:
                print("   ", line)
            if decode_bad or not_ties or rate < (1.0 if name == "bpe" else UNIGRAM_MIN):
                failures.append(f"{name}: {len(strings) - agree} strings encode ({len(not_ties)} "
                                f"not as a tie) and {decode_bad} decode differently: {first_bad}")
        # A unigram model without '>' among its pieces: tokenizers' Unigram would read "<s>" in text
        # as the control piece (an unknown character scores below every piece), so it is refused.
        no_gt = os.path.join(work, "no_gt.txt")
        with open(no_gt, "w", encoding="utf-8") as f:
            f.write(training_text(rng).replace(">", ""))
        p = subprocess.run([cli, "tokenizer", "train", "--input", no_gt, "--vocab-size", str(VOCAB),
                            "--model-type", "unigram", "--out", os.path.join(work, "no_gt_tok")],
                           capture_output=True, text=True)
        out = os.path.join(work, "no_gt.hf")
        q = subprocess.run([cli, "export", os.path.join(work, "unigram"), "--format", "hf", "--tokenizer",
                            os.path.join(work, "no_gt_tok", "tokenizer.model"), "--out", out],
                           capture_output=True, text=True)
        if p.returncode != 0 or q.returncode != 2 or "'>'" not in q.stderr or os.path.exists(out):
            failures.append(f"unigram model without '>': train {p.returncode}, export {q.returncode}: "
                            f"{q.stderr.strip()[-300:]}")
        # A model whose encoding tokenizer.json cannot reproduce is refused, by name, writing nothing.
        spm.SentencePieceTrainer.train(input=text, model_prefix=os.path.join(work, "rew"), vocab_size=VOCAB,
                                       model_type="bpe", byte_fallback=True,
                                       normalization_rule_name="identity",
                                       remove_extra_whitespaces=True, minloglevel=2)
        out = os.path.join(work, "rew.hf")
        p = subprocess.run([cli, "export", os.path.join(work, "bpe"), "--format", "hf", "--tokenizer",
                            os.path.join(work, "rew.model"), "--out", out], capture_output=True, text=True)
        if p.returncode != 2 or "remove_extra_whitespaces" not in p.stderr or os.path.exists(out):
            failures.append(f"remove_extra_whitespaces model: status {p.returncode}: {p.stderr.strip()}")
    fixtures.finish(failures, "HF tokenizer parity holds")


if __name__ == "__main__":
    main()
