#!/usr/bin/env python3
"""Throughput of `deepthin data prepare` against the tokenizer libraries themselves, on the same text
and the same BPE model: deepthin (whole process: read, parse, tokenize, write) at each thread count,
SentencePiece's Python encoder (encoding alone, text already in memory) and HF `tokenizers` on
deepthin's exported tokenizer.json (encoding alone, RAYON_NUM_THREADS threads). With --parquet-gb it
also writes a parquet file of that size and reports the peak memory (max RSS) of preparing it.

    scripts/bench/prepare_speed.py --deepthin build/deepthin --tokenizer TOK.model \\
        --input data/corpus/corpus.jsonl --mb 30 --threads 1,2 [--parquet-gb 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def run_child(cmd, env=None):
    """Wall seconds, this command's own max RSS (bytes, from wait4) and its stdout."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        dt = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{err.read().decode()[-2000:]}")
        return dt, usage.ru_maxrss * 1024, out.read().decode()


def slice_jsonl(src, dst, mb):
    limit, n = mb * 1e6, 0
    with open(src, "rb") as f, open(dst, "wb") as out:
        for line in f:
            if n >= limit:
                break
            out.write(line)
            n += len(line)
    return n


HF_CHILD = """
import json, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
texts = [json.loads(l)["text"] for l in open(sys.argv[2], encoding="utf-8")]
t = time.perf_counter()
n = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
print(json.dumps({"seconds": time.perf_counter() - t, "tokens": n}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deepthin", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--mb", type=float, default=30)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--parquet-gb", type=float, default=0)
    ap.add_argument("--only-parquet", action="store_true", help="skip the throughput table")
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        text = os.path.join(work, "slice.jsonl")
        nbytes = slice_jsonl(a.input, text, a.mb)
        mb = nbytes / 1e6
        tokens = None
        for t in ([] if a.only_parquet else threads):
            out = os.path.join(work, f"out{t}")
            dt, rss, _ = run_child([a.deepthin, "data", "prepare", "--tokenizer", a.tokenizer, "--input", text,
                                    "--out", out, "--threads", str(t)])
            m = json.load(open(os.path.join(out, "manifest.json")))
            tokens = m["splits"]["train"]["tokens"] + m["splits"]["val"]["tokens"]
            rows.append(("deepthin data prepare (whole process)", t, mb / dt, tokens / dt))
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=a.tokenizer)
        texts = [json.loads(line)["text"] for line in open(text, encoding="utf-8")]
        vocab = sp.get_piece_size()
        if not a.only_parquet:
            # SentencePiece's own encoder, one thread, on the texts in memory.
            t0 = time.perf_counter()
            n = sum(len(ids) for ids in sp.encode(texts, num_threads=1))
            dt = time.perf_counter() - t0
            rows.append(("SentencePiece Python encode (in memory)", 1, mb / dt, n / dt))
            # HF tokenizers on deepthin's tokenizer.json (exported with a throwaway model).
            cfg = os.path.join(work, "m.yaml")
            vocab = sp.get_piece_size()
            open(cfg, "w").write(json.dumps({"model": {"vocab_size": vocab, "dim": 32, "n_layers": 1, "n_heads": 2,
                                                       "n_kv_heads": 1, "ffn": {"hidden_dim": 64}, "max_seq_len": 64}}))
            subprocess.run([a.deepthin, "init", cfg, "--out", os.path.join(work, "m")], check=True, capture_output=True)
            subprocess.run([a.deepthin, "export", os.path.join(work, "m"), "--format", "hf", "--tokenizer", a.tokenizer,
                            "--out", os.path.join(work, "hf")], check=True, capture_output=True)
            for t in threads:
                env = dict(os.environ, RAYON_NUM_THREADS=str(t), TOKENIZERS_PARALLELISM="true")
                _, _, out = run_child([sys.executable, "-c", HF_CHILD, os.path.join(work, "hf", "tokenizer.json"), text],
                                      env=env)
                r = json.loads(out)
                rows.append(("HF tokenizers encode_batch (in memory)", t, mb / r["seconds"], r["tokens"] / r["seconds"]))
            print(f"{mb:.1f} MB of {os.path.basename(a.input)}, {tokens:,} tokens, tokenizer {a.tokenizer} ({vocab} pieces), "
                  f"{os.cpu_count()} CPUs\n")
            print("| what | threads | MB/s | M tokens/s | M tokens/s per thread |\n|---|---|---|---|---|")
            for name, t, mbs, tps in rows:
                print(f"| {name} | {t} | {mbs:.2f} | {tps / 1e6:.2f} | {tps / 1e6 / t:.2f} |")
        if a.parquet_gb > 0:
            import pyarrow as pa
            import pyarrow.parquet as pq
            path = os.path.join(work, "big.parquet")
            target = a.parquet_gb * 1e9
            # Laid out as web-corpus files are (row groups of 1,000 documents, the text column plainly
            # encoded: unique documents defeat dictionary encoding), with uncompressed pages so that the
            # file itself has the size asked for.
            with pq.ParquetWriter(path, pa.schema([("text", pa.string()), ("id", pa.string())]),
                                  compression="none", use_dictionary=["id"]) as w:
                written, k = 0, 0
                while written < target:
                    for i in range(0, len(texts), 1000):
                        chunk = texts[i:i + 1000]
                        w.write_table(pa.table({"text": chunk, "id": [f"{k}-{i + j}" for j in range(len(chunk))]}))
                        written += sum(len(s) for s in chunk)
                    k += 1
            size = os.path.getsize(path)
            dt, rss, _ = run_child([a.deepthin, "data", "prepare", "--tokenizer", a.tokenizer, "--input", path,
                                    "--out", os.path.join(work, "big"), "--threads", str(max(threads))])
            print(f"\nparquet of {size / 1e9:.2f} GB ({written / 1e9:.2f} GB of text; uncompressed, row groups of 1,000 rows): "
                  f"prepared in {dt:.0f} s ({size / 1e6 / dt:.1f} MB/s) on {max(threads)} threads, "
                  f"peak RSS {rss / 1e9:.2f} GB (the prepare runs alone in this process's children)")


if __name__ == "__main__":
    main()
