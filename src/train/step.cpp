// The training step (step.h): the eager step, the device step without host syncs, and its capture
// as one CUDA graph, with the choice among them.
#include "train/step.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <cstdlib>

#include "kernels/fused.h"
#include "train/device_info.h"
#include "train/kd.h"
#include "train/loss.h"
#include "util/error.h"
#include "util/fault.h"
#include "util/log.h"

#ifdef DEEPTHIN_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace deepthin::train {

#ifdef DEEPTHIN_CUDA
struct TrainStep::Graph {
  explicit Graph(const c10::Device& d)
      : stream(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, d.index())) {}
  c10::cuda::CUDAStream stream;  // graphs are captured on a stream other than the default one
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  at::Tensor tokens;  // [grad_accum, B, T + 1]: the batch is copied here before each replay
  at::Tensor teacher_ids, teacher_logp;  // [grad_accum, B, T, k] with kd.cache, likewise
  at::Tensor lr;                         // 0-d fp32, filled before each replay
  at::Tensor stats;                      // the captured step's [loss, grad norm, found_inf]
  int64_t warm = 0;  // device steps run so far on this stream (libraries initialise lazily)
};
#else
struct TrainStep::Graph {};
#endif

namespace {

constexpr int64_t kWarmSteps = 2;  // device steps before the capture

// The L2 norm of all defined gradients, on their device; the gradients into *grads when given.
at::Tensor global_grad_norm(const std::vector<at::Tensor>& params,
                            std::vector<at::Tensor>* grads = nullptr) {
  std::vector<at::Tensor> g;
  for (const auto& p : params)
    if (p.grad().defined()) g.push_back(p.grad());
  auto norm = at::linalg_vector_norm(at::stack(at::_foreach_norm(g, 2)), 2);
  if (grads) *grads = std::move(g);
  return norm;
}

// Why the device launch (or with need_gpu the graph launch) cannot run this step ("" when it can).
std::string graph_obstacle(const TrainStep::Parts& p, bool need_gpu = true) {
  if (need_gpu && !p.device.is_cuda()) return "the device is " + p.device.str() + ", not a GPU";
#ifndef DEEPTHIN_CUDA
  if (need_gpu) return "this build has no CUDA";
#endif
  if (p.comm->size() > 1 || p.dp)
    return "the step is data-parallel over " + std::to_string(p.comm->size()) +
           " ranks (collectives are not captured yet)";
  if (p.teacher && p.teacher->device != p.device)
    return "distillation's teacher runs on " + p.teacher->device.str() + ", the student on " +
           p.device.str();
  if (std::getenv("DEEPTHIN_FAULT")) return "DEEPTHIN_FAULT's test hooks run on the host";
  return "";
}

}  // namespace

const char* launch_name(Launch l) {
  switch (l) {
    case Launch::eager:
      return "eager";
    case Launch::device:
      return "device";
    case Launch::graph:
      return "cuda-graph";
  }
  return "?";
}

void configure_for_training(model::Decoder& model, const config::TrainConfig& tc) {
  kernels::configure_attention_from_env();
  kernels::set_mode(tc.kernels == config::KernelChoice::reference ? kernels::Mode::reference
                                                                  : kernels::Mode::auto_);
  kernels::set_recompute_swiglu(tc.swiglu_recompute);
  const size_t L = model->schedule().size();
  std::vector<bool> plan;
  switch (tc.activation_checkpointing) {
    case config::RecomputeChoice::none:
      break;
    case config::RecomputeChoice::full:
      plan.assign(L, true);
      break;
    case config::RecomputeChoice::selective: {
      const auto every = static_cast<size_t>(tc.activation_checkpointing_every);
      plan.assign(L, false);
      for (size_t i = every - 1; i < L; i += every) plan[i] = true;
      break;
    }
  }
  model->set_recompute(plan);
}

BatchLoss batch_loss(model::Decoder& m, const StepBatch& batch, const c10::Device& device,
                     Precision precision, int64_t chunk, Teacher* teacher,
                     const config::KdConfig* kd, double* teacher_ms) {
  auto x = batch.tokens.to(device, /*non_blocking=*/true);
  const int64_t T = x.size(1) - 1;
  at::Tensor hidden;
  {
    AutocastScope autocast(device, precision);
    hidden = m->hidden_states(x.narrow(1, 0, T));
  }
  const auto compute = precision == Precision::bf16 ? at::kBFloat16 : at::kFloat;
  auto targets = x.narrow(1, 1, T).reshape({-1});
  if (batch.teacher_ids.defined()) {
    if (!kd) fail_runtime("batch_loss: kd.cache rows without the kd section");
    const int64_t k = batch.teacher_ids.size(-1);
    auto parts = distillation_loss_topk(hidden.reshape({-1, hidden.size(-1)}), m->output_weight(),
                                        batch.teacher_ids.reshape({-1, k}).to(device),
                                        batch.teacher_logp.reshape({-1, k}).to(device), targets,
                                        kd_loss_options(*kd, chunk, compute, device));
    return {parts.total, parts.ce, parts.kd};
  }
  if (teacher) {
    at::Tensor th;
    {
      torch::NoGradGuard no_grad;
      if (teacher_ms) synchronize(teacher->device);
      const auto t0 = std::chrono::steady_clock::now();
      th = teacher->model->hidden_states(x.narrow(1, 0, T).to(teacher->device));
      th = th.reshape({-1, th.size(-1)}).to(device);
      if (teacher_ms) {
        synchronize(teacher->device);
        *teacher_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count();
      }
    }
    const KdLossOptions ko = kd_loss_options(*kd, chunk, compute, device);
    auto parts = distillation_loss(hidden.reshape({-1, hidden.size(-1)}), m->output_weight(), th,
                                   teacher->model->output_weight().to(device), targets, ko);
    return {parts.total, parts.ce, parts.kd};
  }
  LmLossOptions lo;
  lo.chunk_rows = chunk;
  lo.compute_dtype = compute;
  return {
      lm_head_cross_entropy(hidden.reshape({-1, hidden.size(-1)}), m->output_weight(), targets, lo),
      {},
      {}};
}

TrainStep::TrainStep(Parts parts, const config::TrainConfig& tc)
    : p_(std::move(parts)),
      grad_accum_(tc.grad_accum_steps),
      loss_chunk_(tc.loss_chunk_tokens),
      grad_clip_(tc.grad_clip) {
  for (const auto& item : p_.model->named_parameters()) params_.push_back(item.value());
  const std::string obstacle = graph_obstacle(p_);
  switch (tc.cuda_graph) {
    case config::GraphChoice::off:
      break;
    case config::GraphChoice::auto_:
      if (obstacle.empty()) set_launch(Launch::graph);
      break;
    case config::GraphChoice::on:
      if (!obstacle.empty())
        fail_input("train.cuda_graph is 'on', but " + obstacle +
                   "; use 'auto' (capture where possible) or 'off'");
      set_launch(Launch::graph);
      break;
  }
}

TrainStep::~TrainStep() = default;

void TrainStep::set_launch(Launch l) {
  if (l != Launch::eager) {
    const std::string obstacle = graph_obstacle(p_, /*need_gpu=*/l == Launch::graph);
    if (!obstacle.empty())
      fail_input(std::string("the ") + launch_name(l) + " step cannot run: " + obstacle);
  }
  graph_.reset();
#ifdef DEEPTHIN_CUDA
  if (l == Launch::graph) graph_ = std::make_unique<Graph>(p_.device);
#endif
  launch_ = l;
}

void TrainStep::drop_grads() {
  for (const auto& p : params_) p.mutable_grad().reset();
}

StepResult TrainStep::run(const std::function<StepBatch()>& next_batch, double lr, int64_t step,
                          bool stop_requested, bool time_teacher) {
  auto r = launch_ == Launch::eager ? run_eager(next_batch, lr, step, stop_requested, time_teacher)
                                    : run_on_device(next_batch, lr, stop_requested, time_teacher);
  // The weights moved where no version counter sees it (a graph replay, NCCL gathers): the fused
  // path's weight copies are made again at the next forward.
  kernels::weights_changed();
  return r;
}

TrainStep::MicroSums TrainStep::forward_backward(const std::function<StepBatch(int64_t)>& batch,
                                                 int64_t step, bool time_teacher) {
  const double accum = static_cast<double>(grad_accum_);
  MicroSums sums;
  for (int64_t micro = 0; micro < grad_accum_; ++micro) {
    if (p_.dp) p_.dp->begin_backward(micro + 1 == grad_accum_);
    auto parts = batch_loss(p_.model, batch(micro), p_.device, p_.precision, loss_chunk_,
                            p_.teacher, p_.kd, time_teacher && micro == 0 ? &teacher_ms_ : nullptr);
    auto loss = parts.total;
    if (fault_at("nan_at", step)) loss = loss * NAN;  // test hook
    (loss / accum).backward();
    auto part = loss.detach().to(at::kDouble) / accum;
    sums.total = micro == 0 ? part : sums.total + part;
    if (distilling()) {
      auto c = parts.ce.to(at::kDouble) / accum, k = parts.kd.to(at::kDouble) / accum;
      sums.ce = micro == 0 ? c : sums.ce + c;
      sums.kd = micro == 0 ? k : sums.kd + k;
    }
  }
  return sums;
}

at::Tensor TrainStep::device_body(const std::vector<StepBatch>& micro_batches,
                                  const at::Tensor& lr) {
  const MicroSums sums =
      forward_backward([&](int64_t micro) { return micro_batches[micro]; }, /*step=*/0,
                       /*time_teacher=*/false);
  const at::Tensor& loss_sum = sums.total;
  torch::NoGradGuard no_grad;
  auto norm = global_grad_norm(params_);
  auto found_inf =
      at::logical_not(at::logical_and(at::isfinite(norm), at::isfinite(loss_sum))).to(at::kFloat);
  // Clipping as AdamW's gradient divisor: (norm + 1e-6) / clip where the norm exceeds clip.
  std::optional<at::Tensor> scale;
  if (grad_clip_ > 0)
    scale = at::where(norm > grad_clip_, (norm + 1e-6) / grad_clip_, at::ones_like(norm));
  p_.optimizer->step_on_device(lr, scale, found_inf);
  std::vector<at::Tensor> stats{loss_sum, norm.to(at::kDouble), found_inf.to(at::kDouble)};
  if (distilling()) {  // distillation's parts, for the log
    stats.push_back(sums.ce);
    stats.push_back(sums.kd);
  }
  return at::stack(stats);
}

void TrainStep::note_launch() {
  if (last_sync_ == std::chrono::steady_clock::time_point{}) return;
  host_gap_s_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - last_sync_).count();
  ++host_gaps_;
}

StepResult TrainStep::finish_device(const at::Tensor& stats, bool stop_requested) {
  auto host = stats.to(at::kCPU);  // the step's one synchronisation
  last_sync_ = std::chrono::steady_clock::now();
  auto a = host.accessor<double, 1>();
  StepResult r;
  r.loss = a[0];
  r.grad_norm = a[1];
  r.applied = a[2] == 0.0;
  if (host.size(0) == 5) {
    r.ce = a[3];
    r.kd = a[4];
  }
  r.stop = stop_requested;
  if (r.applied) p_.optimizer->count_step();
  return r;
}

double TrainStep::time_teacher_forward(const at::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  auto x = tokens.to(p_.teacher->device);
  synchronize(p_.teacher->device);
  const auto t0 = std::chrono::steady_clock::now();
  p_.teacher->model->hidden_states(x.narrow(1, 0, x.size(1) - 1));
  synchronize(p_.teacher->device);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

StepResult TrainStep::run_on_device(const std::function<StepBatch()>& next_batch, double lr,
                                    bool stop_requested, bool time_teacher) {
  std::vector<StepBatch> batches;
  for (int64_t micro = 0; micro < grad_accum_; ++micro) batches.push_back(next_batch());
  // The teacher's forward runs inside the step: it is timed once, on its own, for the log.
  if (time_teacher && p_.teacher && !std::isfinite(teacher_ms_))
    teacher_ms_ = time_teacher_forward(batches.front().tokens);
  if (launch_ == Launch::device) {
    for (auto& b : batches) {
      b.tokens = b.tokens.to(p_.device, /*non_blocking=*/true);
      if (b.teacher_ids.defined()) {
        b.teacher_ids = b.teacher_ids.to(p_.device, /*non_blocking=*/true);
        b.teacher_logp = b.teacher_logp.to(p_.device, /*non_blocking=*/true);
      }
    }
    auto lr_t = at::full({}, lr, at::TensorOptions().dtype(at::kFloat).device(p_.device));
    note_launch();
    auto stats = device_body(batches, lr_t);
    drop_grads();
    return finish_device(stats, stop_requested);
  }
#ifdef DEEPTHIN_CUDA
  Graph& g = *graph_;
  // The capture stream waits for what is already queued on the current one (evaluation, loads).
  at::cuda::CUDAEvent ready;
  ready.record(c10::cuda::getCurrentCUDAStream(p_.device.index()));
  ready.block(g.stream);
  c10::cuda::CUDAStreamGuard on_capture_stream(g.stream);
  const std::vector<StepBatch> inputs = stage_graph_inputs(batches);
  g.lr.fill_(lr);
  if (g.warm < kWarmSteps) {
    ++g.warm;
    auto stats = device_body(inputs, g.lr);
    drop_grads();
    return finish_device(stats, stop_requested);
  }
  if (!g.graph) capture_graph(inputs);
  note_launch();
  g.graph->replay();
  return finish_device(g.stats, stop_requested);
#else
  fail_runtime("the CUDA-graph step needs a CUDA build");
#endif
}

#ifdef DEEPTHIN_CUDA
std::vector<StepBatch> TrainStep::stage_graph_inputs(const std::vector<StepBatch>& batches) {
  Graph& g = *graph_;
  const auto shape = batches.front().tokens.sizes();
  for (const auto& b : batches)
    if (b.tokens.sizes() != shape)
      fail_runtime("the CUDA-graph step needs micro-batches of one shape; got " +
                   c10::str(b.tokens.sizes()) + " after " + c10::str(shape));
  const auto on_device = at::TensorOptions().device(p_.device);
  if (!g.tokens.defined() || g.tokens.size(1) != shape[0] || g.tokens.size(2) != shape[1] ||
      g.tokens.scalar_type() != batches.front().tokens.scalar_type()) {
    g.graph.reset();  // a new shape: warm up and capture again
    g.warm = 0;
    g.tokens = at::empty({grad_accum_, shape[0], shape[1]},
                         on_device.dtype(batches.front().tokens.scalar_type()));
    g.lr = at::empty({}, on_device.dtype(at::kFloat));
  }
  // kd.cache's rows, likewise in static buffers.
  const bool cached = batches.front().teacher_ids.defined();
  if (cached && (!g.teacher_ids.defined() ||
                 g.teacher_ids[0].sizes() != batches.front().teacher_ids.sizes())) {
    g.graph.reset();
    g.warm = 0;
    auto shape_k = batches.front().teacher_ids.sizes().vec();
    shape_k.insert(shape_k.begin(), grad_accum_);
    g.teacher_ids = at::empty(shape_k, on_device.dtype(at::kLong));
    g.teacher_logp = at::empty(shape_k, on_device.dtype(at::kFloat));
  }
  std::vector<StepBatch> inputs;
  for (int64_t micro = 0; micro < grad_accum_; ++micro) {
    g.tokens[micro].copy_(batches[micro].tokens, /*non_blocking=*/true);
    inputs.emplace_back(g.tokens[micro]);
    if (!cached) continue;
    g.teacher_ids[micro].copy_(batches[micro].teacher_ids, /*non_blocking=*/true);
    g.teacher_logp[micro].copy_(batches[micro].teacher_logp, /*non_blocking=*/true);
    inputs.back().teacher_ids = g.teacher_ids[micro];
    inputs.back().teacher_logp = g.teacher_logp[micro];
  }
  return inputs;
}

void TrainStep::capture_graph(const std::vector<StepBatch>& inputs) {
  Graph& g = *graph_;
  // The gradients are born inside the capture (in its memory pool) and stay: every replay
  // writes them again. The eager steps' cached blocks go back first, so that the graph's pool
  // does not sit beside them.
  const auto t_capture = std::chrono::steady_clock::now();
  drop_grads();
  g.stream.synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  g.graph = std::make_unique<at::cuda::CUDAGraph>();
  g.graph->capture_begin();
  try {
    g.stats = device_body(inputs, g.lr);
  } catch (const std::exception& e) {
    try {
      g.graph->capture_end();
    } catch (const std::exception&) {
    }
    g.graph.reset();
    g.stats = at::Tensor();
    drop_grads();
    fail_runtime(std::string("capturing the training step as a CUDA graph failed: ") + e.what() +
                 "\nSet train.cuda_graph: off to run the step eagerly.");
  }
  g.graph->capture_end();
  capture_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_capture).count();
  log::info("training step captured as one CUDA graph in {} s", log::fixed(capture_s_, 2));
}
#endif

StepResult TrainStep::run_eager(const std::function<StepBatch()>& next_batch, double lr,
                                int64_t step, bool stop_requested, bool time_teacher) {
  dist::Comm& comm = *p_.comm;
  const auto stat_opts = at::TensorOptions().dtype(at::kDouble).device(comm.device());
  auto sums = forward_backward([&](int64_t) { return next_batch(); }, step, time_teacher);
  at::Tensor loss_sum = sums.total, ce_sum = sums.ce, kd_sum = sums.kd;
  if (!distilling()) ce_sum = kd_sum = at::zeros({}, stat_opts);
  if (p_.dp) p_.dp->finish_gradients();

  // One small all-reduce: the mean loss over ranks and whether any rank was asked to stop (so that
  // all stop at the same step).
  auto stats = at::stack({loss_sum.to(comm.device()),
                          at::scalar_tensor(stop_requested ? 1.0 : 0.0, stat_opts),
                          ce_sum.to(comm.device()), kd_sum.to(comm.device())});
  comm.allreduce(stats, c10d::ReduceOp::SUM, "loss all-reduce");
  stats = stats.cpu();
  const double world = comm.size();
  StepResult r;
  r.loss = stats[0].item<double>() / world;
  r.stop = stats[1].item<double>() > 0;
  r.ce = stats[2].item<double>() / world;
  r.kd = stats[3].item<double>() / world;

  // Global L2 norm of all gradients, clipped in place to grad_clip (> 0).
  std::vector<at::Tensor> grads;
  r.grad_norm = global_grad_norm(params_, &grads).item<double>();
  r.applied = std::isfinite(r.grad_norm) && std::isfinite(r.loss);
  if (r.applied) {
    if (grad_clip_ > 0 && r.grad_norm > grad_clip_)
      at::_foreach_mul_(grads, grad_clip_ / (r.grad_norm + 1e-6));
    p_.optimizer->step(lr);
    if (p_.dp) p_.dp->gather_parameters();
  }
  if (p_.dp) {
    p_.dp->zero_grad();  // the gradients are views into the all-reduce buffer
  } else {
    // Dropped rather than zeroed: the next backward hands its gradients over without a copy,
    // an add or a memset per parameter.
    for (const auto& p : params_) p.mutable_grad().reset();
  }
  return r;
}

}  // namespace deepthin::train
