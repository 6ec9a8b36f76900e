// safetensors files (model.safetensors, optimizer.safetensors): header and body.
#include <cstdint>

#include "fuzz_util.h"
#include "storage/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto path = deepthin::fuzz::write_file("model.safetensors", data, size);
  deepthin::fuzz::expect_clean([&] {
    auto f = deepthin::storage::load_safetensors(path);
    for (const auto& [name, t] : f.tensors) (void)t.sum();  // the body is readable to its end
  });
  return 0;
}
