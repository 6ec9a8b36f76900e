// JSON (config.json, manifest.json, trainer_state.json, checksums.json, metrics): parse, and a
// document that parses must dump to text that parses back to the same text.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "util/json_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  deepthin::fuzz::expect_clean([&] {
    auto j = deepthin::json::parse(text, "fuzz.json");
    const std::string once = deepthin::json::dump(j);
    const std::string twice = deepthin::json::dump(deepthin::json::parse(once, "dumped"));
    if (once != twice) __builtin_trap();
  });
  return 0;
}
