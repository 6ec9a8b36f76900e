// Token shards (deepthin and llm.c headers) and prepared directories (manifest.json): the first
// byte picks which; the rest is the shard, or the manifest beside a small valid shard.
#include <cstdint>
#include <vector>

#include "data/shard.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace deepthin;
  if (size < 1) return 0;
  const bool manifest = data[0] & 1;
  ++data;
  --size;
  fuzz::expect_clean([&] {
    std::shared_ptr<data::TokenDataset> ds;
    if (!manifest) {
      auto p = fuzz::write_file("shard.bin", data, size);
      ds = data::TokenDataset::open(p.string(), "train");
    } else {
      static bool written = false;
      if (!written) {
        data::write_shard(fuzz::scratch() / "train_000000.bin", std::vector<uint32_t>(300, 7), 2);
        data::write_shard(fuzz::scratch() / "val_000000.bin", std::vector<uint32_t>(100, 5), 2);
        written = true;
      }
      fuzz::write_file("manifest.json", data, size);
      ds = data::TokenDataset::open(fuzz::scratch().string(), "train");
    }
    std::vector<int64_t> window(9);
    const int64_t n = ds->num_windows(8);
    for (int64_t w : {int64_t{0}, n / 2, n - 1})
      if (w >= 0 && w < n) ds->read_window(w, 8, window.data());
    (void)ds->max_token_id();
  });
  return 0;
}
