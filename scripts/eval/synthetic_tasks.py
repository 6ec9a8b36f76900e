#!/usr/bin/env python3
"""Multiple-choice files in the field layout of each of the paper's eight tasks (as the `datasets`
library writes them), built from real text: sentences of the offline corpus when it is there
(data/corpus/corpus.jsonl), else of this repository's documentation. For tests (lm-eval parity) and
for timing the evaluation at the published sizes where the real data cannot be fetched.

    synthetic_tasks.py --out DIR [--items N | --published] [--seed S] [--text FILE ...]
"""
import argparse
import glob
import json
import os
import random
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The splits lm-eval evaluates, and their sizes.
PUBLISHED = {"arc_easy": 2376, "arc_challenge": 1172, "boolq": 3270, "piqa": 1838, "siqa": 1954,
             "hellaswag": 10042, "openbookqa": 500, "winogrande": 1267}


def sentences(files):
    out = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                text = line
                if f.endswith(".jsonl"):
                    try:
                        text = json.loads(line).get("text", "")
                    except ValueError:
                        continue
                for s in re.split(r"(?<=[.!?])\s+", text):
                    s = " ".join(s.split())
                    if 24 <= len(s) <= 220 and len(s.split()) >= 4 and "|" not in s and "`" not in s:
                        out.append(s)
        if len(out) > 200000:
            break
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--published", action="store_true", help="the published item counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text", nargs="*")
    a = ap.parse_args()
    files = a.text or [p for p in [os.path.join(ROOT, "data", "corpus", "corpus.jsonl")] if os.path.exists(p)]
    if not files:
        files = sorted(glob.glob(os.path.join(ROOT, "*.md")) + glob.glob(os.path.join(ROOT, "*", "*.md")))
    pool = sentences(files)
    if len(pool) < 50:
        raise SystemExit(f"synthetic_tasks: too little text in {files}")
    rng = random.Random(a.seed)
    pick = lambda: rng.choice(pool)  # noqa: E731
    words = lambda s, lo, hi: " ".join(s.split()[lo:hi])  # noqa: E731
    os.makedirs(a.out, exist_ok=True)

    def write(task, make):
        n = PUBLISHED[task] if a.published else a.items
        with open(os.path.join(a.out, f"{task}.jsonl"), "w", encoding="utf-8") as f:
            for i in range(n):
                f.write(json.dumps(make(i), ensure_ascii=False) + "\n")

    def lettered(i, key):
        labels = ["A", "B", "C", "D"] if rng.random() < 0.9 else ["1", "2", "3", "4"]
        doc = {"id": f"syn-{i}", key: pick(), "choices": {"text": [words(pick(), 0, rng.randint(2, 9))
                                                                   for _ in labels], "label": labels},
               "answerKey": rng.choice(labels)}
        return doc

    write("arc_easy", lambda i: lettered(i, "question"))
    write("arc_challenge", lambda i: lettered(i, "question"))
    write("openbookqa", lambda i: lettered(i, "question_stem"))
    write("boolq", lambda i: {"question": words(pick(), 0, 8).rstrip(".?!").lower(),
                              "passage": " ".join(pick() for _ in range(rng.randint(2, 6))),
                              "idx": i, "label": rng.randint(0, 1)})
    write("piqa", lambda i: {"goal": pick(), "sol1": pick(), "sol2": pick(), "label": rng.randint(0, 1)})
    write("siqa", lambda i: {"context": pick(), "question": words(pick(), 0, 7) + "?",
                             "answerA": words(pick(), 0, 6), "answerB": words(pick(), 0, 6),
                             "answerC": words(pick(), 0, 6), "label": str(rng.randint(1, 3))})

    def hellaswag(i):
        ctx = pick()
        cut = rng.randint(3, max(3, len(ctx.split()) - 1))
        ctx_a, ctx_b = words(ctx, 0, cut), words(ctx, cut, None).lower()
        endings = [pick() for _ in range(4)]
        if rng.random() < 0.3:  # the WikiHow artifacts lm-eval cleans up
            endings[rng.randrange(4)] += " [title] " + words(pick(), 0, 4) + " [step] next"
        return {"ind": i, "activity_label": words(pick(), 0, 2).title(), "ctx_a": ctx_a,
                "ctx_b": ctx_b, "ctx": ctx, "endings": endings, "source_id": f"syn~{i}",
                "split": "val", "split_type": "indomain", "label": str(rng.randint(0, 3))}

    write("hellaswag", hellaswag)

    def winogrande(i):
        s = pick().split()
        while len(s) < 4:
            s = pick().split()
        k = rng.randint(1, len(s) - 2)
        return {"sentence": " ".join(s[:k] + ["_"] + s[k + 1:]), "option1": s[k],
                "option2": rng.choice(pool).split()[0], "answer": rng.choice(["1", "2"])}

    write("winogrande", winogrande)
    print(json.dumps({"out": a.out, "items": {t: PUBLISHED[t] if a.published else a.items for t in PUBLISHED},
                      "text": files}))


if __name__ == "__main__":
    main()
