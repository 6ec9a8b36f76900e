"""`deepthin eval` against lm-evaluation-harness 0.4 on the same items.

The tests build small multiple-choice files in the field layout of each of the eight tasks from real
text (scripts/eval/synthetic_tasks.py), export a model with `deepthin export --format hf`, and run
`lm_eval --model hf` with local task files that include lm-eval's own task definitions (prompts,
choices, targets, HellaSwag's and WinoGrande's processing) and point them at those files. Then:
- acc and acc_norm of every item, and so of every task, are identical;
- every choice's log-likelihood agrees within 1e-4 (fp32, CPU).
Both on plain items and on Unicode edge items (scripts/eval/edge_tasks.py: Unicode whitespace where
lm-eval strips, non-ASCII capitals where it capitalizes, CJK, emoji, control characters, literal
"<s>", empty choices, string labels), in one lm-eval run over both sets.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

import lm_eval

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python_export"))
import fixtures  # noqa: E402

TOL = 1e-4
# deepthin's task → lm-eval's task file (inside the installed package).
LM_EVAL_TASKS = {
    "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
    "boolq": "super_glue/boolq/default.yaml", "piqa": "piqa/piqa.yaml", "siqa": "siqa/siqa.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml", "openbookqa": "openbookqa/openbookqa.yaml",
    "winogrande": "winogrande/default.yaml",
}


def task_yaml(task, data_file, include_dir, prefix):
    base = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", LM_EVAL_TASKS[task])
    path = os.path.join(include_dir, f"{prefix}_{task}.yaml")
    with open(path, "w") as f:
        f.write(f"""include: {base}
task: {prefix}_{task}
tag: []
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    test: {data_file}
training_split: null
validation_split: null
test_split: test
num_fewshot: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")


def lm_eval_samples(out_dir, name):
    files = glob.glob(os.path.join(out_dir, "**", f"samples_{name}_*.jsonl"), recursive=True)
    if not files:
        sys.exit(f"lm-eval wrote no samples for {task} under {out_dir}")
    samples = {}
    for line in open(files[0]):
        s = json.loads(line)
        resps = s.get("filtered_resps") or [r[0] for r in s["resps"]]
        samples[int(s["doc_id"])] = {"loglik": [float(r[0]) for r in resps], "acc": float(s["acc"]),
                                     "acc_norm": float(s["acc_norm"])}
    return samples


def main():
    cli = fixtures.cli_arg()
    failures = []
    with tempfile.TemporaryDirectory() as work:
        tok = fixtures.tokenizer(cli, work)
        mdir = fixtures.model(cli, work, "gqa_tied", tok, max_seq_len=1024)
        data = os.path.join(work, "tasks")
        fixtures.run([sys.executable, os.path.join(fixtures.ROOT, "scripts", "eval", "synthetic_tasks.py"),
                      "--out", data, "--items", "12", "--seed", "4"])
        edge = os.path.join(work, "edge_tasks")
        fixtures.run([sys.executable, os.path.join(fixtures.ROOT, "scripts", "eval", "edge_tasks.py"),
                      "--out", edge, "--items", "16", "--seed", "5"])
        hf = os.path.join(work, "hf")
        fixtures.export(cli, mdir, "hf", hf, "fp32")
        # Twice: with the CPU's default (an item's shared prefix once) and with every request in the
        # length-sorted batches (the default on GPUs).
        variants = {}
        for name, extra in (("shared prefixes", []), ("all batched", ["--shared-prefix-min", "0"])):
            path = os.path.join(work, f"ours_{len(variants)}.json")
            fixtures.run([cli, "eval", mdir, "--tasks", "all", "--data", data, "--device", "cpu",
                          "--json", path] + extra)
            variants[name] = ("dt", json.load(open(path)))
        path = os.path.join(work, "ours_edge.json")
        fixtures.run([cli, "eval", mdir, "--tasks", "all", "--data", edge, "--device", "cpu", "--json", path])
        variants["Unicode edge items"] = ("dte", json.load(open(path)))
        include = os.path.join(work, "yaml")
        os.makedirs(include)
        for task in LM_EVAL_TASKS:
            task_yaml(task, os.path.join(data, f"{task}.jsonl"), include, "dt")
            task_yaml(task, os.path.join(edge, f"{task}.jsonl"), include, "dte")
        out = os.path.join(work, "lm_eval_out")
        env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        # logits_cache=False: lm-eval 0.4.13 groups requests whose context + continuation tokens are
        # the same and scores them all from the first one's continuation slice, which is wrong when
        # their context/continuation split differs (two WinoGrande choices built from overlapping
        # text: one choice's log-likelihood came out 0.79 nats off). Without the cache lm-eval
        # scores every request on its own, and agrees with deepthin and with a plain transformers
        # forward pass.
        p = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                            f"pretrained={hf},dtype=float32,logits_cache=False", "--tasks",
                            ",".join(f"{p}_{t}" for p in ("dt", "dte") for t in LM_EVAL_TASKS), "--include_path", include,
                            "--device", "cpu", "--batch_size", "8", "--output_path", out, "--log_samples"],
                           capture_output=True, text=True, env=env)
        if p.returncode != 0:
            sys.exit(f"lm_eval failed ({p.returncode}):\n{p.stderr[-4000:]}")
        for variant, (prefix, ours) in variants.items():
            print(f"deepthin eval, {variant}:")
            print(f"{'task':14} {'items':>5} {'acc ours/lm-eval':>18} {'acc_norm ours/lm-eval':>22} {'max |Δ ll|':>10}")
            for task in LM_EVAL_TASKS:
                theirs = lm_eval_samples(out, f"{prefix}_{task}")
                mine = ours["items"][task]
                worst, acc_m, acc_t, norm_m, norm_t = 0.0, 0, 0, 0, 0
                for i, item in enumerate(mine):
                    t = theirs[i]
                    if len(t["loglik"]) != len(item["loglik"]):
                        failures.append(f"{variant}: {task} item {i}: {len(item['loglik'])} choices vs {len(t['loglik'])}")
                        continue
                    worst = max(worst, max(abs(a - b) for a, b in zip(item["loglik"], t["loglik"])))
                    a, n = float(item["pred"] == item["gold"]), float(item["pred_norm"] == item["gold"])
                    acc_m, acc_t, norm_m, norm_t = acc_m + a, acc_t + t["acc"], norm_m + n, norm_t + t["acc_norm"]
                    if a != t["acc"] or n != t["acc_norm"]:
                        failures.append(f"{variant}: {task} item {i}: acc {a}/{t['acc']}, acc_norm {n}/{t['acc_norm']}")
                k = len(mine)
                print(f"{task:14} {k:5d} {acc_m / k:8.4f}/{acc_t / k:<8.4f} {norm_m / k:11.4f}/{norm_t / k:<10.4f} {worst:10.2e}")
                if worst > TOL:
                    failures.append(f"{variant}: {task}: max |Δ log-likelihood| {worst:.3e} > {TOL}")
    fixtures.finish(failures, "deepthin eval equals lm-eval on every item")


if __name__ == "__main__":
    main()
