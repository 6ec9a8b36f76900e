// Step benchmark: where one training step's time goes, on random tokens, with device syncs between
// parts.
#pragma once

#include <cstdint>

#include "config/config.h"
#include "util/json.h"

namespace deepthin::train {

struct BenchOptions {
  int64_t steps = 10;  // timed repetitions of each part (the median is reported)
  int64_t warmup = 3;
};

// Times, for micro-batch × seq_len of the config's train section on its device and precision:
// forward (no grad), forward + loss + backward, the fused loss alone (forward + backward), the
// optimizer update, and a whole step (with clipping and zeroing). Returns milliseconds per part,
// tokens/s and MFU of the whole step.
Json bench_step(const config::Config& cfg, const BenchOptions& opts);

}  // namespace deepthin::train
