// A small JSON value: enough for safetensors headers, HF config.json, manifests, metrics and --json
// output.
//
// Objects keep insertion order so that what we write reads the way it was built. Integers and reals
// are kept apart so that token counts and parameter counts round-trip exactly. Non-finite reals are
// written as NaN / Infinity, as Python's json module does, and read back the same way.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace deepthin {

class Json {
 public:
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;

  Json() = default;
  Json(std::nullptr_t) {}
  Json(bool b) : v_(b) {}
  Json(int i) : v_(static_cast<int64_t>(i)) {}
  Json(int64_t i) : v_(i) {}
  Json(uint64_t i) : v_(static_cast<int64_t>(i)) {}
  Json(double d) : v_(d) {}
  Json(const char* s) : v_(std::string(s)) {}
  Json(std::string s) : v_(std::move(s)) {}
  Json(std::string_view s) : v_(std::string(s)) {}
  Json(Array a) : v_(std::move(a)) {}
  Json(Object o) : v_(std::move(o)) {}

  static Json object() { return Json(Object{}); }
  static Json array() { return Json(Array{}); }

  bool is_null() const { return std::holds_alternative<std::monostate>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_int() const { return std::holds_alternative<int64_t>(v_); }
  bool is_number() const { return is_int() || std::holds_alternative<double>(v_); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_array() const { return std::holds_alternative<Array>(v_); }
  bool is_object() const { return std::holds_alternative<Object>(v_); }

  // Typed access; `what` names the value in the error thrown on a type mismatch.
  bool as_bool(std::string_view what = "value") const;
  int64_t as_int(std::string_view what = "value") const;
  double as_double(std::string_view what = "value") const;
  const std::string& as_string(std::string_view what = "value") const;
  const Array& as_array(std::string_view what = "value") const;
  const Object& as_object(std::string_view what = "value") const;
  Array& array_items();
  Object& object_items();

  // Object access: operator[] inserts (turning null into an object), find returns nullptr when
  // absent.
  Json& operator[](std::string_view key);
  const Json* find(std::string_view key) const;
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  // The member `key`, or an input error naming `where` when it is missing.
  const Json& at(std::string_view key, std::string_view where) const;
  void push_back(Json value);
  size_t size() const;

  // indent < 0: compact one-line output; otherwise pretty-printed with that many spaces.
  std::string dump(int indent = -1) const;
  // Parses text; errors name `where` (a file path, say) with line and column.
  static Json parse(std::string_view text, std::string_view where = "JSON");

  friend bool operator==(const Json& a, const Json& b) { return a.v_ == b.v_; }

 private:
  void dump_to(std::string& out, int indent, int depth) const;
  std::variant<std::monostate, bool, int64_t, double, std::string, Array, Object> v_;
};

// Appends `s` as a quoted, escaped JSON string.
void append_json_string(std::string& out, std::string_view s);
// Shortest decimal text that reads back as exactly `d` (NaN / Infinity for non-finite values).
std::string format_double(double d);

}  // namespace deepthin
