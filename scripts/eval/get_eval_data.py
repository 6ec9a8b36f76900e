#!/usr/bin/env python3
"""Writes the paper's eight zero-shot tasks as JSONL files, one per task, with the `datasets` library
(the published datasets and splits lm-evaluation-harness 0.4 evaluates), for `deepthin eval --data`.

    get_eval_data.py --out data/eval

Exit status 3 when the Hugging Face hub cannot be reached.
"""
import argparse
import os
import sys

# task → (dataset, config, split), as lm-evaluation-harness 0.4.13 loads them.
TASKS = {
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test"),
    "boolq": ("aps/super_glue", "boolq", "validation"),
    "piqa": ("baber/piqa", None, "validation"),
    "siqa": ("lighteval/siqa", None, "validation"),
    "hellaswag": ("Rowan/hellaswag", None, "validation"),
    "openbookqa": ("allenai/openbookqa", "main", "test"),
    "winogrande": ("allenai/winogrande", "winogrande_xl", "validation"),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/eval")
    a = ap.parse_args()
    try:
        import datasets
    except ImportError:
        sys.exit("get_eval_data: the `datasets` package is missing (pip install datasets)")
    os.makedirs(a.out, exist_ok=True)
    for task, (path, name, split) in TASKS.items():
        try:
            ds = datasets.load_dataset(path, name, split=split)
        except Exception as e:  # noqa: BLE001 - any failure to fetch is reported the same way
            print(f"get_eval_data: cannot load {path} ({name or 'default'}, {split}) from the Hugging "
                  f"Face hub: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n"
                  f"This machine does not reach the hub; run this script where it does and copy "
                  f"{a.out}/ here, or point deepthin eval --data at files you already have.",
                  file=sys.stderr)
            sys.exit(3)
        out = os.path.join(a.out, f"{task}.jsonl")
        ds.to_json(out, lines=True, force_ascii=False)
        print(f"{task}: {len(ds)} items → {out}")


if __name__ == "__main__":
    main()
