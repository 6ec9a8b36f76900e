#include "util/json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "util/error.h"

using deepthin::Json;

TEST(Json, RoundTripsNestedValues) {
  Json j = Json::object();
  j["int"] = int64_t{124635456};
  j["big"] = int64_t{9007199254740993};  // not representable as a double: must stay exact
  j["real"] = 0.1;
  j["neg"] = -2.5e-8;
  j["s"] = "quote \" backslash \\ newline \n tab \t é";
  j["list"] = Json(Json::Array{Json(1), Json(2.5), Json("x"), Json(), Json(true)});
  j["obj"]["nested"] = false;
  for (int indent : {-1, 2}) {
    Json back = Json::parse(j.dump(indent));
    EXPECT_EQ(back, j) << j.dump(indent);
    EXPECT_EQ(back.find("big")->as_int(), 9007199254740993);
    EXPECT_EQ(back.find("real")->as_double(), 0.1);
  }
}

TEST(Json, KeepsInsertionOrder) {
  Json j = Json::object();
  j["b"] = 1;
  j["a"] = 2;
  j["c"] = 3;
  EXPECT_EQ(j.dump(), "{\"b\":1,\"a\":2,\"c\":3}");
}

TEST(Json, NonFiniteRealsUsePythonSpelling) {
  Json j = Json(Json::Array{Json(std::nan("")), Json(HUGE_VAL), Json(-HUGE_VAL)});
  EXPECT_EQ(j.dump(), "[NaN,Infinity,-Infinity]");
  Json back = Json::parse(j.dump());
  EXPECT_TRUE(std::isnan(back.as_array()[0].as_double()));
  EXPECT_EQ(back.as_array()[2].as_double(), -HUGE_VAL);
}

TEST(Json, ParsesUnicodeEscapes) {
  Json j = Json::parse(R"(["\u00e9\ud83d\ude00"])");
  EXPECT_EQ(j.as_array()[0].as_string(), "\xC3\xA9\xF0\x9F\x98\x80");
}

TEST(Json, SyntaxErrorsNameLineAndColumn) {
  try {
    Json::parse("{\n  \"a\": 1,\n  \"b\" 2\n}", "cfg.json");
    FAIL() << "expected an error";
  } catch (const deepthin::Error& e) {
    EXPECT_EQ(e.kind(), deepthin::ErrorKind::input);
    EXPECT_NE(std::string(e.what()).find("cfg.json:3:7"), std::string::npos) << e.what();
  }
}

TEST(Json, TypeErrorsNameTheValue) {
  Json j = Json::parse(R"({"n": "x"})");
  try {
    j.at("n", "config.json").as_int("config.json: n");
    FAIL();
  } catch (const deepthin::Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json: n: expected an integer, got a string"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(j.at("missing", "config.json"), deepthin::Error);
}
