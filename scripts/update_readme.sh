#!/usr/bin/env bash
# Regenerates the config reference in README.md from the schema (`deepthin config --reference`).
set -euo pipefail
cd "$(dirname "$0")/.."
ref=$(build/deepthin config --reference)
python3 - "$ref" <<'PY'
import sys
ref = sys.argv[1] + "\n"
text = open("README.md").read()
b, e = "<!-- reference:begin -->\n", "<!-- reference:end -->"
i, j = text.index(b) + len(b), text.index(e)
open("README.md", "w").write(text[:i] + ref + text[j:])
PY
echo "README.md reference updated"
