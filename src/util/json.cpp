#include "util/json.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "util/error.h"

namespace deepthin {

namespace {

const char* kind_name(const Json& j) {
  if (j.is_null()) return "null";
  if (j.is_bool()) return "a boolean";
  if (j.is_number()) return "a number";
  if (j.is_string()) return "a string";
  if (j.is_array()) return "an array";
  return "an object";
}

[[noreturn]] void type_error(const Json& j, std::string_view what, const char* want) {
  fail_input(std::string(what) + ": expected " + want + ", got " + kind_name(j));
}

class Parser {
 public:
  Parser(std::string_view text, std::string_view where) : s_(text), where_(where) {}

  Json parse_document() {
    Json v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) error("unexpected trailing characters");
    return v;
  }

 private:
  [[noreturn]] void error(const std::string& msg) const {
    int line = 1, col = 1;
    for (size_t i = 0; i < pos_ && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    fail_input(std::string(where_) + ":" + std::to_string(line) + ":" + std::to_string(col) +
               ": invalid JSON: " + msg);
  }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r'))
      ++pos_;
  }

  bool consume(std::string_view word) {
    if (s_.substr(pos_, word.size()) == word) {
      pos_ += word.size();
      return true;
    }
    return false;
  }

  Json parse_value(int depth) {
    if (depth > 512) error("nesting too deep");
    skip_ws();
    if (pos_ >= s_.size()) error("unexpected end of input");
    char c = s_[pos_];
    if (c == '{') return parse_object(depth);
    if (c == '[') return parse_array(depth);
    if (c == '"') return Json(parse_string());
    if (consume("true")) return Json(true);
    if (consume("false")) return Json(false);
    if (consume("null")) return Json();
    if (consume("NaN")) return Json(NAN);
    if (consume("Infinity")) return Json(HUGE_VAL);
    if (consume("-Infinity")) return Json(-HUGE_VAL);
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
    error(std::string("unexpected character '") + c + "'");
  }

  Json parse_number() {
    size_t start = pos_;
    bool real = false;
    if (s_[pos_] == '-') ++pos_;
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c >= '0' && c <= '9') {
        ++pos_;
      } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
        real = true;
        ++pos_;
      } else {
        break;
      }
    }
    std::string_view text = s_.substr(start, pos_ - start);
    if (!real) {
      int64_t v = 0;
      auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec == std::errc() && p == text.data() + text.size()) return Json(v);
    }
    double d = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
    if (ec != std::errc() || p != text.data() + text.size()) {
      pos_ = start;
      error("malformed number '" + std::string(text) + "'");
    }
    return Json(d);
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t parse_hex4() {
    if (pos_ + 4 > s_.size()) error("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= c - '0';
      else if (c >= 'a' && c <= 'f')
        v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        v |= c - 'A' + 10;
      else
        error("bad hex digit in \\u escape");
    }
    return v;
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) error("unterminated string");
      char c = s_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) error("unterminated escape");
      char e = s_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && s_.substr(pos_, 2) == "\\u") {
            pos_ += 2;
            uint32_t lo = parse_hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          error(std::string("unknown escape \\") + e);
      }
    }
  }

  Json parse_array(int depth) {
    ++pos_;
    Json::Array items;
    skip_ws();
    if (consume("]")) return Json(std::move(items));
    while (true) {
      items.push_back(parse_value(depth + 1));
      skip_ws();
      if (consume("]")) return Json(std::move(items));
      if (!consume(",")) error("expected ',' or ']' in array");
    }
  }

  Json parse_object(int depth) {
    ++pos_;
    Json::Object members;
    skip_ws();
    if (consume("}")) return Json(std::move(members));
    while (true) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') error("expected a string key in object");
      std::string key = parse_string();
      skip_ws();
      if (!consume(":")) error("expected ':' after object key");
      members.emplace_back(std::move(key), parse_value(depth + 1));
      skip_ws();
      if (consume("}")) return Json(std::move(members));
      if (!consume(",")) error("expected ',' or '}' in object");
    }
  }

  std::string_view s_;
  std::string_view where_;
  size_t pos_ = 0;
};

}  // namespace

bool Json::as_bool(std::string_view what) const {
  if (!is_bool()) type_error(*this, what, "a boolean");
  return std::get<bool>(v_);
}

int64_t Json::as_int(std::string_view what) const {
  if (is_int()) return std::get<int64_t>(v_);
  if (std::holds_alternative<double>(v_)) {
    double d = std::get<double>(v_);
    if (std::floor(d) == d && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
  }
  type_error(*this, what, "an integer");
}

double Json::as_double(std::string_view what) const {
  if (is_int()) return static_cast<double>(std::get<int64_t>(v_));
  if (std::holds_alternative<double>(v_)) return std::get<double>(v_);
  type_error(*this, what, "a number");
}

const std::string& Json::as_string(std::string_view what) const {
  if (!is_string()) type_error(*this, what, "a string");
  return std::get<std::string>(v_);
}

const Json::Array& Json::as_array(std::string_view what) const {
  if (!is_array()) type_error(*this, what, "an array");
  return std::get<Array>(v_);
}

const Json::Object& Json::as_object(std::string_view what) const {
  if (!is_object()) type_error(*this, what, "an object");
  return std::get<Object>(v_);
}

Json::Array& Json::array_items() {
  if (is_null()) v_ = Array{};
  if (!is_array()) type_error(*this, "value", "an array");
  return std::get<Array>(v_);
}

Json::Object& Json::object_items() {
  if (is_null()) v_ = Object{};
  if (!is_object()) type_error(*this, "value", "an object");
  return std::get<Object>(v_);
}

Json& Json::operator[](std::string_view key) {
  Object& obj = object_items();
  for (auto& [k, v] : obj)
    if (k == key) return v;
  obj.emplace_back(std::string(key), Json());
  return obj.back().second;
}

const Json* Json::find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [k, v] : std::get<Object>(v_))
    if (k == key) return &v;
  return nullptr;
}

const Json& Json::at(std::string_view key, std::string_view where) const {
  const Json* v = find(key);
  if (!v) fail_input(std::string(where) + ": missing key '" + std::string(key) + "'");
  return *v;
}

void Json::push_back(Json value) {
  array_items().push_back(std::move(value));
}

size_t Json::size() const {
  if (is_array()) return std::get<Array>(v_).size();
  if (is_object()) return std::get<Object>(v_).size();
  return 0;
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

std::string format_double(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, p);
  // Keep reals recognisable as reals when read back.
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

void Json::dump_to(std::string& out, int indent, int depth) const {
  auto newline = [&](int d) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent * d), ' ');
  };
  if (is_null()) {
    out += "null";
  } else if (is_bool()) {
    out += std::get<bool>(v_) ? "true" : "false";
  } else if (is_int()) {
    out += std::to_string(std::get<int64_t>(v_));
  } else if (std::holds_alternative<double>(v_)) {
    out += format_double(std::get<double>(v_));
  } else if (is_string()) {
    append_json_string(out, std::get<std::string>(v_));
  } else if (is_array()) {
    const auto& a = std::get<Array>(v_);
    out += '[';
    // Arrays of scalars stay on one line even when pretty-printing: long number lists read better.
    bool flat = true;
    for (const auto& x : a) flat = flat && !x.is_array() && !x.is_object();
    for (size_t i = 0; i < a.size(); ++i) {
      if (i) out += indent >= 0 && flat ? ", " : ",";
      if (!flat) newline(depth + 1);
      a[i].dump_to(out, indent, depth + 1);
    }
    if (!flat && !a.empty()) newline(depth);
    out += ']';
  } else {
    const auto& o = std::get<Object>(v_);
    out += '{';
    for (size_t i = 0; i < o.size(); ++i) {
      if (i) out += ',';
      newline(depth + 1);
      append_json_string(out, o[i].first);
      out += indent >= 0 ? ": " : ":";
      o[i].second.dump_to(out, indent, depth + 1);
    }
    if (!o.empty()) newline(depth);
    out += '}';
  }
}

std::string Json::dump(int indent) const {
  std::string out;
  dump_to(out, indent, 0);
  return out;
}

Json Json::parse(std::string_view text, std::string_view where) {
  return Parser(text, where).parse_document();
}

}  // namespace deepthin
