"""The trainer reads in parts: no function in src/train is longer than 80 lines (issue: the house).

Function bodies are found by brace matching over the source with comments and string literals
removed: a '{' at namespace or class scope whose head holds '(' opens a function.
"""
import argparse
import glob
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python_export"))
import fixtures  # noqa: E402

LIMIT = 80
FOLDERS = ["train"]


def strip(src):
    src = re.sub(r"//[^\n]*", "", src)
    src = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), src, flags=re.S)
    src = re.sub(r'R"\((.*?)\)"', lambda m: '""' + "\n" * m.group(0).count("\n"), src, flags=re.S)
    src = re.sub(r'"(\\.|[^"\\\n])*"', '""', src)
    return re.sub(r"'(\\.|[^'\\\n])*'", "''", src)


def long_functions(path):
    s = strip(open(path, encoding="utf-8").read())
    stack, line, last, out = [], 1, 0, []
    for i, c in enumerate(s):
        if c == "\n":
            line += 1
        elif c == "{":
            head = s[last:i]
            if all(e[0] == "scope" for e in stack):
                if re.search(r"\b(namespace|class|struct|enum|union)\b[^()]*$", head) or \
                        re.search(r'extern\s*""\s*$', head.strip() + " "):
                    stack.append(("scope", line, ""))
                elif "(" in head:
                    stack.append(("func", line, head.strip().split("\n")[0][:70]))
                else:
                    stack.append(("block", line, ""))
            else:
                stack.append(("block", line, ""))
            last = i + 1
        elif c == "}":
            kind, start, name = stack.pop()
            if kind == "func" and line - start + 1 > LIMIT:
                out.append(f"{path}:{start}: {line - start + 1} lines: {name}")
            last = i + 1
        elif c == ";":
            last = i + 1
    return out


def main():
    argparse.ArgumentParser().parse_known_args()  # ctest passes --deepthin
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    files = [f for d in FOLDERS for ext in ("cpp", "h") for f in glob.glob(os.path.join(root, "src", d, f"*.{ext}"))]
    bad = [x for f in sorted(files) for x in long_functions(f)]
    print(f"{len(files)} files of src/{', src/'.join(FOLDERS)} checked (limit {LIMIT} lines)")
    fixtures.finish(bad, "no function over the limit")


if __name__ == "__main__":
    main()
