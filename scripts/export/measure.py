#!/usr/bin/env python3
"""The export table of docs/export.md: for each model directory, each format and quantization, the
file size, the max and mean |Δ log-prob| of its next-token predictions against `deepthin score` (fp32), and
the CPU decode speed in its runtime (llama.cpp, ExecuTorch), one token at a time after a 16-token
prompt. Run in .venv-export (scripts/setup_export.sh); scripts/export_table.sh drives it.

    measure.py --deepthin build/deepthin --work DIR MODEL_DIR [MODEL_DIR ...]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import torch

GGUF = ["f32", "f16", "q8_0", "q4_0"]
PTE = ["fp32", "8da4w"]
DECODE = 64


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def gguf_row(path, seqs, threads):
    from llama_cpp import Llama
    llm = Llama(path, n_ctx=256, logits_all=True, type_k=0, type_v=0, n_threads=threads, verbose=False)
    got = []
    for s in seqs:
        llm.reset()
        llm.eval(s)
        lp = log_softmax(llm.scores[: len(s)])
        got.append([lp[t, s[t + 1]] for t in range(len(s) - 1)])
    llm.reset()
    llm.eval(seqs[0][:16])
    t0 = time.time()
    for _ in range(DECODE):
        llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
    return got, DECODE / (time.time() - t0)


def pte_row(path, seqs):
    from executorch.runtime import Runtime
    prog = Runtime.get().load_program(path)
    got = []
    for s in seqs:
        m = prog.load_method("forward")
        lps = []
        for t, tok in enumerate(s[:-1]):
            out = m.execute([torch.tensor([[tok]]), torch.tensor([t])])[0]
            lps.append(torch.log_softmax(out[0, 0].double(), -1)[s[t + 1]].item())
        got.append(lps)
    m = prog.load_method("forward")
    for t, tok in enumerate(seqs[0][:16]):
        out = m.execute([torch.tensor([[tok]]), torch.tensor([t])])[0]
    t0 = time.time()
    for t in range(16, 16 + DECODE):
        out = m.execute([torch.tensor([[int(out[0, 0].argmax())]]), torch.tensor([t])])[0]
    return got, DECODE / (time.time() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deepthin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    rows = []
    for mdir in a.models:
        name = os.path.basename(os.path.normpath(mdir))
        vocab = json.load(open(os.path.join(mdir, "config.json")))["vocab_size"]
        rng = random.Random(0)
        seqs = [[1] + [rng.randrange(3, vocab) for _ in range(63)] for _ in range(2)]
        tokens = os.path.join(a.work, f"{name}.tokens")
        with open(tokens, "w") as f:
            f.writelines(" ".join(map(str, s)) + "\n" for s in seqs)
        want = [s["logprobs"] for s in json.loads(run([a.deepthin, "score", mdir, "--tokens", tokens]))["sequences"]]
        for fmt, quants in (("gguf", GGUF), ("executorch", PTE)):
            for q in quants:
                out = os.path.join(a.work, f"{name}.{q}.{'gguf' if fmt == 'gguf' else 'pte'}")
                t0 = time.time()
                run([a.deepthin, "export", mdir, "--format", fmt, "--out", out, "--quant", q, "--force"])
                export_s = time.time() - t0
                got, tps = gguf_row(out, seqs, a.threads) if fmt == "gguf" else pte_row(out, seqs)
                d = np.concatenate([np.abs(np.array(x) - np.array(y)) for x, y in zip(got, want)])
                rows.append((name, "llama.cpp GGUF" if fmt == "gguf" else "ExecuTorch .pte", q,
                             os.path.getsize(out), float(d.max()), float(d.mean()), tps, export_s))
                print(f"| {rows[-1][0]} | {rows[-1][1]} | {q} | {rows[-1][3] / 1e6:.1f} MB | "
                      f"{rows[-1][4]:.2e} | {rows[-1][5]:.2e} | {tps:.1f} | {export_s:.0f} s |", flush=True)
    print("\n| model | runtime | quantization | file | max abs Δ log-prob | mean abs Δ | decode tokens/s "
          "(2 cores) | export time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3] / 1e6:.1f} MB | {r[4]:.2e} | {r[5]:.2e} | {r[6]:.1f} | "
              f"{r[7]:.0f} s |")


if __name__ == "__main__":
    main()
