// The sections a training run reads: run, data, train, optimizer, schedule, eval, checkpoint, log.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/schema.h"

namespace deepthin::config {

struct RunConfig : Section {
  std::string name;           // "" → the config file's stem
  std::string root = "runs";  // runs land in <root>/<name>/
  void visit(Visitor& v) override;
  void check(const Checker& c) const override;  // name: one path component
};

// One source of a weighted mixture (data.sources).
struct DataSource : Section {
  std::string name;      // a single path component: names the source in logs, metrics, checkpoints
  std::string path;      // prepared directory, shard glob (llm.c files too) or one shard
  std::string val_path;  // "" → the prepared directory's val split (if any)
  double weight = 1.0;   // share of the training tokens, relative to the other sources' weights
  void visit(Visitor& v) override;
  void check(const Checker& c) const override;
};

struct DataConfig;
// The sources a run reads: data.sources, or data.path (with data.val_path) as one unnamed source.
std::vector<DataSource> data_sources(const DataConfig& d);

struct DataConfig : Section {
  std::string path;      // prepared directory, shard glob (llm.c files too) or one shard
  std::string val_path;  // "" → the prepared directory's val split (if any)
  std::string
      tokenizer;  // SentencePiece .model; checked against the manifest, copied into checkpoints
  int64_t prefetch = 2;
  std::vector<DataSource> sources;    // a weighted mixture instead of path
  bool allow_mixture_change = false;  // resume a run under other sources or weights
  void visit(Visitor& v) override;
  void check(const Checker& c) const override;
};

enum class PrecisionChoice { auto_, bf16, fp32 };
inline constexpr std::array<std::string_view, 3> kPrecisions{"auto", "bf16", "fp32"};

enum class KernelChoice { fused, reference };
inline constexpr std::array<std::string_view, 2> kKernelChoices{"fused", "reference"};

enum class RecomputeChoice { none, selective, full };
inline constexpr std::array<std::string_view, 3> kRecomputeChoices{"none", "selective", "full"};

enum class GraphChoice { auto_, on, off };
inline constexpr std::array<std::string_view, 3> kGraphChoices{"auto", "on", "off"};

struct TrainConfig : Section {
  int64_t micro_batch_size = 16;
  int64_t grad_accum_steps = 1;
  int64_t seq_len = 0;     // 0 → model.max_seq_len
  int64_t max_steps = 0;   // optimizer steps; 0 → derived from max_tokens
  int64_t max_tokens = 0;  // 0 → max_steps rules
  int64_t seed = 1234;
  PrecisionChoice precision = PrecisionChoice::auto_;
  std::string device = "auto";
  double grad_clip = 1.0;  // 0 disables clipping (the norm is still measured)
  int64_t max_bad_steps = 5;
  int64_t loss_chunk_tokens = 4096;            // rows of logits alive at once in the LM-head loss
  double peak_tflops = 0;                      // per device, for MFU; 0 → known GPU table
  KernelChoice kernels = KernelChoice::fused;  // fused CUDA path on GPUs, or the plain layers
  RecomputeChoice activation_checkpointing = RecomputeChoice::none;
  int64_t activation_checkpointing_every = 2;   // selective: every Nth effective layer
  GraphChoice cuda_graph = GraphChoice::auto_;  // capture the whole step as one CUDA graph
  bool swiglu_recompute = false;                // fused path: recompute silu(gate)·up in backward
  void visit(Visitor& v) override;
};

struct OptimizerConfig : Section {
  double lr = 2e-3;
  std::vector<double> betas = {0.9, 0.95};
  double eps = 1e-8;
  double weight_decay = 0.1;
  std::vector<std::string> no_decay = {"norm", "bias"};
  void visit(Visitor& v) override;
};

enum class ScheduleType { cosine, linear, wsd, constant };
inline constexpr std::array<std::string_view, 4> kSchedules{"cosine", "linear", "wsd", "constant"};

struct ScheduleConfig : Section {
  ScheduleType type = ScheduleType::cosine;
  int64_t warmup_steps = 1000;
  double min_lr_ratio = 0.1;
  double decay_fraction = 0.2;  // wsd: share of the run spent decaying
  void visit(Visitor& v) override;
};

struct EvalConfig : Section {
  int64_t every = 1000;  // steps; 0 → only at the end
  int64_t batches = 20;
  // Zero-shot tasks on the live model while training (deepthin eval's tasks).
  std::vector<std::string> tasks;
  int64_t tasks_every = 0;  // steps; 0 → only at the end
  int64_t tasks_items = 0;  // items per task; 0 → all
  std::string tasks_data;   // directory of the task files
  void visit(Visitor& v) override;
  void check(const Checker& c) const override;
};

struct CheckpointConfig : Section {
  int64_t every = 1000;  // steps; 0 → only at the end
  int64_t keep_last = 3;
  bool at_end = true;  // checkpoint when the run ends (off for benchmarks)
  bool async = true;   // write in a background thread from a host snapshot
  void visit(Visitor& v) override;
};

enum class KdLossType { forward_kl, reverse_kl, symmetric_kl, js };
inline constexpr std::array<std::string_view, 4> kKdLosses{"forward_kl", "reverse_kl",
                                                           "symmetric_kl", "js"};

struct KdConfig : Section {
  std::string teacher;  // "" → no distillation
  KdLossType loss = KdLossType::forward_kl;
  double temperature = 1.0;
  double ratio = 1.0;  // (1 − ratio)·CE + ratio·KD
  std::string device;  // "" → the student's device
  std::string cache;   // "" → run the teacher; else its top-k cache (train/kd_cache.h)
  void visit(Visitor& v) override;
};

enum class DistBackend { auto_, nccl, gloo };
inline constexpr std::array<std::string_view, 3> kDistBackends{"auto", "nccl", "gloo"};

struct DistributedConfig : Section {
  DistBackend backend = DistBackend::auto_;  // auto: NCCL on CUDA, gloo on the CPU
  double bucket_mb = 25;                     // gradient all-reduce bucket size
  bool zero1 = false;                        // shard AdamW state across ranks
  int64_t timeout_s = 600;                   // a collective that waits longer fails
  void visit(Visitor& v) override;
};

struct LogConfig : Section {
  int64_t every = 10;
  bool tensorboard = true;
  void visit(Visitor& v) override;
};

}  // namespace deepthin::config
