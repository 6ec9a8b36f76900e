#include "train/loss.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

namespace deepthin::train {

namespace {

class FusedLmLoss : public torch::autograd::Function<FusedLmLoss> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden,
                            const at::Tensor& weight, const at::Tensor& targets, int64_t chunk_rows,
                            int64_t compute_dtype, int64_t ignore_index) {
    const auto dtype = static_cast<at::ScalarType>(compute_dtype);
    const int64_t N = hidden.size(0);
    auto w = weight.to(dtype);
    auto valid = targets.ne(ignore_index);
    auto count = valid.sum().to(at::kFloat).clamp_min(1.0);
    auto grad_h = at::empty_like(hidden);
    auto grad_w = at::zeros(weight.sizes(), weight.options().dtype(at::kFloat));
    auto total = at::zeros({}, hidden.options().dtype(at::kFloat));
    for (int64_t start = 0; start < N; start += chunk_rows) {
      const int64_t n = std::min(chunk_rows, N - start);
      auto h = hidden.narrow(0, start, n).to(dtype);
      auto t = targets.narrow(0, start, n);
      auto m = valid.narrow(0, start, n);
      auto logits = at::matmul(h, w.t()).to(at::kFloat);  // [n, V]
      auto lse = at::logsumexp(logits, 1);
      auto safe_t = t.masked_fill(~m, 0);
      auto picked = logits.gather(1, safe_t.unsqueeze(1)).squeeze(1);
      total += ((lse - picked) * m).sum();
      // d loss / d logits = (softmax − onehot) · mask / count, computed in place on the logits
      // buffer.
      auto g = logits.sub_(lse.unsqueeze(1)).exp_();
      g.scatter_add_(1, safe_t.unsqueeze(1), at::full({n, 1}, -1.0, g.options()));
      g.mul_((m.to(at::kFloat) / count).unsqueeze(1));
      auto gd = g.to(dtype);
      grad_h.narrow(0, start, n).copy_(at::matmul(gd, w));
      grad_w.add_(at::matmul(gd.t(), h));
    }
    ctx->saved_data["grad_h"] = grad_h;
    ctx->saved_data["grad_w"] = grad_w.to(weight.scalar_type());
    return total / count;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto scale = grad_out[0];
    auto gh = ctx->saved_data["grad_h"].toTensor() * scale.to(at::kFloat);
    auto gw = ctx->saved_data["grad_w"].toTensor() * scale.to(at::kFloat);
    return {gh, gw, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor lm_head_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                 const at::Tensor& targets, const LmLossOptions& opts) {
  if (!torch::autograd::GradMode::is_enabled() ||
      (!hidden.requires_grad() && !weight.requires_grad())) {
    // Evaluation: the same chunked loss without the gradient work.
    const auto w = weight.to(opts.compute_dtype);
    auto valid = targets.ne(opts.ignore_index);
    auto total = at::zeros({}, hidden.options().dtype(at::kFloat));
    for (int64_t start = 0; start < hidden.size(0); start += opts.chunk_rows) {
      const int64_t n = std::min(opts.chunk_rows, hidden.size(0) - start);
      auto logits =
          at::matmul(hidden.narrow(0, start, n).to(opts.compute_dtype), w.t()).to(at::kFloat);
      auto m = valid.narrow(0, start, n);
      auto t = targets.narrow(0, start, n).masked_fill(~m, 0);
      total += ((at::logsumexp(logits, 1) - logits.gather(1, t.unsqueeze(1)).squeeze(1)) * m).sum();
    }
    return total / valid.sum().to(at::kFloat).clamp_min(1.0);
  }
  // The chunks manage precision themselves; autocast must not re-cast inside.
  return FusedLmLoss::apply(hidden, weight, targets, opts.chunk_rows,
                            static_cast<int64_t>(opts.compute_dtype), opts.ignore_index);
}

}  // namespace deepthin::train
