// Sampling from a decoder with a KV cache in which every *effective* layer has its own slot, so
// that layer-shared models decode correctly (a shared block runs twice and keeps two sets of
// keys/values).
#pragma once

#include <cstdint>
#include <vector>

#include "model/decoder.h"
#include "train/precision.h"

namespace deepthin::eval {

struct SampleOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.8;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  uint64_t seed = 0;
  int64_t stop_id = -1;   // stop after emitting this id (EOS); -1: never
  bool use_cache = true;  // false recomputes the whole prefix each step (the reference path)
  train::Precision precision = train::Precision::fp32;
};

// Returns the new tokens only (not the prompt). Stops at max_new_tokens, stop_id or the context
// limit.
std::vector<int64_t> generate(model::Decoder& m, const std::vector<int64_t>& prompt,
                              const SampleOptions& opts);

}  // namespace deepthin::eval
