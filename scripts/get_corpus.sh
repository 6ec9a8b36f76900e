#!/usr/bin/env bash
# Build the offline English text corpus from Debian packages of free text.
#
#   scripts/get_corpus.sh            # download (once), extract (once), convert, write data/corpus/
#
# The only network access is apt's own registry: each package is fetched with `apt-get download`
# (never installed) into data/cache/debs/ and unpacked with `dpkg-deb -x` into
# data/cache/extract/<pkg>/. Both steps are skipped when already done, so reruns only redo the
# conversion (scripts/corpus/build_corpus.py, Python stdlib only), which is deterministic: a rerun
# writes a byte-identical data/corpus/corpus.jsonl. See data/README.md for sources and licenses.
#
# Environment: PYTHON (default python3), CORPUS_DEMO_MB (default 3), CORPUS_JOBS (conversion
# worker processes, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '\033[1;34m[corpus]\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[1;33m[corpus] warning:\033[0m %s\n' "$*" >&2; }

PACKAGES=(python3.11-doc debian-reference-en linux-doc bible-kjv-text dict-gcide fortunes fortunes-min
          vim-doc perl-doc)
CACHE=$ROOT/data/cache
DEBS=$CACHE/debs
EXTRACT=$CACHE/extract
OUT=$ROOT/data/corpus
PYTHON=${PYTHON:-python3}
mkdir -p "$DEBS" "$EXTRACT" "$OUT"

for tool in apt-get dpkg-deb "$PYTHON"; do
  command -v "$tool" >/dev/null || { echo "get_corpus.sh: '$tool' not found" >&2; exit 1; }
done

START=$(date +%s.%N)

# apt-get download drops privileges to _apt, which cannot write into a root-owned cache directory;
# as root we tell it to stay root instead of printing a sandbox warning for every file.
APT_OPTS=(-q)
[ "$(id -u)" -eq 0 ] && APT_OPTS+=(-o APT::Sandbox::User=root)
UPDATED=0

# deb_for PKG: path of the cached .deb of PKG (newest if several), or nothing.
deb_for() {
  local f best=""
  for f in "$DEBS/$1"_*.deb; do [ -e "$f" ] && best=$f; done
  printf '%s' "$best"
}

# fetch PKG: make sure a .deb of PKG is in the cache. `apt-get update` is run (once, as root) only
# when a download fails, e.g. because the package lists are missing or stale.
fetch() {
  local pkg=$1
  [ -n "$(deb_for "$pkg")" ] && return 0
  if (cd "$DEBS" && apt-get "${APT_OPTS[@]}" download "$pkg" >/dev/null 2>"$DEBS/.err.$pkg"); then
    rm -f "$DEBS/.err.$pkg"; return 0
  fi
  if [ "$UPDATED" -eq 0 ] && [ "$(id -u)" -eq 0 ]; then
    UPDATED=1
    log "apt-get download $pkg failed; running apt-get update once and retrying"
    apt-get -qq update >/dev/null 2>&1 || warn "apt-get update failed"
    if (cd "$DEBS" && apt-get "${APT_OPTS[@]}" download "$pkg" >/dev/null 2>"$DEBS/.err.$pkg"); then
      rm -f "$DEBS/.err.$pkg"; return 0
    fi
  fi
  warn "cannot download $pkg: $(tr '\n' ' ' <"$DEBS/.err.$pkg" | cut -c1-300)"
  rm -f "$DEBS/.err.$pkg"
  return 1
}

# payload_deps DEB: for a metapackage (a .deb that ships next to no files, like linux-doc, which only
# depends on linux-doc-6.1), the packages it depends on whose names extend its own; else nothing.
payload_deps() {
  local deb=$1 pkg nfiles
  pkg=$(dpkg-deb -f "$deb" Package)
  nfiles=$(dpkg-deb -c "$deb" | grep -c '^-' || true)
  [ "$nfiles" -gt 5 ] && return 0
  dpkg-deb -f "$deb" Depends | tr ',|' '\n\n' | sed 's/(.*//; s/[[:space:]]//g' |
    grep -E "^${pkg//./\\.}-" | sort -u || true
}

ok=()
for pkg in "${PACKAGES[@]}"; do
  if ! fetch "$pkg"; then continue; fi
  debs=("$(deb_for "$pkg")")
  fail=0
  for dep in $(payload_deps "${debs[0]}"); do
    if fetch "$dep"; then debs+=("$(deb_for "$dep")"); else fail=1; fi
  done
  if [ "$fail" -eq 1 ]; then warn "skipping $pkg: a package it needs could not be downloaded"; continue; fi
  # The stamp records which .debs the extraction came from: a new version re-extracts.
  stamp=$(for d in "${debs[@]}"; do basename "$d"; done)
  dest=$EXTRACT/$pkg
  if [ -f "$dest/.extracted" ] && [ "$(cat "$dest/.extracted")" = "$stamp" ]; then
    ok+=("$pkg"); continue
  fi
  log "extracting $pkg (${#debs[@]} .deb)"
  rm -rf "$dest" && mkdir -p "$dest"
  for d in "${debs[@]}"; do
    if ! dpkg-deb -x "$d" "$dest"; then
      warn "dpkg-deb -x failed on $(basename "$d")"; fail=1; break
    fi
  done
  if [ "$fail" -eq 1 ]; then rm -rf "$dest"; continue; fi
  printf '%s\n' "$stamp" >"$dest/.extracted"
  ok+=("$pkg")
done

if [ "${#ok[@]}" -lt 3 ]; then
  echo "get_corpus.sh: only ${#ok[@]} source package(s) available (${ok[*]:-none}); need at least 3" >&2
  exit 1
fi
[ "${#ok[@]}" -lt "${#PACKAGES[@]}" ] && warn "continuing with ${#ok[@]} of ${#PACKAGES[@]} packages: ${ok[*]}"

"$PYTHON" scripts/corpus/build_corpus.py \
  --extract-dir "$EXTRACT" --out-dir "$OUT" --start-time "$START" \
  --demo-mb "${CORPUS_DEMO_MB:-3}" --jobs "${CORPUS_JOBS:-1}" "${ok[@]}"
