"""Small deepthin models for the export tests: a SentencePiece tokenizer trained on the repository's
own text, and model directories written by `deepthin init` over the knobs export must handle (GQA
and MQA, tied and untied heads, the three layer-sharing schemes)."""
import argparse
import json
import os
import random
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = 512

# name → config overrides (every model: dim 64, 2 physical blocks, head_dim 16, ffn 128).
MODELS = {
    "gqa_tied": {"n_heads": 4, "n_kv_heads": 2, "tie_embeddings": True},
    "mqa_untied": {"n_heads": 4, "n_kv_heads": 1, "tie_embeddings": False},
    "immediate": {"n_heads": 4, "n_kv_heads": 2, "tie_embeddings": True,
                  "layer_sharing": {"scheme": "immediate", "repeats": 2}},
    "repeat_all_over": {"n_heads": 4, "n_kv_heads": 1, "tie_embeddings": False,
                        "layer_sharing": {"scheme": "repeat_all_over", "repeats": 2}},
    "reverse": {"n_heads": 4, "n_kv_heads": 2, "tie_embeddings": True,
                "layer_sharing": {"scheme": "reverse", "repeats": 2}},
}

PROMPTS = ["The kernel", "deepthin trains small models", "A GGUF file embeds the tokenizer.",
           "Layer sharing: 0,0,1,1", "  two spaces, tabs\tand ünïcödé"]


def cli_arg():
    """The deepthin binary every test script is given (--deepthin PATH)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--deepthin", required=True)
    return ap.parse_args().deepthin


def finish(failures, ok):
    """Prints the failures and exits 1, or prints `ok`."""
    if failures:
        print("\n".join(["FAILED:"] + failures))
        sys.exit(1)
    print(ok)


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr}")
    return p.stdout


def tokenizer(cli, work):
    """A 512-piece tokenizer trained on the README and docs (the same text every run)."""
    text = os.path.join(work, "text.txt")
    with open(text, "w") as out:
        for rel in ("README.md", "data/README.md", "docs/performance.md", "experiments/kd_tiny.yaml"):
            path = os.path.join(ROOT, rel)
            if os.path.exists(path):
                out.write(open(path, encoding="utf-8").read())
    run([cli, "tokenizer", "train", "--input", text, "--vocab-size", str(VOCAB), "--out",
         os.path.join(work, "tok")])
    return os.path.join(work, "tok", "tokenizer.model")


def model(cli, work, name, tok, seed=1, max_seq_len=128):
    """`deepthin init` of MODELS[name] into work/name, with the tokenizer copied in."""
    m = {"vocab_size": VOCAB, "dim": 64, "n_layers": 2, "ffn": {"hidden_dim": 128},
         "max_seq_len": max_seq_len, "init": {"std": 0.1}}
    m.update(MODELS[name])
    cfg = os.path.join(work, f"{name}.yaml")
    with open(cfg, "w") as f:
        json.dump({"model": m}, f)  # JSON is YAML
    out = os.path.join(work, name)
    run([cli, "init", cfg, "--out", out, "--seed", str(seed)])
    with open(tok, "rb") as src, open(os.path.join(out, "tokenizer.model"), "wb") as dst:
        dst.write(src.read())
    return out


def token_lines(path, n_seqs, length, seed):
    rng = random.Random(seed)
    seqs = [[1] + [rng.randrange(3, VOCAB) for _ in range(length - 1)] for _ in range(n_seqs)]
    with open(path, "w") as f:
        for s in seqs:
            f.write(" ".join(map(str, s)) + "\n")
    return seqs


def score(cli, model_dir, tokens_file):
    """deepthin score's per-position log-probabilities, one list per sequence."""
    out = json.loads(run([cli, "score", model_dir, "--tokens", tokens_file]))
    return [s["logprobs"] for s in out["sequences"]]


def generate(cli, model_dir, prompt, n, cache=True):
    cmd = [cli, "generate", model_dir, "--prompt", prompt, "--temperature", "0",
           "--max-new-tokens", str(n), "--json"]
    if not cache:
        cmd.append("--no-cache")
    return json.loads(run(cmd))


def export(cli, model_dir, fmt, out, quant, *extra):
    return json.loads(run([cli, "export", model_dir, "--format", fmt, "--out", out,
                           "--quant", quant, *extra]))
