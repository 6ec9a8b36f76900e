// Run records: the metrics window (what one log line reports), metrics.jsonl (one JSON object per
// line: type "train" or "eval") and, optionally, TensorBoard event files written directly (TFRecord
// framing with masked CRC-32C around a hand-encoded Event protobuf), so `tensorboard --logdir
// runs/` shows the curves without any Python in the loop.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "util/json_io.h"

namespace deepthin::train {

class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::filesystem::path& dir);
  void scalar(const std::string& tag, double value, int64_t step);
  void flush();

 private:
  void record(const std::string& data);
  std::ofstream out_;
};

// The steps between two log lines: their tokens, their summed losses (skipped steps count as
// steps but add no loss) and the window's wall time. Evaluation and checkpoints are excluded from
// the time, so tokens/s measures training steps only.
class MetricsWindow {
 public:
  using Clock = std::chrono::steady_clock;
  MetricsWindow() { reset(); }
  void add(int64_t step_tokens, bool applied, double loss, double ce, double kd);
  void exclude(Clock::duration pause) { start_ += pause; }
  void reset();
  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  int64_t tokens() const { return tokens_; }
  int64_t steps() const { return steps_; }
  // Means over the window's steps.
  double loss() const { return loss_ / static_cast<double>(std::max<int64_t>(1, steps_)); }
  double ce() const { return ce_ / static_cast<double>(steps_); }
  double kd() const { return kd_ / static_cast<double>(steps_); }

 private:
  Clock::time_point start_;
  int64_t tokens_ = 0, steps_ = 0;
  double loss_ = 0, ce_ = 0, kd_ = 0;
};

class MetricsLog {
 public:
  // Appends to run_dir/metrics.jsonl; on resume, lines past `resume_step` (written by the
  // interrupted run after its last checkpoint) are dropped first.
  MetricsLog(const std::filesystem::path& run_dir, bool tensorboard, int64_t resume_step);
  // Writes one line; every numeric member other than "step" also goes to TensorBoard as type/name.
  void write(const Json& record);
  void flush();

 private:
  std::ofstream out_;
  std::unique_ptr<TensorBoardWriter> tb_;
};

// CRC-32C (Castagnoli), as TFRecord framing uses.
uint32_t crc32c(const void* data, size_t n);

}  // namespace deepthin::train
