// Learning rate as a function of the optimizer step.
#pragma once

#include <cstdint>

#include "config/train_config.h"

namespace deepthin::train {

// Step s (0-based) of total: linear warmup to peak over warmup_steps (step s uses (s+1)/warmup),
// then cosine or linear decay to min_lr_ratio·peak at the last step, warmup-stable-decay, or
// constant.
double learning_rate(const config::ScheduleConfig& cfg, double peak, int64_t step, int64_t total);

}  // namespace deepthin::train
