#include "util/json_io.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "util/error.h"

namespace deepthin::json {

namespace {

const char* kind_name(const Json& j) {
  if (j.is_null()) return "null";
  if (j.is_boolean()) return "a boolean";
  if (j.is_number()) return "a number";
  if (j.is_string()) return "a string";
  if (j.is_array()) return "an array";
  return "an object";
}

[[noreturn]] void type_error(const Json& j, std::string_view what, const char* want) {
  fail_input(std::string(what) + ": expected " + want + ", got " + kind_name(j));
}

constexpr int kMaxDepth = 512;

// nlohmann's reader knows no NaN / Infinity. Outside strings, each such token is replaced by a
// string holding one control character `mark` and a letter; no string of the input can hold that
// character, because JSON text must escape control characters and the text has no escape for it.
// After parsing, those strings become the reals again. `shift` maps offsets in the rewritten text
// back to the input for error positions.
struct Rewritten {
  std::string text;
  char mark = 0;
  std::vector<std::pair<size_t, long>> shift;  // (offset in text, input offset − text offset)
};

[[noreturn]] void fail_at(std::string_view input, size_t offset, std::string_view where,
                          const std::string& what) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < offset && i < input.size(); ++i) {
    if (input[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  fail_input(std::string(where) + ":" + std::to_string(line) + ":" + std::to_string(col) + ": " +
             what);
}

char pick_mark(std::string_view s) {
  // Control characters without a short escape (\b \t \n \f \r have one).
  for (int c = 1; c < 0x20; ++c) {
    if (c == '\b' || c == '\t' || c == '\n' || c == '\f' || c == '\r') continue;
    char esc[7];
    std::snprintf(esc, sizeof esc, "\\u%04x", c);
    char upper[7];
    std::snprintf(upper, sizeof upper, "\\u%04X", c);
    if (s.find(esc) == std::string_view::npos && s.find(upper) == std::string_view::npos)
      return static_cast<char>(c);
  }
  return 0;
}

Rewritten rewrite_non_finite(std::string_view in, std::string_view where) {
  Rewritten r;
  r.text.reserve(in.size());
  bool in_string = false;
  int depth = 0;
  long delta = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (in_string) {
      r.text += c;
      if (c == '\\' && i + 1 < in.size()) {
        r.text += in[++i];
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth) fail_at(in, i, where, "nesting deeper than 512 levels");
    } else if (c == ']' || c == '}') {
      --depth;
    } else {
      static constexpr std::pair<std::string_view, char> kTokens[] = {
          {"NaN", 'N'}, {"Infinity", 'I'}, {"-Infinity", 'M'}};
      bool replaced = false;
      for (const auto& [token, letter] : kTokens) {
        if (in.substr(i, token.size()) != token) continue;
        if (!r.mark) r.mark = pick_mark(in);
        if (!r.mark)
          fail_at(in, i, where, "NaN/Infinity together with every control-character escape");
        char buf[16];
        std::snprintf(buf, sizeof buf, "\"\\u%04x%c\"", r.mark, letter);
        r.text += buf;
        delta += static_cast<long>(token.size()) - static_cast<long>(std::string_view(buf).size());
        r.shift.emplace_back(r.text.size(), delta);
        i += token.size() - 1;
        replaced = true;
        break;
      }
      if (replaced) continue;
    }
    r.text += c;
  }
  return r;
}

void restore_non_finite(Json& j, char mark) {
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (s.size() == 2 && s[0] == mark) {
      constexpr double inf = std::numeric_limits<double>::infinity();
      j = s[1] == 'N' ? std::nan("") : s[1] == 'I' ? inf : -inf;
    }
  } else if (j.is_structured()) {
    for (auto& x : j) restore_non_finite(x, mark);
  }
}

void dump_to(const Json& j, std::string& out, int indent, int depth) {
  auto newline = [&](int d) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent * d), ' ');
  };
  if (j.is_number_float()) {
    out += format_double(j.get<double>());
  } else if (j.is_array()) {
    out += '[';
    // Arrays of scalars stay on one line even when pretty-printing: long number lists read better.
    bool flat = true;
    for (const auto& x : j) flat = flat && !x.is_structured();
    size_t i = 0;
    for (const auto& x : j) {
      if (i++) out += indent >= 0 && flat ? ", " : ",";
      if (!flat) newline(depth + 1);
      dump_to(x, out, indent, depth + 1);
    }
    if (!flat && !j.empty()) newline(depth);
    out += ']';
  } else if (j.is_object()) {
    out += '{';
    size_t i = 0;
    for (const auto& [k, v] : j.items()) {
      if (i++) out += ',';
      newline(depth + 1);
      out += Json(k).dump(-1, ' ', false, Json::error_handler_t::replace);
      out += indent >= 0 ? ": " : ":";
      dump_to(v, out, indent, depth + 1);
    }
    if (!j.empty()) newline(depth);
    out += '}';
  } else {
    out += j.dump(-1, ' ', false, Json::error_handler_t::replace);
  }
}

}  // namespace

Json parse(std::string_view text, std::string_view where) {
  Rewritten r = rewrite_non_finite(text, where);
  Json j;
  try {
    j = Json::parse(r.text);
  } catch (const Json::parse_error& e) {
    // e.byte is 1-based and points just past the offending character.
    size_t off = e.byte > 0 ? e.byte - 1 : 0;
    long delta = 0;
    for (const auto& [at, d] : r.shift)
      if (at <= off) delta = d;
    std::string what = e.what();
    if (auto p = what.find("syntax error"); p != std::string::npos) what = what.substr(p);
    fail_at(text, static_cast<size_t>(static_cast<long>(off) + delta), where, what);
  } catch (const Json::exception& e) {  // a number beyond double's range, say
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    fail_input(std::string(where) + ": " + what);
  }
  if (r.mark) restore_non_finite(j, r.mark);
  return j;
}

std::string dump(const Json& j, int indent) {
  // Invalid UTF-8 in a string (a path, say) is written as U+FFFD rather than failing the write.
  std::string out;
  dump_to(j, out, indent, 0);
  return out;
}

std::string format_double(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  // nlohmann writes the shortest text that reads back exactly, and keeps reals recognisable as
  // reals (2.0, not 2).
  return Json(d).dump();
}

const Json* find(const Json& j, std::string_view key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(std::string(key));
  return it == j.end() ? nullptr : &*it;
}

Json* find(Json& j, std::string_view key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(std::string(key));
  return it == j.end() ? nullptr : &*it;
}

const Json& at(const Json& j, std::string_view key, std::string_view where) {
  const Json* v = find(j, key);
  if (!v) fail_input(std::string(where) + ": missing key '" + std::string(key) + "'");
  return *v;
}

bool as_bool(const Json& j, std::string_view what) {
  if (!j.is_boolean()) type_error(j, what, "a boolean");
  return j.get<bool>();
}

int64_t as_int(const Json& j, std::string_view what) {
  if (j.is_number_unsigned()) {
    const auto u = j.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail_input(std::string(what) + ": " + std::to_string(u) + " is beyond a 64-bit integer");
    return static_cast<int64_t>(u);
  }
  if (!j.is_number_integer()) type_error(j, what, "an integer");
  return j.get<int64_t>();
}

double as_double(const Json& j, std::string_view what) {
  if (!j.is_number()) type_error(j, what, "a number");
  return j.get<double>();
}

const std::string& as_string(const Json& j, std::string_view what) {
  if (!j.is_string()) type_error(j, what, "a string");
  return j.get_ref<const std::string&>();
}

const Json& as_array(const Json& j, std::string_view what) {
  if (!j.is_array()) type_error(j, what, "an array");
  return j;
}

const Json& as_object(const Json& j, std::string_view what) {
  if (!j.is_object()) type_error(j, what, "an object");
  return j;
}

}  // namespace deepthin::json
