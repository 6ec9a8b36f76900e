// util/unicode against the Python that runs lm-eval: the same strings through Python's str methods
// and through deepthin's mirrors must give the same results on every code point.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "util/json_io.h"
#include "util/process.h"
#include "util/unicode.h"

namespace fs = std::filesystem;
using namespace deepthin;

namespace {

// Code points where Python's str methods do something other than ASCII's rules.
const char32_t kInteresting[] = {
    0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680, 0x2000,
    0x2001, 0x2002, 0x2003, 0x2006, 0x2009, 0x200A, 0x200B, 0x2028, 0x2029, 0x202F, 0x205F,
    0x3000, 0xFEFF, 0x180E, 0x130, 0x131, 0x3A3, 0x3C2, 0x3C3, 0xDF, 0x1E9E, 0x149, 0x1C4,
    0x1C5, 0x1C6, 0xFB01, 0xFB03, 0x1F80, 0x1FB3, 0x1FBC, 0x390, 0x587, 0x10400, 0x10428,
    0x1E900, 0x2C65, 0x23A, 0x345, 0x301, 0x308, 0x41, 0x61, 0x5A, 0x7A, 0xC9, 0xE9, 0x4E2D,
    0x1F600, 0x2160, 0x24B6, 0x1D400, 0x10FFFF};

std::vector<std::string> generate(size_t n) {
  std::mt19937 rng(20261205);
  std::vector<std::string> out = {"", " ", "\u00a0\u00a0", "ΑΣ", "ΑΣ Α", "ΑΣΑ", "Σ", "aΣ.", "İstanbul",
                                  "ǆemal", "ﬁnal", "ßtraße", "\u3000élise\u2003"};
  std::uniform_int_distribution<int> len(0, 12), pick(0, 3);
  std::uniform_int_distribution<size_t> inter(0, std::size(kInteresting) - 1);
  std::uniform_int_distribution<uint32_t> bmp(0, 0x3000), any(0, 0x10FFFF);
  while (out.size() < n) {
    std::u32string s;
    for (int i = len(rng); i > 0; --i) {
      char32_t c;
      switch (pick(rng)) {
        case 0: c = kInteresting[inter(rng)]; break;
        case 1: c = bmp(rng); break;
        case 2: c = any(rng); break;
        default: c = U'a' + (rng() % 26); break;
      }
      if (c >= 0xD800 && c <= 0xDFFF) c = U'x';  // surrogates are not text
      s.push_back(c);
    }
    out.push_back(unicode::encode(s));
  }
  return out;
}

}  // namespace

TEST(Unicode, MatchesPythonStrMethodsOnEveryCodePoint) {
  const auto strings = generate(20000);
  const fs::path dir = fs::temp_directory_path() / ("deepthin_unicode_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "in.json");
    f << json::dump(Json(strings));
  }
  const std::string script =
      "import json,sys\n"
      "xs=json.load(open(sys.argv[1],encoding='utf-8'))\n"
      "json.dump([[x.strip(),x.lstrip(),x.rstrip(),x.lower(),x.capitalize(),len(x),"
      "[c.isspace() for c in x]] for x in xs],open(sys.argv[2],'w'))\n";
  {
    std::ofstream f(dir / "py.py");
    f << script;
  }
  const auto r = run_process({DEEPTHIN_PYTHON, (dir / "py.py").string(), (dir / "in.json").string(),
                              (dir / "out.json").string()});
  ASSERT_EQ(r.status, 0) << "python failed";
  std::ifstream in(dir / "out.json");
  const Json want = Json::parse(in);
  fs::remove_all(dir);
  ASSERT_EQ(want.size(), strings.size());
  int bad = 0;
  for (size_t i = 0; i < strings.size() && bad < 10; ++i) {
    const std::string& s = strings[i];
    const Json& w = want[i];
    const std::u32string cps = unicode::decode(s);
    std::vector<bool> spaces;
    for (char32_t c : cps) spaces.push_back(unicode::py_isspace(c));
    const bool ok = unicode::py_strip(s) == w[0].get<std::string>() &&
                    unicode::py_lstrip(s) == w[1].get<std::string>() &&
                    unicode::py_rstrip(s) == w[2].get<std::string>() &&
                    unicode::py_lower(s) == w[3].get<std::string>() &&
                    unicode::py_capitalize(s) == w[4].get<std::string>() &&
                    unicode::py_len(s) == w[5].get<int64_t>() &&
                    spaces == w[6].get<std::vector<bool>>();
    if (!ok) {
      ++bad;
      ADD_FAILURE() << "string " << i << " (" << json::dump(Json(s)) << "): python "
                    << json::dump(w) << " / deepthin strip " << json::dump(Json(unicode::py_strip(s)))
                    << " lower " << json::dump(Json(unicode::py_lower(s))) << " capitalize "
                    << json::dump(Json(unicode::py_capitalize(s))) << " len " << unicode::py_len(s);
    }
  }
  EXPECT_EQ(bad, 0);
}
