// deepthin's JSON boundary (util/json_io.h) over nlohmann::ordered_json: exact int64, Python's
// NaN/Infinity, error positions, typed access that names the value.
#include "util/json_io.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "util/error.h"

using deepthin::Json;
namespace json = deepthin::json;

namespace {
std::string input_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const deepthin::Error& e) {
    EXPECT_EQ(e.kind(), deepthin::ErrorKind::input);
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}
}  // namespace

TEST(Json, RoundTripsNestedValues) {
  Json j = Json::object();
  j["int"] = int64_t{124635456};
  j["big"] = int64_t{9007199254740993};  // not representable as a double: must stay exact
  j["max"] = std::numeric_limits<int64_t>::max();
  j["min"] = std::numeric_limits<int64_t>::min();
  j["real"] = 0.1;
  j["neg"] = -2.5e-8;
  j["two"] = 2.0;
  j["s"] = "quote \" backslash \\ newline \n tab \t é \x01";
  j["list"] = Json::array({1, 2.5, "x", nullptr, true});
  j["obj"]["nested"] = false;
  for (int indent : {-1, 2}) {
    const std::string text = json::dump(j, indent);
    Json back = json::parse(text);
    EXPECT_EQ(back, j) << text;
    EXPECT_EQ(json::as_int(json::at(back, "big", "t")), 9007199254740993);
    EXPECT_EQ(json::as_int(json::at(back, "max", "t")), std::numeric_limits<int64_t>::max());
    EXPECT_EQ(json::as_int(json::at(back, "min", "t")), std::numeric_limits<int64_t>::min());
    EXPECT_EQ(json::as_double(json::at(back, "real", "t")), 0.1);
    EXPECT_TRUE(json::at(back, "two", "t").is_number_float()) << text;  // written as 2.0
  }
  // Pretty output keeps arrays of scalars on one line.
  EXPECT_NE(json::dump(j, 2).find("\"list\": [1, 2.5, \"x\", null, true]"), std::string::npos)
      << json::dump(j, 2);
}

TEST(Json, KeepsInsertionOrder) {
  Json j = Json::object();
  j["b"] = 1;
  j["a"] = 2;
  j["c"] = 3;
  EXPECT_EQ(json::dump(j), "{\"b\":1,\"a\":2,\"c\":3}");
}

TEST(Json, NonFiniteRealsUsePythonSpelling) {
  const double inf = std::numeric_limits<double>::infinity();
  Json j = Json::array({std::nan(""), inf, -inf, 1.5});
  EXPECT_EQ(json::dump(j), "[NaN,Infinity,-Infinity,1.5]");
  Json back = json::parse(json::dump(j));
  EXPECT_TRUE(std::isnan(json::as_double(back[0])));
  EXPECT_EQ(json::as_double(back[1]), inf);
  EXPECT_EQ(json::as_double(back[2]), -inf);
  // Python's own output, inside objects and next to strings that spell the same words.
  Json m = json::parse(R"({"loss": NaN, "s": "NaN", "t": "Infinity", "g": -Infinity})");
  EXPECT_TRUE(std::isnan(json::as_double(json::at(m, "loss", "m"))));
  EXPECT_EQ(json::as_string(json::at(m, "s", "m")), "NaN");
  EXPECT_EQ(json::as_string(json::at(m, "t", "m")), "Infinity");
  EXPECT_EQ(json::as_double(json::at(m, "g", "m")), -inf);
  // Strings holding control characters (the reader's private marks) stay strings.
  Json c = json::parse(R"(["\u0001N", "\u0007N", NaN, "\u0002I"])");
  EXPECT_EQ(json::as_string(c[0]), "\x01N");
  EXPECT_EQ(json::as_string(c[1]), "\x07N");
  EXPECT_TRUE(std::isnan(json::as_double(c[2])));
  EXPECT_EQ(json::as_string(c[3]), "\x02I");
}

TEST(Json, ParsesUnicodeEscapes) {
  Json j = json::parse(R"(["\u00e9\ud83d\ude00"])");
  EXPECT_EQ(json::as_string(j[0]), "\xC3\xA9\xF0\x9F\x98\x80");
}

TEST(Json, SyntaxErrorsNameLineAndColumn) {
  auto msg = input_error([] { json::parse("{\n  \"a\": 1,\n  \"b\" 2\n}", "cfg.json"); });
  EXPECT_NE(msg.find("cfg.json:3:7"), std::string::npos) << msg;
  // Columns count the input's characters, also after a NaN that the reader rewrote.
  msg = input_error([] { json::parse("[NaN, NaN, x]", "m.json"); });
  EXPECT_NE(msg.find("m.json:1:12"), std::string::npos) << msg;
  msg = input_error([] { json::parse(std::string(600, '['), "deep.json"); });
  EXPECT_NE(msg.find("deep.json:1:513: nesting deeper than 512 levels"), std::string::npos) << msg;
  msg = input_error([] { json::parse("[1e999]", "big.json"); });
  EXPECT_NE(msg.find("big.json: number overflow parsing '1e999'"), std::string::npos) << msg;
  msg = input_error([] { json::parse("{\"a\": 1} x", "trail.json"); });
  EXPECT_NE(msg.find("trail.json:1:"), std::string::npos) << msg;
}

TEST(Json, TypeErrorsNameTheValue) {
  Json j = json::parse(R"({"n": "x", "u": 18446744073709551615, "r": 2.5})");
  auto msg = input_error([&] { json::as_int(json::at(j, "n", "config.json"), "config.json: n"); });
  EXPECT_NE(msg.find("config.json: n: expected an integer, got a string"), std::string::npos)
      << msg;
  msg = input_error([&] { json::as_int(json::at(j, "u", "c"), "c: u"); });
  EXPECT_NE(msg.find("c: u: 18446744073709551615 is beyond a 64-bit integer"), std::string::npos)
      << msg;
  msg = input_error([&] { json::as_int(json::at(j, "r", "c"), "c: r"); });
  EXPECT_NE(msg.find("c: r: expected an integer, got a number"), std::string::npos) << msg;
  msg = input_error([&] { json::at(j, "missing", "config.json"); });
  EXPECT_NE(msg.find("config.json: missing key 'missing'"), std::string::npos) << msg;
  EXPECT_EQ(json::find(j, "missing"), nullptr);
  EXPECT_EQ(json::find(Json(3), "n"), nullptr);  // not an object
}
