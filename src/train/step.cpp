#include "train/step.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>

#include "kernels/fused.h"
#include "train/device_info.h"
#include "train/kd.h"
#include "train/loss.h"
#include "util/fault.h"

namespace deepthin::train {

void configure_for_training(model::Decoder& model, const config::TrainConfig& tc) {
  kernels::configure_attention_from_env();
  kernels::set_mode(tc.kernels == config::KernelChoice::reference ? kernels::Mode::reference
                                                                  : kernels::Mode::auto_);
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

BatchLoss batch_loss(model::Decoder& m, const at::Tensor& tokens, const c10::Device& device,
                     Precision precision, int64_t chunk, Teacher* teacher,
                     const config::KdConfig* kd, double* teacher_ms) {
  auto x = tokens.to(device, /*non_blocking=*/true);
  const int64_t T = x.size(1) - 1;
  at::Tensor hidden;
  {
    AutocastScope autocast(device, precision);
    hidden = m->hidden_states(x.narrow(1, 0, T));
  }
  const auto compute = precision == Precision::bf16 ? at::kBFloat16 : at::kFloat;
  auto targets = x.narrow(1, 1, T).reshape({-1});
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
    KdLossOptions ko;
    ko.loss = kd->loss;
    ko.temperature = kd->temperature;
    ko.ratio = kd->ratio;
    ko.chunk_rows = chunk;
    ko.compute_dtype = compute;
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
}

StepResult TrainStep::run(const std::function<at::Tensor()>& next_batch, double lr, int64_t step,
                          bool stop_requested, bool time_teacher) {
  dist::Comm& comm = *p_.comm;
  const auto stat_opts = at::TensorOptions().dtype(at::kDouble).device(comm.device());
  const double accum = static_cast<double>(grad_accum_);
  at::Tensor loss_sum, ce_sum, kd_sum;
  for (int64_t micro = 0; micro < grad_accum_; ++micro) {
    if (p_.dp) p_.dp->begin_backward(micro + 1 == grad_accum_);
    auto parts = batch_loss(p_.model, next_batch(), p_.device, p_.precision, loss_chunk_,
                            p_.teacher, p_.kd, time_teacher && micro == 0 ? &teacher_ms_ : nullptr);
    auto loss = parts.total;
    if (fault_at("nan_at", step)) loss = loss * NAN;  // test hook
    (loss / accum).backward();
    auto part = loss.detach().to(at::kDouble) / accum;
    loss_sum = micro == 0 ? part : loss_sum + part;
    if (p_.teacher) {
      auto c = parts.ce.to(at::kDouble) / accum, k = parts.kd.to(at::kDouble) / accum;
      ce_sum = micro == 0 ? c : ce_sum + c;
      kd_sum = micro == 0 ? k : kd_sum + k;
    }
  }
  if (!p_.teacher) ce_sum = kd_sum = at::zeros({}, stat_opts);
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
  for (const auto& p : params_)
    if (p.grad().defined()) grads.push_back(p.grad());
  r.grad_norm = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2)), 2).item<double>();
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
