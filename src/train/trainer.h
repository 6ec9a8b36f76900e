// The training loop: config in, run directory out (resolved config, log, metrics, checkpoints).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <filesystem>
#include <optional>
#include <string>

#include "config/config.h"
#include "data/loader.h"
#include "model/decoder.h"

namespace deepthin::train {

struct TrainOptions {
  std::filesystem::path run_dir;  // where everything lands
  bool resume = false;            // continue from the newest valid checkpoint in run_dir
  bool resume_fallback = false;   // if the newest is corrupt, take the one before
  int64_t until_step = 0;  // stop (checkpointing) once this step is reached; 0 = run to the end
  // Zero-shot evaluation of the live model (eval.tasks), supplied by the caller (the CLI, which
  // sits above the trainer): returns {task: {acc, acc_norm, …}, …, "average": {…}}.
  std::function<Json(model::Decoder&)> evaluate_tasks;
};

// `deepthin train --dry-run`: what a run of `world_size` ranks would read of each source (the
// datasets are opened and checked; nothing is written).
std::vector<data::SourcePlan> plan_data(const config::Config& cfg, int world_size);

struct TrainResult {
  int64_t steps = 0;
  int64_t tokens = 0;
  double final_loss = 0;
  double val_loss = 0;  // NaN when there is no validation data
  bool interrupted = false;
  int rank = 0;  // this process in a distributed run (only rank 0 reports)
  // Tokens read from each source since the run began (all ranks), in the config's order; one
  // unnamed entry for data.path.
  std::vector<std::pair<std::string, int64_t>> tokens_by_source;
  double goodput = NAN;  // time stepping ÷ wall time from the first step
};

// Resolves the run directory for a config: <run.root>/<run.name or the config file's stem>.
std::filesystem::path run_directory(const config::Config& cfg,
                                    const std::filesystem::path& config_path);

TrainResult train(const config::Config& cfg, const TrainOptions& opts);

}  // namespace deepthin::train
