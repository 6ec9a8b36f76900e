// Experiment files of `deepthin sweep`: grids, zips, budgets, teachers, eval blocks; every run's
// config is built and validated. A small valid base config sits beside the input as base.yaml, so
// that inputs naming `base: base.yaml` reach the experiment's own keys.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "sweep/experiment.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool base_written = [] {
    const std::string base =
        "model: {vocab_size: 128, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, "
        "max_seq_len: 32}\ntrain: {micro_batch_size: 2, seq_len: 16, max_steps: 4, device: cpu}\n";
    deepthin::fuzz::write_file("base.yaml", reinterpret_cast<const uint8_t*>(base.data()),
                               base.size());
    return true;
  }();
  (void)base_written;
  auto path = deepthin::fuzz::write_file("experiment.yaml", data, size);
  deepthin::fuzz::expect_clean([&] { deepthin::sweep::load_experiment(path); });
  return 0;
}
