"""The code reads in parts: no function anywhere in src (every .cpp, .h and .cu, recursively) is
longer than 80 lines (issues: the house, and its second pass). A long function is split into named
steps, so that the top function reads as the list of steps (src/train/trainer.cpp's train()).

Function bodies are found by brace matching over the source with comments and string literals
removed: a '{' at namespace or class scope whose head holds '(' opens a function.
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python_export"))
import fixtures  # noqa: E402

LIMIT = 80
EXTENSIONS = (".cpp", ".h", ".cu")


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
    files = [os.path.join(d, f) for d, _, names in os.walk(os.path.join(root, "src")) for f in names
             if f.endswith(EXTENSIONS)]
    bad = [os.path.relpath(x, root) for f in sorted(files) for x in long_functions(f)]
    print(f"{len(files)} files of src checked (limit {LIMIT} lines)")
    fixtures.finish(bad, "no function over the limit")


if __name__ == "__main__":
    main()
