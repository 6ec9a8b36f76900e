// Distillation losses (kd.h): the teacher's soft labels against the student's logits, chunked so
// that neither model's full logits are held at once.
#include "train/kd.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>

namespace deepthin::train {

at::Tensor kd_divergence(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                         config::KdLossType loss, double temperature) {
  auto ls = at::log_softmax(student_logits.to(at::kFloat) / temperature, 1);
  auto lt = at::log_softmax(teacher_logits.to(at::kFloat) / temperature, 1);
  using L = config::KdLossType;
  switch (loss) {
    case L::forward_kl:  // soft-label cross-entropy H(p_t, p_s) = KL(p_t‖p_s) + H(p_t)
      return -(lt.exp() * ls).sum(1);
    case L::reverse_kl:
      return (ls.exp() * (ls - lt)).sum(1);
    case L::symmetric_kl:
      return 0.5 * ((lt.exp() * (lt - ls)).sum(1) + (ls.exp() * (ls - lt)).sum(1));
    case L::js: {
      auto ps = ls.exp(), pt = lt.exp();
      auto lm = (0.5 * (ps + pt)).clamp_min(1e-30).log();
      return 0.5 * ((pt * (lt - lm)).sum(1) + (ps * (ls - lm)).sum(1));
    }
  }
  return {};
}

namespace {

class ChunkedKd : public torch::autograd::Function<ChunkedKd> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
      const at::Tensor& teacher_hidden, const at::Tensor& teacher_weight, const at::Tensor& targets,
      int64_t loss, double temperature, double ratio, int64_t chunk_rows, int64_t compute_dtype,
      int64_t ignore_index) {
    const auto dtype = static_cast<at::ScalarType>(compute_dtype);
    const int64_t N = hidden.size(0);
    auto valid = targets.ne(ignore_index);
    auto count = valid.sum().to(at::kFloat).clamp_min(1.0);
    auto grad_h = at::empty_like(hidden);
    auto grad_w = at::zeros(weight.sizes(), weight.options().dtype(at::kFloat));
    auto ce_sum = at::zeros({}, hidden.options().dtype(at::kFloat));
    auto kd_sum = at::zeros({}, hidden.options().dtype(at::kFloat));
    auto wt = teacher_weight.detach().to(dtype);
    const double T2 = temperature * temperature;
    // Each chunk is its own small graph; autograd gives its gradients right away.
    at::AutoGradMode grad_on(true);
    auto w = weight.detach().requires_grad_(true);
    for (int64_t start = 0; start < N; start += chunk_rows) {
      const int64_t n = std::min(chunk_rows, N - start);
      auto h = hidden.narrow(0, start, n).detach().requires_grad_(true);
      auto m = valid.narrow(0, start, n).to(at::kFloat);
      auto t = targets.narrow(0, start, n).masked_fill(~valid.narrow(0, start, n), 0);
      auto zs = at::matmul(h.to(dtype), w.to(dtype).t()).to(at::kFloat);
      at::Tensor zt;
      {
        at::NoGradGuard no_grad;
        zt = at::matmul(teacher_hidden.narrow(0, start, n).to(dtype), wt.t()).to(at::kFloat);
      }
      auto ce_rows = at::logsumexp(zs, 1) - zs.gather(1, t.unsqueeze(1)).squeeze(1);
      auto kd_rows = kd_divergence(zs, zt, static_cast<config::KdLossType>(loss), temperature);
      auto ce = (ce_rows * m).sum(), kd = (kd_rows * m).sum();
      auto chunk_loss = ((1.0 - ratio) * ce + ratio * T2 * kd) / count;
      auto grads = torch::autograd::grad({chunk_loss}, {h, w});
      grad_h.narrow(0, start, n).copy_(grads[0]);
      grad_w.add_(grads[1]);
      ce_sum += ce.detach();
      kd_sum += kd.detach();
    }
    ctx->saved_data["grad_h"] = grad_h;
    ctx->saved_data["grad_w"] = grad_w.to(weight.scalar_type());
    auto ce_mean = ce_sum / count, kd_mean = kd_sum / count;
    auto total = (1.0 - ratio) * ce_mean + ratio * T2 * kd_mean;
    ctx->mark_non_differentiable({ce_mean, kd_mean});
    return {total, ce_mean, kd_mean};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto scale = grad_out[0].defined()
                     ? grad_out[0].to(at::kFloat)
                     : at::zeros({}, ctx->saved_data["grad_h"].toTensor().options());
    auto gh = ctx->saved_data["grad_h"].toTensor() * scale;
    auto gw = ctx->saved_data["grad_w"].toTensor() * scale;
    return {gh,           gw,           at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

KdLossParts distillation_loss(const at::Tensor& student_hidden, const at::Tensor& student_weight,
                              const at::Tensor& teacher_hidden, const at::Tensor& teacher_weight,
                              const at::Tensor& targets, const KdLossOptions& opts) {
  auto out = ChunkedKd::apply(student_hidden, student_weight, teacher_hidden.detach(),
                              teacher_weight.detach(), targets, static_cast<int64_t>(opts.loss),
                              opts.temperature, opts.ratio, opts.chunk_rows,
                              static_cast<int64_t>(opts.compute_dtype), opts.ignore_index);
  return {out[0], out[1], out[2]};
}

}  // namespace deepthin::train
