"""The source layering: each folder of src/ includes only folders below it, so there are no include
cycles between them and nothing lower reaches up.

    cli → eval → train → dist → export, sweep → storage → model → kernels → config, data → util

storage holds the formats deepthin itself reads and writes (safetensors, model directories), which
training and export share; export holds only the formats for other runtimes.
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python_export"))
import fixtures  # noqa: E402

LEVELS = [["util"], ["config", "data"], ["kernels"], ["model"], ["storage"], ["export", "sweep"], ["dist"],
          ["train"], ["eval"], ["cli"]]
LEVEL = {d: i for i, group in enumerate(LEVELS) for d in group}


def main():
    argparse.ArgumentParser().parse_known_args()  # ctest passes --deepthin
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")
    bad, edges = [], 0
    for folder in sorted(os.listdir(src)):
        path = os.path.join(src, folder)
        if not os.path.isdir(path):
            continue
        if folder not in LEVEL:
            bad.append(f"src/{folder}: not placed in the layering (tests/python/test_layering.py)")
            continue
        for name in sorted(os.listdir(path)):
            if not name.endswith((".h", ".cpp", ".cu")):
                continue
            for n, line in enumerate(open(os.path.join(path, name), encoding="utf-8"), 1):
                m = re.match(r'\s*#\s*include\s+"([a-z_]+)/', line)
                if not m or m.group(1) == folder:
                    continue
                edges += 1
                to = m.group(1)
                if to not in LEVEL:
                    bad.append(f"src/{folder}/{name}:{n} includes unknown folder {to}")
                elif LEVEL[to] >= LEVEL[folder]:
                    bad.append(f"src/{folder}/{name}:{n}: {folder} includes {to}, which is not below it")
    print(f"{edges} includes across folders checked")
    fixtures.finish(bad, "layering holds")


if __name__ == "__main__":
    main()
