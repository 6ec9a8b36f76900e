// One training step as one unit: the micro-batches' forward and backward (with a teacher when
// distilling), the gradient all-reduce, clipping, and the AdamW update. `deepthin train` runs it in
// its loop and `deepthin bench` times it, so the benchmark measures what training runs.
//
// Three ways to launch it:
//   eager  — the reference: the loss and gradient norm are read on the host, which then clips and
//            decides whether to apply the update (any device, data parallelism, distillation);
//   device — the same maths with no host synchronisation before the update: clipping and the
//            non-finite skip are tensors fed to AdamW (grad_scale, found_inf);
//   graph  — the device step captured once as a CUDA graph (after two device steps that warm the
//            libraries up) and replayed: one launch per step instead of thousands. A teacher on
//            the student's GPU is captured with it (its forward and the distillation loss).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "config/config.h"
#include "dist/comm.h"
#include "dist/data_parallel.h"
#include "model/decoder.h"
#include "train/optimizer.h"
#include "train/precision.h"
#include "train/teacher.h"

namespace deepthin::train {

// What the config asks of the model for training: the kernel path (train.kernels) and which layers
// recompute their activations (train.activation_checkpointing).
void configure_for_training(model::Decoder& model, const config::TrainConfig& tc);

// One micro-batch: its token windows and, when distilling from kd.cache, the teacher's top-k rows
// for them (train/kd_cache.h).
struct StepBatch {
  StepBatch() = default;
  StepBatch(at::Tensor t) : tokens(std::move(t)) {}  // NOLINT(google-explicit-constructor)
  at::Tensor tokens;                                 // [B, T + 1] int64
  at::Tensor teacher_ids, teacher_logp;  // [B, T, k] int64 / fp32 with kd.cache, else undefined
};

struct BatchLoss {
  at::Tensor total, ce, kd;  // ce and kd defined only when distilling
};

// Mean next-token loss of a batch of token windows [B, T + 1]: hidden states under autocast, then
// the fused chunked LM-head loss; with a teacher (or the batch's top-k rows of kd.cache), the
// chunked distillation loss instead. teacher_ms, when given, receives the teacher's forward time
// (synchronised).
BatchLoss batch_loss(model::Decoder& m, const StepBatch& batch, const c10::Device& device,
                     Precision precision, int64_t chunk, Teacher* teacher = nullptr,
                     const config::KdConfig* kd = nullptr, double* teacher_ms = nullptr);

struct StepResult {
  double loss = NAN;       // mean over micro-batches and ranks
  double ce = 0, kd = 0;   // distillation parts (means)
  double grad_norm = NAN;  // before clipping
  bool applied = false;    // false: a non-finite loss or gradient, the update was skipped
  bool stop = false;       // some rank was asked to stop
};

enum class Launch { eager, device, graph };
const char* launch_name(Launch l);

class TrainStep {
 public:
  struct Parts {
    model::Decoder model{nullptr};
    AdamW* optimizer = nullptr;
    dist::Comm* comm = nullptr;
    dist::DataParallel* dp = nullptr;  // null: one process
    Teacher* teacher = nullptr;        // null: plain next-token training (or kd.cache)
    const config::KdConfig* kd = nullptr;
    c10::Device device{c10::kCPU};
    Precision precision = Precision::fp32;
    bool teacher_cache = false;  // the batches carry kd.cache's top-k rows: distillation
  };
  TrainStep(Parts parts, const config::TrainConfig& tc);
  ~TrainStep();
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  // One optimizer step over train.grad_accum_steps micro-batches taken from next_batch. `step` is
  // the number this step will have (for the fault-injection hooks); with time_teacher the first
  // micro-batch's teacher forward is timed into teacher_ms() (the device and graph launches time
  // it once, on its own, outside the step).
  StepResult run(const std::function<StepBatch()>& next_batch, double lr, int64_t step,
                 bool stop_requested, bool time_teacher = false);
  double teacher_ms() const { return teacher_ms_; }
  // Seconds spent capturing the step as a CUDA graph (no training happens meanwhile).
  double capture_s() const { return capture_s_; }
  // Device and graph launches: the seconds from each step's one synchronisation to the next step's
  // launch (the GPU idles meanwhile: the trainer's bookkeeping, the next batch, its copy), summed,
  // and how many such gaps.
  double host_gap_s() const { return host_gap_s_; }
  int64_t host_gaps() const { return host_gaps_; }
  const std::vector<at::Tensor>& params() const { return params_; }
  Launch launch() const { return launch_; }
  // Tests: force a launch mode (graph needs CUDA, one process, a teacher on the student's device).
  void set_launch(Launch l);

 private:
  StepResult run_eager(const std::function<StepBatch()>& next_batch, double lr, int64_t step,
                       bool stop_requested, bool time_teacher);
  StepResult run_on_device(const std::function<StepBatch()>& next_batch, double lr,
                           bool stop_requested, bool time_teacher);
  // The teacher's forward over one micro-batch on its own, synchronised (ms).
  double time_teacher_forward(const at::Tensor& tokens);
  // The micro-batches' forward and backward (gradients accumulate); the mean losses, on the device.
  struct MicroSums {
    at::Tensor total, ce, kd;  // ce and kd only when distilling
  };
  MicroSums forward_backward(const std::function<StepBatch(int64_t)>& batch, int64_t step,
                             bool time_teacher);
  // Forward, backward, norm, clipping and update of the micro-batches, all on the device; returns
  // [loss, grad norm, found_inf] (and with a teacher [ce, kd]) as a float64 tensor there.
  at::Tensor device_body(const std::vector<StepBatch>& micro_batches, const at::Tensor& lr);
  StepResult finish_device(const at::Tensor& stats, bool stop_requested);
  // CUDA builds: the micro-batches copied into the graph's static buffers (made again, and the
  // graph dropped, when their shapes change), and the capture of the device step over them.
  std::vector<StepBatch> stage_graph_inputs(const std::vector<StepBatch>& batches);
  void capture_graph(const std::vector<StepBatch>& inputs);
  void drop_grads();
  bool distilling() const { return p_.teacher || p_.teacher_cache; }
  struct Graph;  // CUDA builds: the capture stream, static inputs and the captured graph
  Parts p_;
  Launch launch_ = Launch::eager;
  std::unique_ptr<Graph> graph_;
  int64_t grad_accum_, loss_chunk_;
  double grad_clip_;
  std::vector<at::Tensor> params_;
  double teacher_ms_ = NAN;
  double capture_s_ = 0;
  double host_gap_s_ = 0;
  int64_t host_gaps_ = 0;
  std::chrono::steady_clock::time_point last_sync_{};
  void note_launch();  // adds the gap since the last synchronisation
};

}  // namespace deepthin::train
