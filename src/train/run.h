// The setup of a training run: everything train() needs, assembled in the order the paper's recipe
// reads — the process (launch, device, process group, run directory), the data, the model and its
// optimizer (fp32 master weights, data parallel when there are several ranks), the teacher when
// distilling, and the state restored from a checkpoint when resuming. Each part is one function in
// run.cpp; setup_run calls them in order.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>

#include "config/config.h"
#include "data/loader.h"
#include "data/shard.h"
#include "dist/comm.h"
#include "dist/data_parallel.h"
#include "dist/launch.h"
#include "model/decoder.h"
#include "train/checkpoint.h"
#include "train/checkpoint_writer.h"
#include "train/kd_cache.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/precision.h"
#include "train/teacher.h"
#include "train/trainer.h"
#include "util/fs.h"

namespace deepthin::train {

struct Run {
  const config::Config* cfg = nullptr;
  std::filesystem::path dir;  // the run directory
  // Process.
  dist::LaunchEnv env;
  c10::Device device{c10::kCPU};
  Precision precision = Precision::fp32;
  std::shared_ptr<dist::Comm> comm;
  std::unique_ptr<DirLock> lock;  // rank 0: one writer per run directory
  // Rank 0's checkpoint writer (asynchronous with checkpoint.async). Declared after the lock, so
  // that it finishes a write in progress before the lock is released.
  std::unique_ptr<CheckpointWriter> checkpoints;
  // Data.
  std::shared_ptr<data::TokenDataset> train_ds, val_ds;  // the first source's; val_ds may be null
  // Every source of the mixture (one, unnamed, for data.path), in the config's order.
  struct Source {
    std::string name;
    double weight = 1.0;
    std::shared_ptr<data::TokenDataset> train, val;  // val may be null
  };
  std::vector<Source> sources;
  std::unique_ptr<data::Loader> loader;
  int64_t tokens_per_step = 0;  // all ranks, all micro-batches
  int64_t total_steps = 0;
  // Model and optimizer.
  model::Decoder model{nullptr};
  std::unique_ptr<dist::DataParallel> dp;  // null in a world of one
  std::unique_ptr<AdamW> optimizer;
  std::optional<Teacher> teacher;     // distillation only
  std::unique_ptr<KdCache> kd_cache;  // distillation from kd.cache (no teacher then)
  bool distilling() const { return teacher || kd_cache; }
  // Progress: restored on resume, saved in checkpoints.
  TrainerState state;
  std::unique_ptr<MetricsLog> metrics;  // rank 0 only
  // Where the wall clock went besides training steps: the goodput line at the end of a run.
  struct Goodput {
    double startup_s = 0;     // from train() to the first step
    double checkpoint_s = 0;  // steps waiting for checkpoints (snapshot, or a previous write)
    int64_t checkpoints = 0;
    double eval_s = 0;       // validation and zero-shot tasks
    double data_wait_s = 0;  // waiting for the loader
    double capture_s = 0;    // capturing the step as a CUDA graph
    // Device and graph launches: the host's time from a step's synchronisation to the next
    // launch (part of the steps' time, not lost beside it), and how many such gaps.
    double host_gap_s = 0;
    int64_t host_gaps = 0;
  } goodput;

  bool rank0() const { return comm->rank() == 0; }
  int world() const { return comm->size(); }
};

// Assembles the run (see the top of this file). Input errors name the key or file at fault.
std::unique_ptr<Run> setup_run(const config::Config& cfg, const TrainOptions& opts);

}  // namespace deepthin::train
