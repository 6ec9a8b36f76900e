// JSON at deepthin's boundaries (config.json, manifests, trainer_state, checksums, metrics, --json
// output): the values are nlohmann::ordered_json (insertion order kept, 64-bit integers exact);
// this file adds only what the library does not do the way deepthin's files need:
//   - NaN and ±Infinity are read and written as Python's json module spells them (metrics carry a
//     non-finite loss as NaN, and Python tools read it back);
//   - parse errors are input errors naming the file, line and column; nesting is bounded (512);
//   - typed access whose errors name the value ("config.json: n: expected an integer, got a
//     string"), and find/at that return nullptr / name the missing key;
//   - pretty output keeps arrays of scalars on one line.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace deepthin {

using Json = nlohmann::ordered_json;

namespace json {

// Parses text; errors name `where` (a file path, say) with line and column.
Json parse(std::string_view text, std::string_view where = "JSON");
// indent < 0: compact one-line output; otherwise pretty-printed with that many spaces.
std::string dump(const Json& j, int indent = -1);
// Shortest decimal text that reads back as exactly `d` (NaN / Infinity for non-finite values).
std::string format_double(double d);

// The member `key` of an object, or nullptr (also when `j` is not an object).
const Json* find(const Json& j, std::string_view key);
Json* find(Json& j, std::string_view key);
// The member `key`, or an input error naming `where` when it is missing.
const Json& at(const Json& j, std::string_view key, std::string_view where);

// Typed access; `what` names the value in the input error thrown on a type mismatch. as_int takes
// integers in int64's range only (no reals, no larger unsigned values).
bool as_bool(const Json& j, std::string_view what = "value");
int64_t as_int(const Json& j, std::string_view what = "value");
double as_double(const Json& j, std::string_view what = "value");
const std::string& as_string(const Json& j, std::string_view what = "value");
const Json& as_array(const Json& j, std::string_view what = "value");
const Json& as_object(const Json& j, std::string_view what = "value");

}  // namespace json
}  // namespace deepthin
