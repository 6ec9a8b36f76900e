"""Cross-check deepthin's decoder against transformers' LlamaForCausalLM (fp32, CPU), both ways.

A: `deepthin init` writes a model; transformers loads it; both score the same token sequences.
B: transformers builds a random Llama and save_pretrained()s it; deepthin scores it.
Layer-shared models are compared with transformers running the expanded (--expand-shared) weights.
Every case prints its max |delta| of per-position log-probabilities; the limit is 1e-4.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

import torch
from transformers import LlamaConfig, LlamaForCausalLM

TOL = 1e-4


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def write_tokens(path, vocab, lengths, seed):
    rng = random.Random(seed)
    seqs = [[rng.randrange(vocab) for _ in range(n)] for n in lengths]
    with open(path, "w") as f:
        for s in seqs:
            f.write(" ".join(map(str, s)) + "\n")
    return seqs


def hf_logprobs(model, seqs):
    out = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s])
            logits = model(ids[:, :-1]).logits.float()
            lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)[0]
            out.append(lp.double())
    return out


def deepthin_logprobs(exe, model_dir, tokens_file):
    res = json.loads(run([exe, "score", model_dir, "--tokens", tokens_file]))
    return [torch.tensor(s["logprobs"], dtype=torch.float64) for s in res["sequences"]]


def max_delta(a, b):
    assert len(a) == len(b)
    d = 0.0
    for x, y in zip(a, b):
        assert x.shape == y.shape, (x.shape, y.shape)
        d = max(d, (x - y).abs().max().item())
    return d


def yaml_config(vocab, dim, layers, heads, kv, ffn, tie, scheme="none", repeats=1, theta=10000.0, eps=1e-5):
    return f"""model:
  vocab_size: {vocab}
  dim: {dim}
  n_layers: {layers}
  n_heads: {heads}
  n_kv_heads: {kv}
  ffn: {{type: swiglu, hidden_dim: {ffn}}}
  norm: {{type: rmsnorm, eps: {eps}}}
  rope: {{theta: {theta}}}
  max_seq_len: 128
  tie_embeddings: {'true' if tie else 'false'}
  layer_sharing: {{scheme: {scheme}, repeats: {repeats}}}
  init: {{std: 0.05}}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deepthin", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    failures = []
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tokens = os.path.join(tmp, "tokens.txt")
        vocab = 211
        seqs = write_tokens(tokens, vocab, [2, 7, 33, 64], seed=1)

        # A: deepthin -> transformers.
        cases = [
            ("gqa-tied", dict(dim=64, layers=3, heads=4, kv=2, ffn=96, tie=True)),
            ("gqa-untied", dict(dim=64, layers=3, heads=4, kv=2, ffn=96, tie=False)),
            ("mha-untied-theta", dict(dim=48, layers=2, heads=3, kv=3, ffn=80, tie=False, theta=500000.0)),
            ("mqa-tied", dict(dim=64, layers=2, heads=4, kv=1, ffn=64, tie=True, eps=1e-6)),
            ("ls-immediate-x2", dict(dim=64, layers=3, heads=4, kv=2, ffn=96, tie=True, scheme="immediate", repeats=2)),
            ("ls-repeat_all_over-x2", dict(dim=64, layers=3, heads=4, kv=2, ffn=96, tie=True, scheme="repeat_all_over", repeats=2)),
            ("ls-reverse-x3", dict(dim=64, layers=3, heads=4, kv=2, ffn=96, tie=False, scheme="reverse", repeats=3)),
        ]
        for name, kw in cases:
            cfg = os.path.join(tmp, name + ".yaml")
            with open(cfg, "w") as f:
                f.write(yaml_config(vocab, **kw))
            shared_dir = os.path.join(tmp, name)
            run([args.deepthin, "init", cfg, "--out", shared_dir, "--seed", "7"])
            hf_dir = shared_dir
            if kw.get("repeats", 1) > 1:
                hf_dir = shared_dir + "-expanded"
                run([args.deepthin, "init", cfg, "--out", hf_dir, "--seed", "7", "--expand-shared"])
                with open(os.path.join(shared_dir, "config.json")) as f:
                    if json.load(f)["model_type"] != "deepthin":
                        failures.append(f"{name}: shared directory claims to be a plain Llama model")
            model = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
            expected_layers = kw["layers"] * kw.get("repeats", 1)
            if model.config.num_hidden_layers != expected_layers:
                failures.append(f"{name}: transformers sees {model.config.num_hidden_layers} layers, expected {expected_layers}")
            ref = hf_logprobs(model, seqs)
            got = deepthin_logprobs(args.deepthin, shared_dir, tokens)
            d = max_delta(ref, got)
            results.append((f"A deepthin init -> transformers [{name}]", d))
            if kw.get("repeats", 1) > 1:
                d2 = max_delta(got, deepthin_logprobs(args.deepthin, hf_dir, tokens))
                results.append((f"A deepthin shared vs expanded [{name}]", d2))

        # B: transformers save_pretrained -> deepthin.
        hf_cases = [
            ("hf-gqa-tied", dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=2, tie_word_embeddings=True)),
            ("hf-gqa-untied", dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                                    num_key_value_heads=2, tie_word_embeddings=False, rope_theta=50000.0)),
            ("hf-headdim", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=1, head_dim=32, tie_word_embeddings=False)),
        ]
        for name, kw in hf_cases:
            torch.manual_seed(hash(name) % 1000)
            conf = LlamaConfig(vocab_size=vocab, max_position_embeddings=128, rms_norm_eps=1e-5,
                               initializer_range=0.05, **kw)
            model = LlamaForCausalLM(conf).eval()
            # Norm weights start at 1; perturb them so that a norm bug cannot hide.
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if "norm" in n:
                        p.add_(0.1 * torch.randn_like(p))
            out = os.path.join(tmp, name)
            model.save_pretrained(out, safe_serialization=True)
            ref = hf_logprobs(model, seqs)
            got = deepthin_logprobs(args.deepthin, out, tokens)
            results.append((f"B transformers save_pretrained -> deepthin [{name}]", max_delta(ref, got)))

    width = max(len(n) for n, _ in results)
    for n, d in results:
        status = "ok" if d <= TOL else "FAIL"
        print(f"{n:<{width}}  max |delta| = {d:.3e}  {status}")
        if d > TOL:
            failures.append(f"{n}: max |delta| {d:.3e} > {TOL}")
    print(f"overall max |delta| = {max(d for _, d in results):.3e} over {len(results)} comparisons")
    if failures:
        print("\n".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
