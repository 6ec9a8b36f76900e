"""`deepthin export --format hf` directories loaded by transformers without custom code: the model's
log-probabilities against `deepthin score` (fp32, max |Δ| within 1e-4), the tokenizer's ids against
the SentencePiece model, and the generation config. Layer-shared models need --expand-shared (without
it the export refuses with exit status 2)."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import sentencepiece as spm
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "python_export"))
import fixtures  # noqa: E402

TOL = 1e-4


def main():
    cli = fixtures.cli_arg()
    failures = []
    with tempfile.TemporaryDirectory() as work:
        tok = fixtures.tokenizer(cli, work)
        sp = spm.SentencePieceProcessor(model_file=tok)
        tokens_file = os.path.join(work, "tokens.txt")
        seqs = fixtures.token_lines(tokens_file, 3, 40, seed=3)
        for name, extra in (("gqa_tied", []), ("mqa_untied", []), ("immediate", ["--expand-shared"]),
                            ("reverse", ["--expand-shared"])):
            mdir = fixtures.model(cli, work, name, tok)
            out = os.path.join(work, f"{name}.hf")
            if extra:
                p = subprocess.run([cli, "export", mdir, "--format", "hf", "--out", out],
                                   capture_output=True, text=True)
                if p.returncode != 2 or "--expand-shared" not in p.stderr or os.path.exists(out):
                    failures.append(f"{name}: a shared model without --expand-shared gave status "
                                    f"{p.returncode}: {p.stderr.strip()}")
            fixtures.export(cli, mdir, "hf", out, "fp32", *extra)
            model = AutoModelForCausalLM.from_pretrained(out).eval()
            want = fixtures.score(cli, mdir, tokens_file)
            worst = 0.0
            with torch.no_grad():
                for seq, w in zip(seqs, want):
                    lp = torch.log_softmax(model(torch.tensor([seq])).logits[0].double(), -1)
                    got = [lp[t, seq[t + 1]].item() for t in range(len(seq) - 1)]
                    worst = max(worst, float(np.abs(np.array(got) - np.array(w)).max()))
            print(f"{name:16} transformers {type(model).__name__} ({model.config.num_hidden_layers} "
                  f"layers): max |Δ log-prob| {worst:.2e}")
            if worst > TOL:
                failures.append(f"{name}: max |Δ log-prob| {worst:.3e} > {TOL}")
            hf_tok = AutoTokenizer.from_pretrained(out)
            for text in fixtures.PROMPTS:
                a = hf_tok(text, add_special_tokens=True).input_ids
                b = [sp.bos_id()] + sp.encode(text)
                if a != b:
                    failures.append(f"{name}: transformers' tokenizer {a} != SentencePiece {b} for {text!r}")
            gen = GenerationConfig.from_pretrained(out)
            if gen.bos_token_id != sp.bos_id() or gen.eos_token_id != sp.eos_id():
                failures.append(f"{name}: generation_config {gen}")
        bf = os.path.join(work, "bf16.hf")
        fixtures.export(cli, os.path.join(work, "gqa_tied"), "hf", bf, "bf16")
        if AutoModelForCausalLM.from_pretrained(bf, dtype="auto").dtype != torch.bfloat16:
            failures.append("--quant bf16 did not give bf16 weights")
    fixtures.finish(failures, "all HF export checks passed")


if __name__ == "__main__":
    main()
