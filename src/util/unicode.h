// Python's str methods on UTF-8 text, exact on every code point: where lm-eval's task code strips,
// capitalizes or lowers text, deepthin does the same thing to the same code points.
//
// The tables come from the Python that runs lm-eval (scripts/gen_unicode_tables.py asks its str
// methods at build time), so the Unicode version is that Python's. Mirrored, as CPython 3.8+
// defines them:
//   py_isspace     str.isspace on one code point (Unicode White_Space plus U+001C…U+001F)
//   py_strip       str.strip() / lstrip() / rstrip() with no argument
//   py_lower       str.lower(): full mappings (U+0130 → "i̇") and the final sigma rule
//   py_capitalize  str.capitalize(): the first code point titlecased (full mapping), the rest
//                  lowered as str.lower() lowers them
//   py_len         len(): code points
// Bytes that are not valid UTF-8 pass through unchanged (as Python's surrogateescape would carry
// them), and count one each in py_len.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace deepthin::unicode {

bool py_isspace(char32_t c);
std::string py_strip(std::string_view s);
std::string py_lstrip(std::string_view s);
std::string py_rstrip(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_capitalize(std::string_view s);
int64_t py_len(std::string_view s);
// The Unicode version the tables were generated from.
const char* tables_version();

// UTF-8 with escapes: an invalid byte b decodes to U+DC00 + b and encodes back to b.
std::u32string decode(std::string_view s);
std::string encode(std::u32string_view s);

}  // namespace deepthin::unicode
