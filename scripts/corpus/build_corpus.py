#!/usr/bin/env python3
"""Convert extracted Debian text packages into a JSONL corpus (Python 3.11 standard library only).

Called by scripts/get_corpus.sh, which has already unpacked each package into
<extract-dir>/<package>/ with `dpkg-deb -x`. For each package given on the command line this turns
its documentation into plain-text documents, normalises them, drops short ones and exact duplicates,
and writes

  <out-dir>/corpus.jsonl   {"text": ..., "source": "<package>"} per line, sorted by source then path
  <out-dir>/demo.jsonl     a deterministic ~3 MB slice with every source in proportion
  <out-dir>/stats.json     documents and MB per source, duplicates removed, time taken

The output depends only on the extracted files: a rerun writes byte-identical corpus.jsonl and
demo.jsonl. Files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import codecs
import gzip
import hashlib
import html
import json
import os
import re
import struct
import sys
import time
import unicodedata
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Iterator

MIN_CHARS = 200
Doc = tuple[str, str]  # (path key used for ordering, raw text)


class SourceUnusable(Exception):
    """The package was extracted but holds nothing we can turn into text."""


# --------------------------------------------------------------------------------------------
# Reading and normalising text


def _bad_bytes_as_cp1252(err: UnicodeDecodeError) -> tuple[str, int]:
    """Decode error handler: read each invalid byte as cp1252 (Latin-1 where cp1252 has a hole)."""
    bad = err.object[err.start:err.end]
    return "".join(bytes([b]).decode("cp1252", errors="replace").replace("\ufffd", chr(b))
                   for b in bad), err.end


codecs.register_error("deepthin_cp1252", _bad_bytes_as_cp1252)


def decode(data: bytes) -> str:
    """UTF-8 where valid; the odd stray Latin-1/cp1252 byte becomes its character."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    return data.decode("utf-8", errors="deepthin_cp1252")


def read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith((".gz", ".dz")):  # .dz (dictzip) is gzip with an extra header field
        data = gzip.decompress(data)
    return data


def read_text(path: Path) -> str:
    return decode(read_bytes(path))


# Line separators Python or other readers might split on become newlines; other control
# characters (bar tab and newline) go away; no-break and other exotic spaces become spaces.
_CTRL = {c: None for c in list(range(0, 32)) + list(range(127, 160)) if c not in (9, 10)}
_CTRL.update({0x0C: "\n", 0x85: "\n", 0x2028: "\n", 0x2029: "\n\n", 0xFEFF: None, 0xA0: " ",
              0x200B: None})
_OVERSTRIKE = re.compile(r"[^\n\x08]\x08")
_TRAILING_WS = re.compile(r"[ \t]+\n")
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    while "\x08" in text:  # overstrike bold/underline: "_\bx" -> "x", "__\b\bab" -> "ab"
        text, n = _OVERSTRIKE.subn("", text)
        if not n:
            break
    text = unicodedata.normalize("NFC", text).translate(_CTRL)
    text = _TRAILING_WS.sub("\n", text + "\n")
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip("\n").rstrip()


# --------------------------------------------------------------------------------------------
# HTML to text


_WS = re.compile(r"\s+")


class _HTMLText(HTMLParser):
    """Text of an HTML page: scripts, styles, navigation and skip-classes dropped; <pre> kept
    verbatim; elsewhere whitespace collapsed and block elements turned into line breaks."""

    PARA = {"p", "div", "section", "article", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table",
            "ul", "ol", "dl", "blockquote", "figure", "caption", "title", "center"}
    LINE = {"li", "tr", "dt", "dd", "br", "hr", "thead", "tbody", "tfoot"}
    CELL = {"td", "th"}
    SKIP_TAGS = {"script", "style", "head", "nav", "noscript", "template", "svg", "button",
                 "form", "select", "textarea"}
    VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source",
            "track", "wbr", "param"}

    def __init__(self, skip_classes: frozenset[str], main_only: bool):
        super().__init__(convert_charrefs=True)
        self.skip_classes = skip_classes
        self.main_only = main_only
        self.out: list[str] = []
        self.skip: list = []      # [tag, depth] of the element being skipped
        self.capture: list = []   # [tag, depth] of the main element when main_only
        self.pre = 0
        self.last = "\n"  # last character written

    def _emit(self, s: str) -> None:
        if not s:
            return
        self.out.append(s)
        self.last = s[-1]

    def _active(self) -> bool:
        return not self.skip and (not self.main_only or bool(self.capture))

    def handle_starttag(self, tag, attrs):
        void = tag in self.VOID
        if self.skip:
            if tag == self.skip[0] and not void:
                self.skip[1] += 1
            return
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        if self.main_only and not self.capture:
            if a.get("role") == "main":
                self.capture = [tag, 1]
            return
        if self.capture and tag == self.capture[0] and not void:
            self.capture[1] += 1
        if (tag in self.SKIP_TAGS or classes & self.skip_classes
                or a.get("role") in ("navigation", "search")):
            if not void:
                self.skip = [tag, 1]
            return
        self._block(tag)
        if tag == "pre":
            self.pre += 1

    def handle_endtag(self, tag):
        if self.skip:
            if tag == self.skip[0]:
                self.skip[1] -= 1
                if self.skip[1] == 0:
                    self.skip = []
            return
        if self.main_only:
            if not self.capture:
                return
            if tag == self.capture[0]:
                self.capture[1] -= 1
                if self.capture[1] == 0:
                    self.capture = []
                    self._emit("\n\n")
                    return
        if tag == "pre" and self.pre:
            self.pre -= 1
        self._block(tag)

    def _block(self, tag):
        if not self._active():
            return
        if tag in self.PARA:
            self._emit("\n\n")
        elif tag in self.LINE:
            self._emit("\n")
        elif tag in self.CELL:  # cells of a row are separated by tabs
            while self.out and self.last == " ":
                self.out[-1] = self.out[-1].rstrip(" ")
                if not self.out[-1]:
                    self.out.pop()
                self.last = self.out[-1][-1] if self.out else "\n"
            if self.last not in "\t\n":
                self._emit("\t")

    def handle_data(self, data):
        if not self._active():
            return
        if self.pre:
            self._emit(data)
            return
        data = _WS.sub(" ", data)
        if self.last in " \t\n":
            data = data.lstrip(" ")
        self._emit(data)


def html_to_text(src: str, skip_classes: Iterable[str] = (), main_only: bool = False) -> str:
    # Only keep the main element when the page has one (Sphinx marks it role="main").
    main_only = main_only and 'role="main"' in src
    p = _HTMLText(frozenset(skip_classes), main_only)
    p.feed(src)
    p.close()
    return "".join(p.out)


# --------------------------------------------------------------------------------------------
# Sources. Each takes the package's extraction root and yields (path key, raw text).

PY_SKIP_NAMES = re.compile(r"^(genindex.*|search|py-modindex|index|contents|download)\.html$")
SPHINX_SKIP = ("related", "sphinxsidebar", "footer", "headerlink", "mobile-nav", "inline-search",
               "language_switcher_placeholder", "version_switcher_placeholder", "menu-wrapper",
               "clearer")


def src_python_doc(root: Path) -> Iterator[Doc]:
    base = next((p for p in sorted(root.glob("usr/share/doc/python3*/html"))
                 if p.is_dir() and not p.is_symlink()), None)
    if base is None:
        raise SourceUnusable("no usr/share/doc/python3*/html directory")
    for f in sorted(base.rglob("*.html")):
        rel = f.relative_to(base)
        if rel.parts[0].startswith("_") or PY_SKIP_NAMES.match(f.name) or f.is_symlink():
            continue
        yield str(f.relative_to(root)), html_to_text(read_text(f), SPHINX_SKIP, main_only=True)


def src_debian_reference(root: Path) -> Iterator[Doc]:
    files = sorted(root.glob("usr/share/debian-reference/*.html"))
    if not files:
        raise SourceUnusable("no usr/share/debian-reference/*.html")
    for f in files:
        if f.name.startswith("index."):  # title page and table of contents
            continue
        yield str(f.relative_to(root)), html_to_text(
            read_text(f), ("navheader", "navfooter", "toc", "list-of-tables"))


_RST_NOISE = re.compile(r"^\.\. (SPDX-License-Identifier:.*|_[^:\n]+:|include:: .*)$|^:orphan:$",
                        re.M)


def src_linux_doc(root: Path) -> Iterator[Doc]:
    bases = sorted(root.glob("usr/share/doc/linux-doc-*/Documentation"))
    if not bases:
        raise SourceUnusable("no usr/share/doc/linux-doc-*/Documentation (metapackage only?)")
    for base in bases:
        for f in sorted(base.rglob("*")):
            rel = f.relative_to(base)
            if rel.parts[0] == "translations" or not f.is_file() or f.is_symlink():
                continue
            if not f.name.endswith((".rst", ".txt", ".rst.gz", ".txt.gz")):
                continue
            yield str(f.relative_to(root)), _RST_NOISE.sub("", read_text(f))


# --- bible-kjv-text -------------------------------------------------------------------------
# The package ships no plain text: usr/lib/bible.data is the Bible Retrieval System's "EC02"
# file. Its layout (tsl.h / tsl.c of the bible-kjv sources): 2-byte magic "EC", 2-byte version
# "02", an 80-byte description, big-endian window size and window count, (count + 1) big-endian
# file offsets of the compressed windows, a 3-byte Unix compress header (1F 9D, max bits), then
# each window separately compressed with Unix compress's LZW. The text is one verse a line,
# "Ge1:1 In the beginning ...".

def unlzw(data: bytes, maxbits: int = 16, block_mode: bool = True) -> bytes:
    """Decompress a headerless Unix `compress` (.Z) LZW stream, bit-for-bit as compress does:
    codes are read in groups of n_bits bytes, and the rest of a group is discarded when the code
    width grows or the table is cleared."""
    maxmax = 1 << maxbits
    n = len(data)
    st = {"free_ent": 257 if block_mode else 256, "clear": False}

    def codes() -> Iterator[int]:  # getcode() of compress; reads st["free_ent"] and st["clear"]
        buf = offset = size = 0
        pos, n_bits, maxcode = 0, 9, 511
        while True:
            if st["clear"] or offset >= size or st["free_ent"] > maxcode:
                if st["free_ent"] > maxcode:
                    n_bits += 1
                    maxcode = maxmax if n_bits == maxbits else (1 << n_bits) - 1
                if st["clear"]:
                    n_bits, maxcode = 9, 511
                    st["clear"] = False
                sz = min(n_bits, n - pos)
                if sz <= 0:
                    return
                buf = int.from_bytes(data[pos:pos + sz], "little")
                pos += sz
                offset, size = 0, sz * 8 - (n_bits - 1)
            yield (buf >> offset) & ((1 << n_bits) - 1)
            offset += n_bits

    table = [bytes([i]) for i in range(256)] + [b""]
    g = codes()
    old = next(g, None)
    if old is None:
        return b""
    out = [table[old]]
    for code in g:
        if code == 256 and block_mode:
            st["clear"] = True
            st["free_ent"] = 256
            del table[257:]
            code = next(g, None)
            if code is None:
                break
        free_ent = st["free_ent"]
        if code >= free_ent:  # the KwKwK case
            prev = table[old]
            s = prev + prev[:1]
        else:
            s = table[code]
        out.append(s)
        if free_ent < maxmax:
            e = table[old] + s[:1]
            if free_ent < len(table):
                table[free_ent] = e
            else:
                table.append(e)
            st["free_ent"] = free_ent + 1
        old = code
    return b"".join(out)

KJV_BOOKS = {
    "Ge": "Genesis", "Exo": "Exodus", "Lev": "Leviticus", "Num": "Numbers", "Deu": "Deuteronomy",
    "Josh": "Joshua", "Jdgs": "Judges", "Ruth": "Ruth", "1Sm": "1 Samuel", "2Sm": "2 Samuel",
    "1Ki": "1 Kings", "2Ki": "2 Kings", "1Chr": "1 Chronicles", "2Chr": "2 Chronicles",
    "Ezra": "Ezra", "Neh": "Nehemiah", "Est": "Esther", "Job": "Job", "Psa": "Psalms",
    "Prv": "Proverbs", "Eccl": "Ecclesiastes", "SSol": "Song of Solomon", "Isa": "Isaiah",
    "Jer": "Jeremiah", "Lam": "Lamentations", "Eze": "Ezekiel", "Dan": "Daniel", "Hos": "Hosea",
    "Joel": "Joel", "Amos": "Amos", "Obad": "Obadiah", "Jonah": "Jonah", "Mic": "Micah",
    "Nahum": "Nahum", "Hab": "Habakkuk", "Zep": "Zephaniah", "Hag": "Haggai", "Zec": "Zechariah",
    "Mal": "Malachi", "Mat": "Matthew", "Mark": "Mark", "Luke": "Luke", "John": "John",
    "Acts": "Acts", "Rom": "Romans", "1Cor": "1 Corinthians", "2Cor": "2 Corinthians",
    "Gal": "Galatians", "Eph": "Ephesians", "Phi": "Philippians", "Col": "Colossians",
    "1Th": "1 Thessalonians", "2Th": "2 Thessalonians", "1Tim": "1 Timothy", "2Tim": "2 Timothy",
    "Titus": "Titus", "Phmn": "Philemon", "Heb": "Hebrews", "Jas": "James", "1Pet": "1 Peter",
    "2Pet": "2 Peter", "1Jn": "1 John", "2Jn": "2 John", "3Jn": "3 John", "Jude": "Jude",
    "Rev": "Revelation",
}
_VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")


def decode_brs(path: Path) -> str:
    d = path.read_bytes()
    if d[:4] != b"EC02":
        raise SourceUnusable(f"{path.name}: not a Bible Retrieval System EC02 file")
    wsize, wnum = struct.unpack(">II", d[84:92])
    offs = struct.unpack(f">{wnum + 1}I", d[92:92 + 4 * (wnum + 1)])
    hdr = d[offs[0] - 3:offs[0]]
    if hdr[:2] != b"\x1f\x9d":
        raise SourceUnusable(f"{path.name}: no compress header before the first window")
    maxbits, block = hdr[2] & 0x1F, bool(hdr[2] & 0x80)
    parts = []
    for w in range(wnum):
        u = unlzw(d[offs[w]:offs[w + 1]], maxbits, block)
        if w < wnum - 1 and len(u) != wsize:
            raise SourceUnusable(f"{path.name}: window {w} decompressed to {len(u)} != {wsize}")
        parts.append(u)
    return decode(b"".join(parts))


def src_bible(root: Path) -> Iterator[Doc]:
    plain = [f for f in sorted(root.rglob("*")) if f.is_file() and "usr/share/doc" not in str(f)
             and f.name.endswith((".txt", ".txt.gz"))]
    if plain:  # a plain-text KJV, should a future package ship one
        for f in plain:
            yield str(f.relative_to(root)), read_text(f)
        return
    data = next(iter(sorted(root.glob("usr/lib/bible.data")) + sorted(root.rglob("bible.data"))),
                None)
    if data is None:
        raise SourceUnusable("neither plain text nor usr/lib/bible.data in the package")
    books: dict[str, list] = {}
    order: list[str] = []
    n = 0
    for line in decode_brs(data).split("\n"):
        m = _VERSE.match(line)
        if not m:
            continue
        book, chap, _verse, text = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        if book not in books:
            books[book] = []
            order.append(book)
        books[book].append((chap, text))
        n += 1
    if n < 30000:
        raise SourceUnusable(f"{data.name}: decoded only {n} verses")
    rel = str(data.relative_to(root))
    for i, book in enumerate(order):
        lines = [KJV_BOOKS.get(book, book)]
        last = None
        for chap, text in books[book]:
            if chap != last:
                lines.append(f"\n{'Psalm' if book == 'Psa' else 'Chapter'} {chap}\n")
                last = chap
            lines.append(text)
        yield f"{rel}#{i:02d}", "\n".join(lines)


# --- dict-gcide -----------------------------------------------------------------------------

_B64 = {c: i for i, c in enumerate(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64num(s: str) -> int:
    v = 0
    for c in s:
        v = v * 64 + _B64[c]
    return v


# GCIDE's ASCII codes for letters and symbols, e.g. "[=a]" a-macron, "[a^]" a-breve.
_GCIDE_NAMED = {
    "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "thorn": "þ", "deg": "°", "root": "√",
    "sect": "§", "yogh": "ȝ", "ng": "ŋ", "imac": "ī", "aum": "ä", "udd": "ü", "asl": "ˌ",
    "add": "ă", "pounds": "£", "cre": "˘", "prime": "′", "bprime": "″", "dsdot": "ḍ",
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "Delta": "Δ", "epsilon": "ε",
    "theta": "θ", "lambda": "λ", "mu": "μ", "pi": "π", "rho": "ρ", "sigma": "σ", "phi": "φ",
    "chi": "χ", "psi": "ψ", "omega": "ω", "Omega": "Ω", "frac12": "½", "frac14": "¼",
    "frac34": "¾", "times": "×", "divide": "÷", "middot": "·", "hand": "☞", "crescent": "☾",
    "th": "θ", "=ae": "ǣ", "=oo": "ōō", "oo^": "ŏŏ", "-oo": "o͞o",
}
_COMBINING = {"=": "\u0304", "'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308",
              "~": "\u0303", ".": "\u0307", ",": "\u0327", "-": "\u0304", "*": "\u030a"}
_GCIDE_CODE = re.compile(r"\[([^\[\]\n]{1,7})\]")
_GCIDE_PRON = re.compile(r"[ \t]*\\[^\\\n]*\\")
_GCIDE_RESPELL = re.compile(r"\s*\([^()\s]*\*[^()]*\)(?=\s*,)")
_GCIDE_SRC = re.compile(r"\s*\[[^\[\]\n]*(?:Webster|WordNet|PJC|Century Dict|RHUD|RDH|MW10|"
                        r"Chambers|Funk|Johnson)[^\[\]\n]*\]")


def _gcide_char(m: re.Match) -> str:
    code = m.group(1)
    if code in _GCIDE_NAMED:
        return _GCIDE_NAMED[code]
    if len(code) in (2, 3) and code[0] in _COMBINING and code[1:].isalpha():
        return code[1:] + _COMBINING[code[0]]          # [=a] macron, ['e] acute, ...
    if len(code) in (2, 3) and code[-1] == "^" and code[:-1].isalpha():
        return code[:-1] + "\u0306"                     # [a^] breve
    return m.group(0)


def clean_gcide_entry(e: str) -> str:
    e = _GCIDE_CODE.sub(_gcide_char, e)
    e = _GCIDE_SRC.sub("", e)
    e = _GCIDE_PRON.sub("", e)          # \Ca*lor"ic\ pronunciation
    e = _GCIDE_RESPELL.sub("", e)       # (k[.a]*l...) respelling
    e = e.replace("{", "").replace("}", "")
    paras = [" ".join(p.split()) for p in re.split(r"\n[ \t]*\n", e)]
    return "\n".join(p for p in paras if p)


def src_gcide(root: Path) -> Iterator[Doc]:
    dz = sorted(root.glob("usr/share/dictd/*.dict.dz"))
    if not dz:
        raise SourceUnusable("no usr/share/dictd/*.dict.dz")
    target = 32_000  # characters a document
    for f in dz:
        index = f.with_name(f.name[:-len(".dict.dz")] + ".index")
        data = read_bytes(f)
        spans = set()
        for line in index.read_text("utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or parts[0].startswith(("00-database", "00database")):
                continue
            spans.add((_b64num(parts[1]), _b64num(parts[2])))
        rel = str(f.relative_to(root))
        doc: list[str] = []
        chars = part = 0
        for off, ln in sorted(spans):
            entry = clean_gcide_entry(decode(data[off:off + ln]))
            if not entry:
                continue
            doc.append(entry)
            chars += len(entry) + 2
            if chars >= target:
                yield f"{rel}#{part:05d}", "\n\n".join(doc)
                doc, chars, part = [], 0, part + 1
        if doc:
            yield f"{rel}#{part:05d}", "\n\n".join(doc)


# --- fortunes -------------------------------------------------------------------------------

FORTUNE_SKIP = {"ascii-art"}  # pictures, not text


def src_fortunes(root: Path) -> Iterator[Doc]:
    base = root / "usr/share/games/fortunes"
    if not base.is_dir():
        raise SourceUnusable("no usr/share/games/fortunes")
    per_doc = 50
    for f in sorted(base.rglob("*")):
        rel = f.relative_to(base)
        # .dat are strfile indexes, .u8 are symlinks to the same text; offensive fortunes would
        # live under off/ (the separate fortunes-off package), which we never take.
        if (not f.is_file() or f.is_symlink() or f.suffix in (".dat", ".u8")
                or "off" in rel.parts[:-1] or f.name in FORTUNE_SKIP):
            continue
        text = read_text(f).replace("\r\n", "\n")
        fortunes = [x.strip("\n") for x in re.split(r"^%[ \t]*$", text, flags=re.M)]
        fortunes = [x for x in fortunes if x.strip()]
        for i in range(0, len(fortunes), per_doc):
            yield f"{f.relative_to(root)}#{i // per_doc:04d}", "\n\n".join(fortunes[i:i + per_doc])


# --- vim-doc --------------------------------------------------------------------------------

VIM_SKIP = {"index.html", "tags.html", "vimindex.html", "usr_toc.html"}  # tables of contents/tags


def src_vim_doc(root: Path) -> Iterator[Doc]:
    # vim-doc ships the help files as HTML (vim2html: each help file in one <pre>) plus the FAQ;
    # the .txt help files themselves are in vim-runtime.
    files = sorted(root.glob("usr/share/doc/vim*/**/*.txt")) + \
        sorted(root.glob("usr/share/doc/vim*/**/*.txt.gz"))
    files = [f for f in files if "vim-policy" not in f.name]
    html_files = sorted(root.glob("usr/share/doc/vim/html/*.html"))
    if not files and not html_files:
        raise SourceUnusable("no help files")
    for f in files:
        yield str(f.relative_to(root)), read_text(f)
    for f in html_files:
        if f.name in VIM_SKIP:
            continue
        text = html_to_text(read_text(f))
        # Drop vim2html's page header ("Vim documentation: x" and the link to the main help file)
        # and footer links.
        text = re.sub(r"\A\s*Vim documentation: \S+\s*(main help file\s*)?", "", text)
        text = re.sub(r"\s*top - main help file\s*\Z", "", text)
        text = re.sub(r"[ \t]*\bvim:[\w=:,.-]*:[ \t]*$", "", text, flags=re.M)  # modelines
        yield str(f.relative_to(root)), text
    faq = root / "usr/share/doc/vim/FAQ.gz"
    if faq.is_file():
        yield str(faq.relative_to(root)), re.sub(r"\A\s*vim:[^\n]*\n", "", read_text(faq))


# --- perl-doc -------------------------------------------------------------------------------

_POD_CODE = re.compile(r"([A-Z])(<+)")
_POD_ENT = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&",
            "apos": "'"}


def _pod_entity(name: str) -> str:
    if name in _POD_ENT:
        return _POD_ENT[name]
    try:
        if name.lower().startswith("0x"):
            return chr(int(name, 16))
        if name.startswith("0") and name.isdigit() and len(name) > 1:
            return chr(int(name, 8))
        if name.isdigit():
            return chr(int(name))
    except (ValueError, OverflowError):
        return ""
    u = html.unescape(f"&{name};")
    return u if u != f"&{name};" else name


def _pod_link(raw: str) -> str:
    if "|" in raw:
        return pod_inline(raw.split("|", 1)[0])
    raw = pod_inline(raw)
    if "://" in raw or raw.startswith("mailto:"):
        return raw
    if "/" in raw:
        name, sec = raw.split("/", 1)
        sec = sec.strip('"')
        return f'"{sec}" in {name}' if name else f'"{sec}"'
    return raw.strip('"')


def pod_inline(s: str) -> str:
    """Expand POD formatting codes: B<> I<> C<> F<> S<> E<> L<> X<> Z<>, including C<< ... >>."""
    out: list[str] = []
    i = 0
    while True:
        m = _POD_CODE.search(s, i)
        if not m:
            out.append(s[i:])
            break
        out.append(s[i:m.start()])
        letter, nb, j = m.group(1), len(m.group(2)), m.end()
        if nb > 1:
            if j >= len(s) or not s[j].isspace():  # "C<<x" is C< followed by "<x"
                nb, j = 1, m.start() + 2
        if nb > 1:
            close = re.compile(r"\s" + ">" * nb).search(s, j)
            if not close:
                out.append(m.group(0))
                i = m.end()
                continue
            inner, i = s[j:close.start()].strip(), close.end()
        else:
            depth, k = 1, j
            while k < len(s):
                c = s[k]
                if c == ">":
                    depth -= 1
                    if depth == 0:
                        break
                elif c == "<" and k > 0 and "A" <= s[k - 1] <= "Z":
                    depth += 1
                k += 1
            if depth:
                out.append(m.group(0))
                i = m.end()
                continue
            inner, i = s[j:k], k + 1
        if letter == "L":
            out.append(_pod_link(inner))
        elif letter == "E":
            out.append(_pod_entity(inner.strip()))
        elif letter in "XZ":
            pass
        else:  # B I C F S and unknown codes: their text
            out.append(pod_inline(inner))
    return "".join(out)


def pod_to_text(src: str) -> str:
    src = src.replace("\r\n", "\n")
    paras = re.split(r"\n[ \t]*\n", src)
    out: list[str] = []
    in_pod = False
    begin: list[str] = []
    bullet = ""
    for p in paras:
        if not p.strip():
            continue
        if p.startswith("="):
            m = re.match(r"=(\w+)\s*(.*)", p, re.S)
            if not m:
                continue
            cmd, rest = m.group(1), m.group(2)
            in_pod = cmd != "cut"
            if cmd == "begin":
                begin.append(rest.split()[0] if rest.split() else "")
            elif cmd == "end":
                if begin:
                    begin.pop()
            elif begin and any(b not in ("text", ":text") for b in begin):
                continue
            elif cmd.startswith("head"):
                out.append(" ".join(pod_inline(rest).split()))
            elif cmd == "item":
                t = rest.strip()
                if t in ("", "*", "o", "-"):
                    bullet = "- "
                elif re.fullmatch(r"\d+\.?", t):
                    bullet = t.rstrip(".") + ". "
                else:
                    out.append(" ".join(pod_inline(t).split()))
            # =over =back =pod =encoding =for (and its paragraph) =cut: no text
            continue
        if not in_pod or (begin and any(b not in ("text", ":text") for b in begin)):
            continue
        if p[0] in " \t":  # verbatim
            out.append(p.rstrip())
        else:
            out.append(bullet + " ".join(pod_inline(p).split()))
            bullet = ""
    return "\n\n".join(out)


def src_perl_doc(root: Path) -> Iterator[Doc]:
    files = sorted(root.glob("usr/share/perl/*/pod/*.pod"))
    if not files:
        raise SourceUnusable("no usr/share/perl/*/pod/*.pod")
    for f in files:
        yield str(f.relative_to(root)), pod_to_text(read_text(f))


SOURCES: dict[str, Callable[[Path], Iterator[Doc]]] = {
    "python3.11-doc": src_python_doc,
    "debian-reference-en": src_debian_reference,
    "linux-doc": src_linux_doc,
    "bible-kjv-text": src_bible,
    "dict-gcide": src_gcide,
    "fortunes": src_fortunes,
    "fortunes-min": src_fortunes,
    "vim-doc": src_vim_doc,
    "perl-doc": src_perl_doc,
}


# --------------------------------------------------------------------------------------------
# Driver

def convert_source(args: tuple[str, str]) -> tuple[str, list[Doc], int, str | None, float]:
    """Documents of one package: (name, [(path, normalised text)], short dropped, error, seconds)."""
    name, root = args
    t0 = time.time()
    try:
        raw = list(SOURCES[name](Path(root)))
    except SourceUnusable as e:
        return name, [], 0, str(e), time.time() - t0
    docs, short = [], 0
    for path, text in raw:
        text = normalise(text)
        if len(text) < MIN_CHARS:
            short += 1
            continue
        docs.append((path, text))
    docs.sort()
    return name, docs, short, None, time.time() - t0


def write_jsonl(path: Path, rows: Iterable[tuple[str, str]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for source, text in rows:
            fh.write(json.dumps({"text": text, "source": source}, ensure_ascii=False))
            fh.write("\n")
    os.replace(tmp, path)


def pick_demo(docs: list[tuple[str, str, int]], target: int) -> list[int]:
    """Indices of a demo slice of about `target` bytes with every source in proportion to its
    bytes: of each source, every k-th document (starting halfway into the first stride), with k
    chosen per source to land closest to its share, and at least one document."""
    by_source: dict[str, list[int]] = {}
    for i, (src, _, _) in enumerate(docs):
        by_source.setdefault(src, []).append(i)
    total = sum(d[2] for d in docs) or 1
    picked: list[int] = []
    for idx in by_source.values():
        share = target * sum(docs[i][2] for i in idx) / total
        best, best_err = idx[:1], None
        for k in range(1, len(idx) + 1):
            sel = idx[k // 2::k]
            err = abs(sum(docs[i][2] for i in sel) - share)
            if best_err is None or err < best_err:
                best, best_err = sel, err
        picked.extend(best)
    return sorted(picked)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("packages", nargs="+", help="package names (subdirectories of --extract-dir)")
    ap.add_argument("--extract-dir", type=Path, default=Path("data/cache/extract"))
    ap.add_argument("--out-dir", type=Path, default=Path("data/corpus"))
    ap.add_argument("--demo-mb", type=float, default=3.0)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes for the conversion")
    ap.add_argument("--start-time", type=float, default=None,
                    help="epoch seconds the whole build started (for the reported time)")
    a = ap.parse_args()
    t_start = a.start_time or time.time()
    t_conv = time.time()

    unknown = [p for p in a.packages if p not in SOURCES]
    if unknown:
        print(f"build_corpus.py: no converter for {unknown}", file=sys.stderr)
        return 2
    jobs = [(p, str(a.extract_dir / p)) for p in sorted(set(a.packages))]
    missing = [p for p, r in jobs if not Path(r).is_dir()]
    jobs = [(p, r) for p, r in jobs if Path(r).is_dir()]
    if a.jobs > 1:
        import multiprocessing
        with multiprocessing.Pool(a.jobs) as pool:
            results = pool.map(convert_source, jobs, chunksize=1)
    else:
        results = [convert_source(j) for j in jobs]

    dropped = {p: "not extracted" for p in missing}
    per_source: dict[str, dict] = {}
    seen: set[bytes] = set()
    rows: list[tuple[str, str, int]] = []  # (source, text, utf-8 bytes) in final order
    total_dups = 0
    for name, docs, short, err, secs in sorted(results):
        if err is not None:
            print(f"[corpus] warning: dropping {name}: {err}", file=sys.stderr)
            dropped[name] = err
            continue
        if not docs:
            print(f"[corpus] warning: dropping {name}: no documents of {MIN_CHARS}+ characters",
                  file=sys.stderr)
            dropped[name] = "no documents"
            continue
        dups = nbytes = nchars = 0
        kept = 0
        for _path, text in docs:
            h = hashlib.sha256(text.encode("utf-8")).digest()
            if h in seen:
                dups += 1
                continue
            seen.add(h)
            b = len(text.encode("utf-8"))
            rows.append((name, text, b))
            kept += 1
            nbytes += b
            nchars += len(text)
        total_dups += dups
        per_source[name] = {"documents": kept, "bytes": nbytes, "chars": nchars,
                            "mb": round(nbytes / 1e6, 3), "short_dropped": short,
                            "duplicates_removed": dups, "convert_seconds": round(secs, 2)}

    if len(per_source) < 3:
        print(f"build_corpus.py: only {len(per_source)} usable source(s) "
              f"({', '.join(per_source) or 'none'}); need at least 3", file=sys.stderr)
        return 1

    a.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(a.out_dir / "corpus.jsonl", ((s, t) for s, t, _ in rows))
    demo_idx = pick_demo(rows, int(a.demo_mb * 1e6))
    write_jsonl(a.out_dir / "demo.jsonl", ((rows[i][0], rows[i][1]) for i in demo_idx))
    demo_sources: dict[str, dict] = {}
    for i in demo_idx:
        d = demo_sources.setdefault(rows[i][0], {"documents": 0, "bytes": 0})
        d["documents"] += 1
        d["bytes"] += rows[i][2]

    total_bytes = sum(r[2] for r in rows)
    elapsed = time.time() - t_start
    stats = {
        "sources": per_source,
        "total": {"documents": len(rows), "bytes": total_bytes, "mb": round(total_bytes / 1e6, 3),
                  "duplicates_removed": total_dups,
                  "short_dropped": sum(s["short_dropped"] for s in per_source.values())},
        "demo": {"documents": len(demo_idx), "bytes": sum(d["bytes"] for d in demo_sources.values()),
                 "sources": demo_sources},
        "dropped_sources": dropped,
        "min_chars": MIN_CHARS,
        "mb_means": "10^6 bytes of UTF-8 text (the JSON escaping is not counted)",
        "corpus_sha256": _sha256(a.out_dir / "corpus.jsonl"),
        "seconds": {"total": round(elapsed, 1), "convert": round(time.time() - t_conv, 1)},
    }
    tmp = a.out_dir / f".stats.json.tmp.{os.getpid()}"
    tmp.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, a.out_dir / "stats.json")

    # Summary table
    w = max(len(s) for s in per_source) + 2
    print(f"\n{'source':<{w}}{'docs':>8}{'MB':>10}{'dups':>7}{'short':>7}")
    print("-" * (w + 32))
    for s, v in per_source.items():
        print(f"{s:<{w}}{v['documents']:>8}{v['mb']:>10.2f}{v['duplicates_removed']:>7}"
              f"{v['short_dropped']:>7}")
    print("-" * (w + 32))
    t = stats["total"]
    print(f"{'total':<{w}}{t['documents']:>8}{t['mb']:>10.2f}{t['duplicates_removed']:>7}"
          f"{t['short_dropped']:>7}")
    for s, why in dropped.items():
        print(f"dropped {s}: {why}")
    print(f"\nexact duplicates removed: {total_dups}")
    print(f"demo.jsonl: {len(demo_idx)} documents, {stats['demo']['bytes'] / 1e6:.2f} MB")
    print(f"corpus.jsonl sha256 {stats['corpus_sha256']}")
    print(f"wrote {a.out_dir}/corpus.jsonl, demo.jsonl, stats.json in {elapsed:.1f} s")
    return 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
