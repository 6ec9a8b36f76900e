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

// One chunk's contribution: the gradient of its share of the loss with respect to its hidden rows
// and the head, and its CE and KD sums.
struct ChunkGrads {
  at::Tensor grad_h, grad_w, ce, kd;
};

struct ChunkInputs {
  at::Tensor h, w, teacher_hidden, teacher_weight, mask, targets;  // mask float [n]
  at::Tensor count;  // the valid rows of the whole batch: the loss is their mean
  config::KdLossType loss;
  double temperature, ratio;
  at::ScalarType dtype;
};

// The reference: autograd over the chunk's small graph.
ChunkGrads chunk_by_autograd(const ChunkInputs& c) {
  at::AutoGradMode grad_on(true);
  auto h = c.h.detach().requires_grad_(true);
  auto w = c.w.detach().requires_grad_(true);
  auto zs = at::matmul(h.to(c.dtype), w.to(c.dtype).t()).to(at::kFloat);
  at::Tensor zt;
  {
    at::NoGradGuard no_grad;
    zt = at::matmul(c.teacher_hidden.to(c.dtype), c.teacher_weight.t()).to(at::kFloat);
  }
  auto ce_rows = at::logsumexp(zs, 1) - zs.gather(1, c.targets.unsqueeze(1)).squeeze(1);
  auto kd_rows = kd_divergence(zs, zt, c.loss, c.temperature);
  auto ce = (ce_rows * c.mask).sum(), kd = (kd_rows * c.mask).sum();
  const double T2 = c.temperature * c.temperature;
  auto chunk_loss = ((1.0 - c.ratio) * ce + c.ratio * T2 * kd) / c.count;
  auto grads = torch::autograd::grad({chunk_loss}, {h, w});
  return {grads[0], grads[1], ce.detach(), kd.detach()};
}

// The same by the closed-form gradients of the logits: one softmax of each model's logits, no
// autograd graph. With u = z_s/T, s = log_softmax(u), t = log_softmax(z_t/T), p = exp(s):
//   CE           ∂/∂z_s = softmax(z_s) − onehot(target)
//   forward_kl   ∂/∂u = p − p_t
//   reverse_kl   ∂/∂u = p ⊙ (s − t − KL(p‖p_t))
//   symmetric_kl the mean of the two
//   js           ∂/∂u = p ⊙ (g − Σ p g), g = ½(s − log m), m = ½(p + p_t)
ChunkGrads chunk_closed_form(const ChunkInputs& c) {
  at::NoGradGuard no_grad;
  using L = config::KdLossType;
  const double T = c.temperature;
  auto hc = c.h.to(c.dtype), wc = c.w.to(c.dtype);
  auto zs = at::matmul(hc, wc.t()).to(at::kFloat);
  auto zt = at::matmul(c.teacher_hidden.to(c.dtype), c.teacher_weight.t()).to(at::kFloat);
  auto lse = at::logsumexp(zs, 1, /*keepdim=*/true);
  auto ce_rows = lse.squeeze(1) - zs.gather(1, c.targets.unsqueeze(1)).squeeze(1);
  auto d_ce = (zs - lse).exp_();
  d_ce.scatter_add_(1, c.targets.unsqueeze(1), at::full({zs.size(0), 1}, -1.0, zs.options()));
  auto s = at::log_softmax(zs / T, 1), t = at::log_softmax(zt / T, 1);
  auto p = s.exp(), pt = t.exp();
  at::Tensor kd_rows, d_u;
  auto reverse = [&](at::Tensor& rows) {
    auto diff = s - t;
    rows = (p * diff).sum(1);
    return p * (diff - rows.unsqueeze(1));
  };
  switch (c.loss) {
    case L::forward_kl:
      kd_rows = -(pt * s).sum(1);
      d_u = p - pt;
      break;
    case L::reverse_kl:
      d_u = reverse(kd_rows);
      break;
    case L::symmetric_kl: {
      at::Tensor r;
      d_u = 0.5 * ((p - pt) + reverse(r));
      kd_rows = 0.5 * ((pt * (t - s)).sum(1) + r);
      break;
    }
    case L::js: {
      auto lm = (0.5 * (p + pt)).clamp_min(1e-30).log();
      kd_rows = 0.5 * ((pt * (t - lm)).sum(1) + (p * (s - lm)).sum(1));
      auto g = 0.5 * (s - lm);
      d_u = p * (g - (p * g).sum(1, /*keepdim=*/true));
      break;
    }
  }
  auto m = c.mask.unsqueeze(1);
  auto dz = ((1.0 - c.ratio) * d_ce + (c.ratio * T) * d_u) * (m / c.count);  // T²·∂/∂u·(1/T)
  auto dzc = dz.to(c.dtype);
  return {at::matmul(dzc, wc).to(c.h.scalar_type()), at::matmul(dzc.t(), hc).to(at::kFloat),
          (ce_rows * c.mask).sum(), (kd_rows * c.mask).sum()};
}

class ChunkedKd : public torch::autograd::Function<ChunkedKd> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
      const at::Tensor& teacher_hidden, const at::Tensor& teacher_weight, const at::Tensor& targets,
      int64_t loss, double temperature, double ratio, int64_t chunk_rows, int64_t compute_dtype,
      int64_t ignore_index, bool closed_form) {
    const auto dtype = static_cast<at::ScalarType>(compute_dtype);
    const int64_t N = hidden.size(0);
    auto valid = targets.ne(ignore_index);
    auto count = valid.sum().to(at::kFloat).clamp_min(1.0);
    auto grad_h = at::empty_like(hidden);
    auto grad_w = at::zeros(weight.sizes(), weight.options().dtype(at::kFloat));
    auto ce_sum = at::zeros({}, hidden.options().dtype(at::kFloat));
    auto kd_sum = at::zeros({}, hidden.options().dtype(at::kFloat));
    auto wt = teacher_weight.detach().to(dtype);
    // Each chunk's gradients are computed right away, in the forward pass.
    for (int64_t start = 0; start < N; start += chunk_rows) {
      const int64_t n = std::min(chunk_rows, N - start);
      const ChunkInputs c{hidden.narrow(0, start, n),
                          weight,
                          teacher_hidden.narrow(0, start, n),
                          wt,
                          valid.narrow(0, start, n).to(at::kFloat),
                          targets.narrow(0, start, n).masked_fill(~valid.narrow(0, start, n), 0),
                          count,
                          static_cast<config::KdLossType>(loss),
                          temperature,
                          ratio,
                          dtype};
      const ChunkGrads g = closed_form ? chunk_closed_form(c) : chunk_by_autograd(c);
      grad_h.narrow(0, start, n).copy_(g.grad_h);
      grad_w.add_(g.grad_w);
      ce_sum += g.ce;
      kd_sum += g.kd;
    }
    ctx->saved_data["grad_h"] = grad_h;
    ctx->saved_data["grad_w"] = grad_w.to(weight.scalar_type());
    auto ce_mean = ce_sum / count, kd_mean = kd_sum / count;
    const double T2 = temperature * temperature;
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
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

KdLossOptions kd_loss_options(const config::KdConfig& kd, int64_t chunk_rows,
                              at::ScalarType compute_dtype, const c10::Device& device) {
  KdLossOptions o;
  o.loss = kd.loss;
  o.temperature = kd.temperature;
  o.ratio = kd.ratio;
  o.chunk_rows = chunk_rows;
  o.compute_dtype = compute_dtype;
  o.closed_form = device.is_cuda();
  return o;
}

KdLossParts distillation_loss(const at::Tensor& student_hidden, const at::Tensor& student_weight,
                              const at::Tensor& teacher_hidden, const at::Tensor& teacher_weight,
                              const at::Tensor& targets, const KdLossOptions& opts) {
  auto out = ChunkedKd::apply(
      student_hidden, student_weight, teacher_hidden.detach(), teacher_weight.detach(), targets,
      static_cast<int64_t>(opts.loss), opts.temperature, opts.ratio, opts.chunk_rows,
      static_cast<int64_t>(opts.compute_dtype), opts.ignore_index, opts.closed_form);
  return {out[0], out[1], out[2]};
}

}  // namespace deepthin::train
