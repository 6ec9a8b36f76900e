// Python's str methods over generated tables (see unicode.h and scripts/gen_unicode_tables.py).
#include "util/unicode.h"

#include <algorithm>
#include <iterator>

namespace deepthin::unicode {

namespace {

struct CodeRange {
  char32_t lo, hi;
};
struct CaseMapping {
  char32_t from;
  int n;
  char32_t to[3];
};

#include "unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodeRange (&t)[N], char32_t c) {
  auto it = std::upper_bound(std::begin(t), std::end(t), c,
                             [](char32_t v, const CodeRange& r) { return v < r.lo; });
  return it != std::begin(t) && c <= std::prev(it)->hi;
}

template <size_t N>
const CaseMapping* find_mapping(const CaseMapping (&t)[N], char32_t c) {
  auto it = std::lower_bound(std::begin(t), std::end(t), c,
                             [](const CaseMapping& m, char32_t v) { return m.from < v; });
  return it != std::end(t) && it->from == c ? &*it : nullptr;
}

void append_mapped(const CaseMapping* m, char32_t c, std::u32string& out) {
  if (!m) {
    out.push_back(c);
    return;
  }
  out.append(m->to, m->to + m->n);
}

constexpr char32_t kCapitalSigma = 0x3A3, kSmallSigma = 0x3C3, kFinalSigma = 0x3C2;

// CPython's handle_capital_sigma: final when a cased letter precedes (skipping case-ignorable code
// points) and none follows (likewise).
char32_t lower_sigma(const std::u32string& s, size_t i) {
  size_t j = i;
  while (j > 0 && in_ranges(kSigmaIgnorable, s[j - 1])) --j;
  const bool cased_before = j > 0 && in_ranges(kSigmaCased, s[j - 1]);
  size_t k = i + 1;
  while (k < s.size() && in_ranges(kSigmaIgnorable, s[k])) ++k;
  const bool cased_after = k < s.size() && in_ranges(kSigmaCased, s[k]);
  return cased_before && !cased_after ? kFinalSigma : kSmallSigma;
}

void lower_into(const std::u32string& s, size_t from, std::u32string& out) {
  for (size_t i = from; i < s.size(); ++i) {
    if (s[i] == kCapitalSigma)
      out.push_back(lower_sigma(s, i));
    else
      append_mapped(find_mapping(kLower, s[i]), s[i], out);
  }
}

// Byte length of the UTF-8 sequence starting at p[0], or 0 when it is not a valid one.
size_t sequence_length(const unsigned char* p, size_t avail, char32_t& cp) {
  const unsigned char b = p[0];
  if (b < 0x80) {
    cp = b;
    return 1;
  }
  size_t n;
  char32_t min;
  if ((b & 0xE0) == 0xC0) {
    n = 2, cp = b & 0x1F, min = 0x80;
  } else if ((b & 0xF0) == 0xE0) {
    n = 3, cp = b & 0x0F, min = 0x800;
  } else if ((b & 0xF8) == 0xF0) {
    n = 4, cp = b & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (avail < n) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

}  // namespace

const char* tables_version() {
  return kUnicodeVersion;
}

std::u32string decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    char32_t cp = 0;
    const size_t n = sequence_length(p + i, s.size() - i, cp);
    if (n == 0) {
      out.push_back(0xDC00 + p[i]);
      ++i;
    } else {
      out.push_back(cp);
      i += n;
    }
  }
  return out;
}

std::string encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c >= 0xDC80 && c <= 0xDCFF) {
      out.push_back(static_cast<char>(c - 0xDC00));
    } else if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (c >> 12)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (c >> 18)));
      out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

bool py_isspace(char32_t c) {
  return in_ranges(kWhitespace, c);
}

std::string py_lstrip(std::string_view s) {
  const std::u32string u = decode(s);
  size_t b = 0;
  while (b < u.size() && py_isspace(u[b])) ++b;
  return encode(std::u32string_view(u).substr(b));
}

std::string py_rstrip(std::string_view s) {
  const std::u32string u = decode(s);
  size_t e = u.size();
  while (e > 0 && py_isspace(u[e - 1])) --e;
  return encode(std::u32string_view(u).substr(0, e));
}

std::string py_strip(std::string_view s) {
  return py_lstrip(py_rstrip(s));
}

std::string py_lower(std::string_view s) {
  const std::u32string u = decode(s);
  std::u32string out;
  out.reserve(u.size());
  lower_into(u, 0, out);
  return encode(out);
}

std::string py_capitalize(std::string_view s) {
  const std::u32string u = decode(s);
  if (u.empty()) return "";
  std::u32string out;
  out.reserve(u.size());
  append_mapped(find_mapping(kCapitalizeFirst, u[0]), u[0], out);
  lower_into(u, 1, out);
  return encode(out);
}

int64_t py_len(std::string_view s) {
  return static_cast<int64_t>(decode(s).size());
}

}  // namespace deepthin::unicode
