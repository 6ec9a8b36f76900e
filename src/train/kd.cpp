// Distillation losses (kd.h): the teacher's soft labels against the student's logits, chunked so
// that neither model's full logits are held at once.
#include "train/kd.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "kernels/fused.h"
#include "kernels/ops.h"
#include "util/error.h"

namespace deepthin::train {

using config::KdLossType;
using kernels::KdDivergence;
static_assert(static_cast<int>(KdLossType::forward_kl) ==
                      static_cast<int>(KdDivergence::forward_kl) &&
                  static_cast<int>(KdLossType::reverse_kl) ==
                      static_cast<int>(KdDivergence::reverse_kl) &&
                  static_cast<int>(KdLossType::symmetric_kl) ==
                      static_cast<int>(KdDivergence::symmetric_kl) &&
                  static_cast<int>(KdLossType::js) == static_cast<int>(KdDivergence::js),
              "the kernels' divergences are numbered as config::KdLossType");

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

// What both autograd functions keep and return: the chunks' gradients for the backward (scaled
// there by the incoming gradient), and the loss (1 − ratio)·CE + ratio·T²·KD with its parts.
torch::autograd::variable_list save_and_mix(torch::autograd::AutogradContext* ctx,
                                            const at::Tensor& grad_h, const at::Tensor& grad_w,
                                            const at::Tensor& weight, const at::Tensor& ce_sum,
                                            const at::Tensor& kd_sum, const at::Tensor& count,
                                            double temperature, double ratio) {
  ctx->saved_data["grad_h"] = grad_h;
  ctx->saved_data["grad_w"] = grad_w.to(weight.scalar_type());
  auto ce_mean = ce_sum / count, kd_mean = kd_sum / count;
  auto total = (1.0 - ratio) * ce_mean + ratio * temperature * temperature * kd_mean;
  ctx->mark_non_differentiable({ce_mean, kd_mean});
  return {total, ce_mean, kd_mean};
}

// The backward of both: the saved gradients times the loss's incoming gradient, nothing for the
// other `inputs` − 2 arguments.
torch::autograd::variable_list saved_grads(torch::autograd::AutogradContext* ctx,
                                           const torch::autograd::variable_list& grad_out,
                                           size_t inputs) {
  auto gh = ctx->saved_data["grad_h"].toTensor();
  auto scale = grad_out[0].defined() ? grad_out[0].to(at::kFloat) : at::zeros({}, gh.options());
  torch::autograd::variable_list out(inputs);
  out[0] = gh * scale;
  out[1] = ctx->saved_data["grad_w"].toTensor() * scale;
  return out;
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
    auto grad_w = at::zeros(weight.sizes(), weight.options().dtype(at::kFloat));
    auto ce_sum = at::zeros({}, hidden.options().dtype(at::kFloat));
    auto kd_sum = at::zeros({}, hidden.options().dtype(at::kFloat));
    auto wt = teacher_weight.detach().to(dtype);
    at::Tensor grad_h;
    // Each chunk's gradients are computed right away, in the forward pass.
    if (closed_form) {
      // Both models' logits in the compute dtype into two reused buffers; one kernel
      // (kernels::distillation_rows) turns the student's into the gradient of the chunk's loss,
      // and two products give the gradients of the hidden rows and the head.
      const double T = temperature;
      auto w = weight.to(dtype);
      auto inv_count = (1.0 / count).reshape({1});
      const int64_t rows = std::min(chunk_rows, N), V = weight.size(0);
      auto zs_buf = at::empty({rows, V}, hidden.options().dtype(dtype));
      auto zt_buf = at::empty({rows, V}, hidden.options().dtype(dtype));
      grad_h = at::empty(hidden.sizes(), hidden.options().dtype(dtype));
      for (int64_t start = 0; start < N; start += chunk_rows) {
        const int64_t n = std::min(chunk_rows, N - start);
        auto h = hidden.narrow(0, start, n).to(dtype);
        auto zs = zs_buf.narrow(0, 0, n), zt = zt_buf.narrow(0, 0, n);
        at::mm_out(zs, h, w.t());
        at::mm_out(zt, teacher_hidden.narrow(0, start, n).to(dtype), wt.t());
        auto r = kernels::distillation_rows(zs, zt, targets.narrow(0, start, n), inv_count,
                                            static_cast<kernels::KdDivergence>(loss), T,
                                            1.0 - ratio, ratio * T, ignore_index,
                                            /*grad_in_place=*/true);
        ce_sum += r.ce.sum();
        kd_sum += r.kd.sum();
        auto grad_rows = grad_h.narrow(0, start, n);
        at::mm_out(grad_rows, zs, w);  // zs now holds d loss / d logits
        kernels::add_weight_grad(grad_w, zs, h);
      }
      grad_h = grad_h.to(hidden.scalar_type());
    } else {
      grad_h = at::empty_like(hidden);
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
        const ChunkGrads g = chunk_by_autograd(c);
        grad_h.narrow(0, start, n).copy_(g.grad_h);
        grad_w.add_(g.grad_w);
        ce_sum += g.ce;
        kd_sum += g.kd;
      }
    }
    return save_and_mix(ctx, grad_h, grad_w, weight, ce_sum, kd_sum, count, temperature, ratio);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    return saved_grads(ctx, grad_out, 12);
  }
};

// One chunk against the teacher's top-k. The teacher's distribution is known on its k tokens
// (log-probabilities `logp` at T = 1) and as one remaining mass r = 1 − Σ exp(logp) on the other
// V − k; the loss is the forward KL over those k + 1 outcomes: −Σ q_i·s_i − q_tail·log P_tail, with
// s = log_softmax(z / T) and P_tail the student's mass outside the k tokens. At T ≠ 1 the tail's
// tempered mass is taken as if r were spread evenly over its V − k tokens. Gradient over u = z / T:
// p − scatter(q) − q_tail·p·[not in k] / P_tail, i.e. p − q̃ with the teacher's tail mass spread
// as the student spreads its own. (Renormalising q over the k tokens instead teaches the student to
// put no mass outside them: its CE on the true next token then grows without bound.)
ChunkGrads chunk_topk(const at::Tensor& h, const at::Tensor& w, const at::Tensor& ids,
                      const at::Tensor& logp, const at::Tensor& targets, const at::Tensor& mask,
                      const at::Tensor& count, double T, double ratio, at::ScalarType dtype) {
  auto hc = h.to(dtype), wc = w.to(dtype);
  auto z = at::matmul(hc, wc.t()).to(at::kFloat);
  auto lse = at::logsumexp(z, 1, /*keepdim=*/true);
  auto t = targets.unsqueeze(1);
  auto ce_rows = lse.squeeze(1) - z.gather(1, t).squeeze(1);
  auto d_ce = (z - lse).exp_();
  d_ce.scatter_add_(1, t, at::full({z.size(0), 1}, -1.0, z.options()));
  const int64_t rest = z.size(1) - ids.size(1);  // tokens outside the teacher's k
  auto lq = logp.to(at::kFloat);
  auto tail_t = (1.0 - lq.exp().sum(1, /*keepdim=*/true)).clamp_min(0.0);
  if (rest == 0)  // every token is cached: what is left is fp16 rounding
    tail_t.zero_();
  else  // spread evenly over the rest, then tempered
    tail_t = static_cast<double>(rest) * (tail_t / static_cast<double>(rest)).pow(1.0 / T);
  auto e = (lq / T).exp();
  auto norm = e.sum(1, /*keepdim=*/true) + tail_t;
  auto q = e / norm, q_tail = tail_t / norm;
  auto s = at::log_softmax(z / T, 1);
  auto p = s.exp();
  auto p_out = p.clone().scatter_(1, ids, 0.0);  // the student's mass outside the k tokens
  auto p_tail = p_out.sum(1, /*keepdim=*/true).clamp_min(1e-30);
  auto kd_rows = -(q * s.gather(1, ids)).sum(1) - (q_tail * p_tail.log()).squeeze(1);
  auto d_u = p.sub_(p_out.mul_(q_tail / p_tail)).scatter_add_(1, ids, -q);
  auto m = mask.unsqueeze(1);
  auto dz = (((1.0 - ratio) * d_ce + (ratio * T) * d_u) * (m / count)).to(dtype);
  return {at::matmul(dz, wc).to(h.scalar_type()), at::matmul(dz.t(), hc).to(at::kFloat),
          (ce_rows * mask).sum(), (kd_rows * mask).sum()};
}

class ChunkedKdTopK : public torch::autograd::Function<ChunkedKdTopK> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& hidden, const at::Tensor& weight,
                                                const at::Tensor& ids, const at::Tensor& logp,
                                                const at::Tensor& targets, double temperature,
                                                double ratio, int64_t chunk_rows,
                                                int64_t compute_dtype, int64_t ignore_index) {
    at::NoGradGuard no_grad;
    const auto dtype = static_cast<at::ScalarType>(compute_dtype);
    const int64_t N = hidden.size(0);
    auto valid = targets.ne(ignore_index);
    auto count = valid.sum().to(at::kFloat).clamp_min(1.0);
    auto grad_h = at::empty_like(hidden);
    auto grad_w = at::zeros(weight.sizes(), weight.options().dtype(at::kFloat));
    auto ce_sum = at::zeros({}, hidden.options().dtype(at::kFloat)), kd_sum = ce_sum.clone();
    for (int64_t start = 0; start < N; start += chunk_rows) {
      const int64_t n = std::min(chunk_rows, N - start);
      auto v = valid.narrow(0, start, n);
      const ChunkGrads g =
          chunk_topk(hidden.narrow(0, start, n), weight, ids.narrow(0, start, n),
                     logp.narrow(0, start, n), targets.narrow(0, start, n).masked_fill(~v, 0),
                     v.to(at::kFloat), count, temperature, ratio, dtype);
      grad_h.narrow(0, start, n).copy_(g.grad_h);
      grad_w.add_(g.grad_w);
      ce_sum += g.ce;
      kd_sum += g.kd;
    }
    return save_and_mix(ctx, grad_h, grad_w, weight, ce_sum, kd_sum, count, temperature, ratio);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    return saved_grads(ctx, grad_out, 10);
  }
};

}  // namespace

KdLossParts distillation_loss_topk(const at::Tensor& student_hidden,
                                   const at::Tensor& student_weight, const at::Tensor& teacher_ids,
                                   const at::Tensor& teacher_logp, const at::Tensor& targets,
                                   const KdLossOptions& opts) {
  if (opts.loss != config::KdLossType::forward_kl)
    fail_input("distillation from a top-k cache computes forward_kl only");
  auto out = ChunkedKdTopK::apply(student_hidden, student_weight, teacher_ids, teacher_logp,
                                  targets, opts.temperature, opts.ratio, opts.chunk_rows,
                                  static_cast<int64_t>(opts.compute_dtype), opts.ignore_index);
  return {out[0], out[1], out[2]};
}

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
