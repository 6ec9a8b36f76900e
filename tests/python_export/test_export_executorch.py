"""ExecuTorch programs written by `deepthin export --format executorch`, run by ExecuTorch's own
runtime (executorch.runtime).

For every model of fixtures.MODELS (GQA/MQA, tied/untied, three sharing schemes), fp32:
- the program's log-probabilities, decoding token by token through its KV cache, against `deepthin
  score` of the whole sequences (no cache): max |Δ| within 1e-4;
- greedy decoding of 32 tokens with the program's cache equals `deepthin generate --no-cache`.
8da4w (two models): against the same model quantized by torchao and run eagerly in PyTorch, within the
bounds below. A layer-shared model's file against its --expand-shared twin: sizes printed, and the
shared one no larger.
"""
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "scripts", "export"))
import executorch_export  # noqa: E402
import fixtures  # noqa: E402
from executorch.runtime import Runtime  # noqa: E402

FP32_MAX = 1e-4
Q_MAX, Q_MEAN = 0.25, 0.06  # 8da4w program vs eager torchao (measured 0.05–0.13 max, 0.015–0.035 mean)


def decode(method_factory, seq):
    """Per-position log-probabilities of seq's next tokens, one token per call."""
    method = method_factory()
    out = []
    for t, tok in enumerate(seq[:-1]):
        logits = method(torch.tensor([[tok]]), torch.tensor([t]))
        out.append(torch.log_softmax(logits[0, 0].double(), -1)[seq[t + 1]].item())
    return out


def program_runner(path):
    prog = Runtime.get().load_program(path)

    def factory():
        m = prog.load_method("forward")
        return lambda tokens, pos: m.execute([tokens, pos])[0]
    return factory


def eager_runner(model):
    def factory():
        model.reset_cache()

        def step(tokens, pos):
            with torch.no_grad():
                return model(tokens, pos)
        return step
    return factory


def greedy(factory, prompt_ids, n, eos):
    step = factory()
    for t, tok in enumerate(prompt_ids[:-1]):
        step(torch.tensor([[tok]]), torch.tensor([t]))
    pos, tok, out = len(prompt_ids) - 1, prompt_ids[-1], []
    for _ in range(n):
        nxt = int(torch.argmax(step(torch.tensor([[tok]]), torch.tensor([pos]))[0, 0]))
        out.append(nxt)
        if nxt == eos:
            break
        pos, tok = pos + 1, nxt
    return out


def deltas(a, b):
    d = np.concatenate([np.abs(np.array(x) - np.array(y)) for x, y in zip(a, b)])
    return float(d.max()), float(d.mean())


def main():
    cli = fixtures.cli_arg()
    failures = []
    with tempfile.TemporaryDirectory() as work:
        tok = fixtures.tokenizer(cli, work)
        tokens_file = os.path.join(work, "tokens.txt")
        seqs = fixtures.token_lines(tokens_file, 2, 40, seed=9)
        sizes = {}
        for name, over in fixtures.MODELS.items():
            mdir = fixtures.model(cli, work, name, tok)
            want = fixtures.score(cli, mdir, tokens_file)
            path = os.path.join(work, f"{name}.pte")
            rep = fixtures.export(cli, mdir, "executorch", path, "fp32")
            sizes[name] = rep["bytes"]
            run = program_runner(path)
            mx, mean = deltas([decode(run, s) for s in seqs], want)
            print(f"{name:16} fp32  {rep['bytes']:8d} bytes  max |Δ log-prob| {mx:.2e}  mean {mean:.2e}"
                  f"  ({rep['exporter']['kv_slots']} KV slots, {rep['exporter']['blocks']} blocks)")
            if mx > FP32_MAX:
                failures.append(f"{name} fp32: max |Δ log-prob| {mx:.3e} > {FP32_MAX}")
            ref = fixtures.generate(cli, mdir, fixtures.PROMPTS[0], 32, cache=False)
            got = greedy(run, ref["prompt_ids"], 32, eos=2)
            if got != ref["ids"]:
                failures.append(f"{name}: KV-cache greedy {got} != uncached deepthin {ref['ids']}")
            if name in ("gqa_tied", "repeat_all_over"):
                qpath = os.path.join(work, f"{name}.8da4w.pte")
                qrep = fixtures.export(cli, mdir, "executorch", qpath, "8da4w")
                schedule = [int(s) for s in range(rep["exporter"]["kv_slots"])]
                if "layer_sharing" in over:  # the physical block of each effective layer
                    schedule = {"immediate": [0, 0, 1, 1], "repeat_all_over": [0, 1, 0, 1],
                                "reverse": [0, 1, 1, 0]}[over["layer_sharing"]["scheme"]]
                eager = executorch_export.quantize_8da4w(
                    executorch_export.build(mdir, schedule, 128))
                q_prog = [decode(program_runner(qpath), s) for s in seqs]
                q_eager = [decode(eager_runner(eager), s) for s in seqs]
                qmx, qmean = deltas(q_prog, q_eager)
                fmx, fmean = deltas(q_prog, want)
                print(f"{name:16} 8da4w {qrep['bytes']:8d} bytes  vs eager torchao: max {qmx:.2e} "
                      f"mean {qmean:.2e}; vs fp32 deepthin: max {fmx:.2e} mean {fmean:.2e}")
                if qmx > Q_MAX or qmean > Q_MEAN:
                    failures.append(f"{name} 8da4w: vs eager max {qmx:.3e} (bound {Q_MAX}), "
                                    f"mean {qmean:.3e} (bound {Q_MEAN})")
            if name == "immediate":
                epath = os.path.join(work, f"{name}.expanded.pte")
                erep = fixtures.export(cli, mdir, "executorch", epath, "fp32", "--expand-shared")
                run_e = program_runner(epath)
                emx, _ = deltas([decode(run_e, s) for s in seqs], want)
                print(f"{name:16} shared {rep['bytes']} bytes ({rep['exporter']['blocks']} blocks) vs "
                      f"expanded twin {erep['bytes']} bytes ({erep['exporter']['blocks']} blocks); "
                      f"twin max |Δ| {emx:.2e}")
                if rep["bytes"] > erep["bytes"] or emx > FP32_MAX:
                    failures.append(f"{name}: shared {rep['bytes']} B vs expanded {erep['bytes']} B, "
                                    f"twin max |Δ| {emx:.3e}")
    fixtures.finish(failures, "all ExecuTorch checks passed")


if __name__ == "__main__":
    main()
