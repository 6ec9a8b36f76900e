// The YAML config loader: a config file (anchors, aliases, base: chains, every section's keys),
// through the same path as `deepthin train CONFIG`.
#include <cstdint>

#include "config/config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto path = deepthin::fuzz::write_file("config.yaml", data, size);
  deepthin::fuzz::expect_clean([&] { deepthin::config::load_config(path); });
  return 0;
}
