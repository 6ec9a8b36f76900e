"""`deepthin data prepare` on corpora as they ship, against the same documents as plain JSONL: parquet
in FineWeb-Edu's schema (several row groups, extra columns, string and large_string text columns,
two files through a glob), `.jsonl.zst`/`.jsonl.zstd` and `.jsonl.gz` (written by pyarrow's and
Python's own compressors) must give byte-identical shards. A null text is an error naming the file
and row, or skipped and counted with --on-bad-line skip; a missing column and a non-string column
are errors naming the column."""
import glob
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python_export"))
import fixtures  # noqa: E402

WORDS = ("deep thin models share layers and train fast on phones the small élise 日本語 "
         "naïve 👩‍💻 Straße café tokens shards parquet").split()


def documents(rng, n):
    docs = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 80)))
        if i % 17 == 3:
            text = ""  # empty documents are skipped by every reader alike
        if i % 23 == 5:
            text = "  " + text + "\n\nsecond paragraph\twith a tab"
        docs.append(text)
    return docs


def fineweb_table(docs, large=False, start=0):
    n = len(docs)
    return pa.table({
        "text": pa.array(docs, type=pa.large_string() if large else pa.string()),
        "id": [f"<urn:uuid:{start + i:08d}>" for i in range(n)],
        "dump": ["CC-MAIN-2024-10"] * n,
        "url": [f"https://example.org/{start + i}" for i in range(n)],
        "file_path": ["s3://commoncrawl/x.warc.gz"] * n,
        "language": ["en"] * n,
        "language_score": [0.9] * n,
        "token_count": [len(d.split()) if d is not None else 0 for d in docs],
        "score": [3.1] * n,
        "int_score": [3] * n,
    })


def shards(d):
    return {os.path.basename(p): open(p, "rb").read()
            for p in sorted(glob.glob(os.path.join(d, "*_*.bin")))}


def prepare(cli, tok, out, *inputs, extra=()):
    cmd = [cli, "data", "prepare", "--tokenizer", tok, "--out", out, "--val-fraction", "0.1",
           "--shard-tokens", "4096"]
    for i in inputs:
        cmd += ["--input", i]
    return subprocess.run(cmd + list(extra), capture_output=True, text=True)


def main():
    cli = fixtures.cli_arg()
    failures = []
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as work:
        tok = fixtures.tokenizer(cli, work)
        docs = documents(rng, 400)
        jsonl = os.path.join(work, "docs.jsonl")
        with open(jsonl, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"text": d, "id": 1}, ensure_ascii=False) + "\n")
        p = prepare(cli, tok, os.path.join(work, "ref"), jsonl)
        if p.returncode != 0:
            sys.exit(f"reference prepare failed: {p.stderr}")
        want = shards(os.path.join(work, "ref"))
        if len(want) < 3:
            failures.append(f"expected several shards, got {sorted(want)}")
        payload = open(jsonl, "rb").read()

        inputs = {}
        pq.write_table(fineweb_table(docs), os.path.join(work, "fw.parquet"), row_group_size=37)
        inputs["parquet (string, 11 row groups)"] = [os.path.join(work, "fw.parquet")]
        pq.write_table(fineweb_table(docs, large=True), os.path.join(work, "fwl.parquet"),
                       row_group_size=100, compression="zstd")
        inputs["parquet (large_string, zstd pages)"] = [os.path.join(work, "fwl.parquet")]
        os.makedirs(os.path.join(work, "crawl"))
        pq.write_table(fineweb_table(docs[:150]), os.path.join(work, "crawl", "000_00000.parquet"), row_group_size=50)
        pq.write_table(fineweb_table(docs[150:], start=150), os.path.join(work, "crawl", "000_00001.parquet"),
                       row_group_size=50)
        inputs["parquet glob over a folder (2 files)"] = [os.path.join(work, "crawl", "*.parquet")]
        for ext in (".jsonl.zst", ".jsonl.zstd"):
            path = os.path.join(work, "docs" + ext)
            with pa.CompressedOutputStream(path, "zstd") as out:
                out.write(payload)
            inputs[ext] = [path]
        path = os.path.join(work, "docs.jsonl.gz")
        with gzip.open(path, "wb") as out:
            out.write(payload)
        inputs[".jsonl.gz"] = [path]
        # Two gzip members back to back (what `cat a.gz b.gz` makes) are one stream of lines.
        half = payload.index(b"\n", len(payload) // 2) + 1
        path = os.path.join(work, "members.jsonl.gz")
        with open(path, "wb") as out:
            out.write(gzip.compress(payload[:half]) + gzip.compress(payload[half:]))
        inputs[".jsonl.gz of two members"] = [path]

        for name, paths in inputs.items():
            out = os.path.join(work, "out_" + str(len(os.listdir(work))))
            p = prepare(cli, tok, out, *paths)
            got = shards(out) if p.returncode == 0 else {}
            same = got == want
            print(f"{name:40} {'byte-identical' if same else 'DIFFERENT'} ({len(got)} shards)")
            if not same:
                failures.append(f"{name}: status {p.returncode}, shards differ from JSONL's: {p.stderr[-500:]}")

        # A null text: an error naming the file and row; skipped with --on-bad-line skip.
        with_null = list(docs)
        with_null[200] = None
        pq.write_table(fineweb_table(with_null), os.path.join(work, "null.parquet"), row_group_size=64)
        p = prepare(cli, tok, os.path.join(work, "null_out"), os.path.join(work, "null.parquet"))
        if p.returncode != 2 or "null.parquet: row 200" not in p.stderr or os.path.exists(os.path.join(work, "null_out")):
            failures.append(f"a null text: status {p.returncode}: {p.stderr.strip()}")
        p = prepare(cli, tok, os.path.join(work, "null_skip"), os.path.join(work, "null.parquet"),
                    extra=["--on-bad-line", "skip"])
        skipped_ref = os.path.join(work, "skipped.jsonl")
        with open(skipped_ref, "w", encoding="utf-8") as f:
            for i, d in enumerate(docs):
                if i != 200:
                    f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
        prepare(cli, tok, os.path.join(work, "skipped_ref"), skipped_ref)
        if p.returncode != 0 or shards(os.path.join(work, "null_skip")) != shards(os.path.join(work, "skipped_ref")):
            failures.append(f"--on-bad-line skip over a null text: status {p.returncode}: {p.stderr.strip()}")
        # A missing column and a column that is not text.
        p = prepare(cli, tok, os.path.join(work, "o1"), os.path.join(work, "fw.parquet"), extra=["--text-field", "body"])
        if p.returncode != 2 or "no column 'body'" not in p.stderr or "language_score" not in p.stderr:
            failures.append(f"a missing column: status {p.returncode}: {p.stderr.strip()}")
        p = prepare(cli, tok, os.path.join(work, "o2"), os.path.join(work, "fw.parquet"), extra=["--text-field", "score"])
        if p.returncode != 2 or "column 'score' holds double" not in p.stderr:
            failures.append(f"a non-string column: status {p.returncode}: {p.stderr.strip()}")
        # A corrupt zstd file names the file.
        bad = os.path.join(work, "bad.jsonl.zst")
        open(bad, "wb").write(b"\x28\xb5\x2f\xfd" + os.urandom(200))
        p = prepare(cli, tok, os.path.join(work, "o3"), bad)
        if p.returncode != 2 or "bad.jsonl.zst" not in p.stderr:
            failures.append(f"a corrupt zstd file: status {p.returncode}: {p.stderr.strip()}")
    fixtures.finish(failures, "every shipped format gives the JSONL's shards")


if __name__ == "__main__":
    main()
