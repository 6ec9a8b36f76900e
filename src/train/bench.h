// Step benchmark: where one training step's time goes, on random tokens, with device syncs between
// parts. The whole step is train::TrainStep, the unit `deepthin train` runs.
#pragma once

#include <cstdint>

#include "config/config.h"
#include "util/json_io.h"

namespace deepthin::train {

struct BenchOptions {
  int64_t steps = 10;  // timed repetitions of each part (the median is reported)
  int64_t warmup = 3;
  int64_t profile_steps = 0;  // > 0: profile that many steps and report GPU time by kernel family
  bool step_only = false;     // time only the whole step (skip the parts)
};

// Times, for micro-batch × seq_len of the config's train section on its device and precision:
// forward (no grad), forward + loss + backward, the fused loss alone (forward + backward), the
// optimizer update, and a whole step (TrainStep: backward, clipping, AdamW, zeroing); with
// kd.teacher, the step distills and the teacher's forward and the KD loss are timed too. Returns
// milliseconds per part, tokens/s, MFU and the step's peak memory.
Json bench_step(const config::Config& cfg, const BenchOptions& opts);

}  // namespace deepthin::train
