// The learning-rate schedule (schedule.h).
#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace deepthin::train {

double learning_rate(const config::ScheduleConfig& cfg, double peak, int64_t step, int64_t total) {
  const int64_t warm = cfg.warmup_steps;
  if (step < warm) return peak * static_cast<double>(step + 1) / static_cast<double>(warm);
  const double floor = cfg.min_lr_ratio * peak;
  const int64_t span = std::max<int64_t>(1, total - 1 - warm);
  const double p =
      std::clamp(static_cast<double>(step - warm) / static_cast<double>(span), 0.0, 1.0);
  switch (cfg.type) {
    case config::ScheduleType::cosine:
      return floor + (peak - floor) * 0.5 * (1.0 + std::cos(M_PI * p));
    case config::ScheduleType::linear:
      return peak - (peak - floor) * p;
    case config::ScheduleType::wsd: {
      const double stable = 1.0 - cfg.decay_fraction;
      if (p <= stable) return peak;
      return peak - (peak - floor) * (p - stable) / std::max(cfg.decay_fraction, 1e-12);
    }
    case config::ScheduleType::constant:
      return peak;
  }
  return peak;
}

}  // namespace deepthin::train
