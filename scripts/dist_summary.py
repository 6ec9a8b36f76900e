#!/usr/bin/env python3
"""Compare data-parallel runs against a single-device reference: loss curves step by step, final
validation loss, throughput and scaling efficiency (N-device tokens/s / (N x 1-device tokens/s)).

    scripts/dist_summary.py REFERENCE_RUN RUN [RUN...]   (run directories with metrics.jsonl)
"""
import json
import sys
from pathlib import Path


def load(run):
    train, evals, world = {}, [], 1
    for line in Path(run, "metrics.jsonl").read_text().splitlines():
        j = json.loads(line)
        if j["type"] == "train":
            train[j["step"]] = j
        elif j["type"] == "eval":
            evals.append(j)
    log = Path(run, "train.log").read_text()
    if "× " in log:
        world = int(log.split("× ")[1].split(" ")[0])
    return train, evals, world


def steady_tps(train):
    # Skip the first log window (compilation, allocator warm-up).
    steps = sorted(train)[1:] or sorted(train)
    return sum(train[s]["tokens_per_s"] for s in steps) / len(steps)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    ref_train, ref_eval, ref_world = load(argv[1])
    ref_tps = steady_tps(ref_train) / ref_world
    print(f"reference {argv[1]}: {ref_world} device(s), {ref_tps:,.0f} tokens/s per device")
    for run in argv[2:]:
        train, evals, world = load(run)
        common = sorted(set(train) & set(ref_train))
        diffs = [abs(train[s]["loss"] - ref_train[s]["loss"]) for s in common]
        print(f"\n{run}: {world} device(s)")
        print("  step  loss(ref)  loss(run)   |diff|")
        for s in common:
            print(f"  {s:4d}  {ref_train[s]['loss']:9.4f}  {train[s]['loss']:9.4f}  {abs(train[s]['loss'] - ref_train[s]['loss']):7.4f}")
        print(f"  mean |diff| {sum(diffs) / len(diffs):.4f}, max {max(diffs):.4f} over {len(diffs)} logged steps")
        if evals and ref_eval:
            print(f"  final validation loss: {evals[-1]['val_loss']:.4f} vs reference {ref_eval[-1]['val_loss']:.4f}")
        tps = steady_tps(train)
        eff = tps / (world * ref_tps)
        mem = max(t["peak_mem_gb"] for t in train.values())
        print(f"  throughput {tps:,.0f} tokens/s ({tps / world:,.0f} per device), scaling efficiency {eff:.3f}, peak memory {mem:.1f} GB")


if __name__ == "__main__":
    main(sys.argv)
