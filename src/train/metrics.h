// Run records: metrics.jsonl (one JSON object per line: type "train" or "eval") and, optionally,
// TensorBoard event files written directly (TFRecord framing with masked CRC-32C around a
// hand-encoded Event protobuf), so `tensorboard --logdir runs/` shows the curves without any Python
// in the loop.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "util/json.h"

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
