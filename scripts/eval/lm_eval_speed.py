"""Times `deepthin eval` and lm-evaluation-harness on the same items with the same model.

    .venv/bin/python scripts/eval/lm_eval_speed.py MODEL_DIR [--items N | --published]
        [--device cpu|cuda] [--batch-size B] [--cli build/deepthin] [--work DIR]

MODEL_DIR is a deepthin model directory or run; lm-eval gets the same weights exported with
`deepthin export --format hf`. The items come from scripts/eval/synthetic_tasks.py (N per task, or the
published counts). Both run in fp32 on the CPU or in their GPU defaults; each is timed as a whole
process (start-up and model load included) and the per-task accuracies are printed side by side.
lm-eval runs with logits_cache=False: its cache scores requests with equal tokens but a different
context/continuation split from one slice (see tests/python/test_eval_lm_eval.py). Contexts longer
than the model are cut from the left by both (deepthin eval --truncate-left, as lm-eval does).
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from test_eval_lm_eval import LM_EVAL_TASKS, task_yaml  # noqa: E402


def timed(cmd, env=None):
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{os.path.basename(cmd[0])} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--items", type=int, default=200, help="items per task (default 200)")
    ap.add_argument("--published", action="store_true", help="the published item counts instead")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", default="32", help="lm-eval's --batch_size (a number or auto)")
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "deepthin"))
    ap.add_argument("--work", help="keep the files here (default: a temporary directory)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or tmp
        os.makedirs(work, exist_ok=True)
        data = os.path.join(work, "tasks")
        size = ["--published"] if a.published else ["--items", str(a.items)]
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "eval", "synthetic_tasks.py"),
                        "--out", data] + size, check=True, capture_output=True)
        hf = os.path.join(work, "hf")
        subprocess.run([a.cli, "export", a.model, "--format", "hf", "--out", hf, "--force"], check=True,
                       capture_output=True)
        ours_json = os.path.join(work, "deepthin.json")
        precision = ["--precision", "fp32"] if a.device == "cpu" else []
        t_ours = timed([a.cli, "eval", a.model, "--tasks", "all", "--data", data, "--device", a.device,
                        "--json", ours_json, "--truncate-left"] + precision)
        include = os.path.join(work, "yaml")
        os.makedirs(include, exist_ok=True)
        for task in LM_EVAL_TASKS:
            task_yaml(task, os.path.join(data, f"{task}.jsonl"), include)
        out = os.path.join(work, "lm_eval_out")
        env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        dtype = "float32" if a.device == "cpu" else "bfloat16"
        t_theirs = timed([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                          f"pretrained={hf},dtype={dtype},logits_cache=False", "--tasks",
                          ",".join(f"dt_{t}" for t in LM_EVAL_TASKS), "--include_path", include,
                          "--device", a.device, "--batch_size", a.batch_size, "--output_path", out], env)
        ours = json.load(open(ours_json))["tasks"]
        results = json.load(open(sorted(glob.glob(os.path.join(out, "**", "results_*.json"),
                                                  recursive=True))[-1]))["results"]
        n = sum(ours[task]["n"] for task in LM_EVAL_TASKS)
        print(f"{'task':14} {'items':>6} {'acc deepthin/lm-eval':>22} {'acc_norm deepthin/lm-eval':>27}")
        for task in LM_EVAL_TASKS:
            o, t = ours[task], results[f"dt_{task}"]
            print(f"{task:14} {o['n']:6d} {o['acc']:10.4f}/{t['acc,none']:<10.4f} "
                  f"{o['acc_norm']:13.4f}/{t['acc_norm,none']:<12.4f}")
        print(f"{n} items on {a.device}: deepthin eval {t_ours:.1f} s ({n / t_ours:.1f} items/s), "
              f"lm-eval {t_theirs:.1f} s ({n / t_theirs:.1f} items/s): deepthin {t_theirs / t_ours:.1f}x")


if __name__ == "__main__":
    main()
