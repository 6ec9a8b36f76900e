"""TensorBoard reads the event files deepthin writes by hand, and sees the same numbers as metrics.jsonl.

A tiny model trains for a few steps on pre-tokenized data; tensorboard's own EventAccumulator then loads
runs/<name>/tensorboard and every train/eval scalar must equal the metrics.jsonl value (as float32).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deepthin", required=True)
    exe = ap.parse_args().deepthin
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "tok.jsonl"), "w") as f:
            for _ in range(200):
                f.write(json.dumps({"token_ids": [rng.randrange(64) for _ in range(50)]}) + "\n")
        run([exe, "data", "prepare", "--vocab-size", "64", "--input", os.path.join(tmp, "tok.jsonl"),
             "--format", "jsonl-tokens", "--out", os.path.join(tmp, "data"), "--val-fraction", "0.1"])
        cfg = os.path.join(tmp, "cfg.yaml")
        with open(cfg, "w") as f:
            f.write(f"""run: {{root: {tmp}/runs, name: tb}}
model: {{vocab_size: 64, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, max_seq_len: 32}}
data: {{path: {tmp}/data}}
train: {{micro_batch_size: 4, max_steps: 6, device: cpu}}
schedule: {{warmup_steps: 2}}
eval: {{every: 3, batches: 2}}
checkpoint: {{every: 6}}
log: {{every: 2}}
""")
        run([exe, "train", cfg])
        run_dir = os.path.join(tmp, "runs", "tb")
        records = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
        acc = EventAccumulator(os.path.join(run_dir, "tensorboard"))
        acc.Reload()
        tags = acc.Tags()["scalars"]
        checked = 0
        for r in records:
            for k, v in r.items():
                if k in ("type", "step") or not isinstance(v, (int, float)):
                    continue
                tag = f"{r['type']}/{k}"
                if tag not in tags:
                    sys.exit(f"TensorBoard lacks {tag}; it has {sorted(tags)}")
                by_step = {e.step: e.value for e in acc.Scalars(tag)}
                if r["step"] not in by_step or by_step[r["step"]] != np.float32(v):
                    sys.exit(f"{tag} at step {r['step']}: TensorBoard {by_step.get(r['step'])} != metrics.jsonl {v}")
                checked += 1
        steps = sorted(e.step for e in acc.Scalars("train/loss"))
        if steps != [2, 4, 6]:
            sys.exit(f"train/loss steps {steps}, expected [2, 4, 6]")
        print(f"TensorBoard read {len(tags)} scalar tags; {checked} values match metrics.jsonl")


if __name__ == "__main__":
    main()
