#!/usr/bin/env python3
"""Multiple-choice files for the eight tasks whose text sits on the edges where lm-eval's Python and
a byte-oriented reimplementation part ways: Unicode whitespace where lm-eval strips (U+00A0, U+3000,
U+2028, U+0085, U+001C-U+001F, U+1680, U+202F), non-ASCII first letters and capitals where it
capitalizes (é, ß, ǆ, ﬁ, İ, final Σ), CJK, emoji with joiners, combining marks, right-to-left text,
control characters, literal "<s>", "</s>" and "▁", brackets and " [title]" in HellaSwag, a blank
at the start of a WinoGrande sentence, empty choices, and string labels lm-eval converts.

Item 0 of every file is plain: lm-eval inspects a task's first document to decide how to read the
others. Inputs on which lm-eval itself crashes (an empty choice in item 0, a WinoGrande sentence
without "_", HellaSwag labels such as "02") are left out: docs/evaluation.md lists them.

    edge_tasks.py --out DIR [--items N] [--seed S]
"""
import argparse
import json
import os
import random

SPACES = ["\u00a0", "\u3000", "\u2028", "\u0085", "\u001c", "\u001f", "\u1680", "\u202f", "\u2009",
          "\t", "\r", "\x0b", "\x0c", "  "]
FIRST = ["é", "ß", "ǆ", "ﬁ", "İ", "ŉ", "ǰ", "ω", "и", "ｆ", "ᾳ", "a", "1", "\u00a0x"]
WORDS = ["deep", "thin", "ΟΔΟΣ", "σοφίαΣ", "İstanbul", "Straße", "naïve", "e\u0301", "日本語", "中文",
         "한국어", "👩\u200d💻", "🇫🇷", "שלום", "مرحبا", "<s>", "</s>", "▁", "<unk>", "x\u0000y",
         "tab\tin", "line\u2028sep", "ÉCOLE", "ǅemal", "ﬂow", "Ωmega", "café", "Ⅻ", "ＡＢＣ",
         "models", "share", "layers", "on", "phones"]


def phrase(rng, lo=2, hi=7):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def edge(rng, s):
    """s with Unicode whitespace or odd characters at one or both ends, sometimes."""
    r = rng.random()
    if r < 0.3:
        return s + rng.choice(SPACES)
    if r < 0.5:
        return rng.choice(SPACES) + s
    if r < 0.65:
        return rng.choice(SPACES) + s + rng.choice(SPACES)
    return s


def items(task, rng, n):
    plain = {
        "arc_easy": {"question": "Which models run on phones?", "choices": {"text": ["small ones", "large ones"], "label": ["A", "B"]}, "answerKey": "A"},
        "boolq": {"passage": "Deep and thin models run on phones.", "question": "do they run on phones", "label": 1},
        "piqa": {"goal": "Run a model on a phone.", "sol1": "Make it small.", "sol2": "Make it large.", "label": 0},
        "siqa": {"context": "Sam trained a model.", "question": "What next?", "answerA": "ship it", "answerB": "sleep", "answerC": "sing", "label": "1"},
        "hellaswag": {"activity_label": "Training", "ctx_a": "A model trains.", "ctx_b": "it learns", "endings": ["fast.", "slow.", "well.", "badly."], "label": "0"},
        "openbookqa": {"question_stem": "Small models", "choices": {"text": ["run on phones", "need clusters"], "label": ["A", "B"]}, "answerKey": "A"},
        "winogrande": {"sentence": "The model beat the tree because _ was deeper.", "option1": "the model", "option2": "the tree", "answer": "1"},
    }
    plain["arc_challenge"] = plain["arc_easy"]
    out = [plain[task]]
    for i in range(1, n):
        k = rng.randint(2, 4)
        if task in ("arc_easy", "arc_challenge", "openbookqa"):
            labels = ["A", "B", "C", "D"][:k]
            texts = [edge(rng, phrase(rng, 1, 4)) for _ in labels]
            if i % 5 == 3:
                texts[-1] = ""  # an empty choice (acc_norm divides by its length: 0)
            key = rng.choice(labels)
            item = {"choices": {"text": texts, "label": labels}}
            if task == "openbookqa":
                stem = edge(rng, phrase(rng))
                if i % 4 == 1:
                    stem += rng.choice(SPACES)  # moved into the continuation by rstrip
                item["question_stem"] = stem
                item["answerKey"] = (rng.choice(SPACES) if i % 3 == 0 else "") + key  # lstrip
            else:
                item["question"] = edge(rng, phrase(rng))
                item["answerKey"] = key
        elif task == "boolq":
            item = {"passage": edge(rng, phrase(rng, 3, 9)) if i % 6 else "<s> " + phrase(rng),
                    "question": edge(rng, phrase(rng)), "label": rng.randint(0, 1)}
        elif task == "piqa":
            item = {"goal": edge(rng, phrase(rng)), "sol1": edge(rng, phrase(rng, 1, 4)),
                    "sol2": "" if i % 5 == 2 else edge(rng, phrase(rng, 1, 4)), "label": rng.randint(0, 1)}
        elif task == "siqa":
            item = {"context": edge(rng, phrase(rng)), "question": edge(rng, phrase(rng)),
                    "answerA": edge(rng, phrase(rng, 1, 3)), "answerB": edge(rng, phrase(rng, 1, 3)),
                    "answerC": edge(rng, phrase(rng, 1, 3)),
                    "label": rng.choice(["1", "2", "3", " 2", "3\u00a0", "\u30001"])}  # Jinja's int()
        elif task == "hellaswag":
            ctx_b = rng.choice(FIRST) + phrase(rng, 1, 5)
            if i % 3 == 0:
                ctx_b += " ΟΔΟΣ"  # final sigma after lower()
            endings = [edge(rng, phrase(rng, 1, 4) + rng.choice(["", " [title] x", " [a b] c", " [x\ny] z"]))
                       for _ in range(4)]
            item = {"activity_label": edge(rng, phrase(rng, 1, 2)),
                    "ctx_a": edge(rng, phrase(rng) + rng.choice(["", " [step 1]", "  two  spaces "])),
                    "ctx_b": ctx_b, "endings": endings, "label": str(rng.randint(0, 3))}
        else:  # winogrande
            before = "" if i % 5 == 4 else edge(rng, phrase(rng, 1, 4)) + " "
            after = edge(rng, " " + phrase(rng, 2, 5) + rng.choice([".", "\u00a0.", " .\u3000"]))
            opt1, opt2 = phrase(rng, 1, 2), phrase(rng, 1, 2)
            if i % 4 == 2:
                opt1 += rng.choice(SPACES)  # a context ending in Unicode whitespace
            item = {"sentence": before + "_" + after, "option1": opt1, "option2": opt2,
                    "answer": rng.choice(["1", "2"])}
        out.append(item)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tasks = ["arc_easy", "arc_challenge", "boolq", "piqa", "siqa", "hellaswag", "openbookqa", "winogrande"]
    for t in tasks:
        rng = random.Random(f"{a.seed}-{t}")
        with open(os.path.join(a.out, f"{t}.jsonl"), "w", encoding="utf-8") as f:
            for item in items(t, rng, a.items):
                f.write(json.dumps(item, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
