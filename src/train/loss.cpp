// The chunked LM-head cross-entropy (loss.h) and its backward.
#include "train/loss.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/fused.h"
#include "kernels/ops.h"

namespace deepthin::train {

namespace {

struct ChunkedLoss {
  at::Tensor total;           // mean loss (fp32 scalar)
  at::Tensor grad_h, grad_w;  // d total / d hidden, d total / d weight (when asked for)
};

// The loop both paths share: per chunk, logits in the compute dtype into one reused buffer, then
// the per-row loss and, with gradients, (softmax − one-hot) / count written over the logits by one
// kernel (kernels::cross_entropy_rows), then the two products that give the chunk's gradients.
ChunkedLoss chunked_loss(const at::Tensor& hidden, const at::Tensor& weight,
                         const at::Tensor& targets, const LmLossOptions& o, bool grads) {
  const auto dtype = o.compute_dtype;
  const int64_t N = hidden.size(0), V = weight.size(0);
  auto w = weight.to(dtype);
  auto inv_count =
      1.0 / targets.ne(o.ignore_index).sum().to(at::kFloat).clamp_min(1.0).reshape({1});
  auto buffer = at::empty({std::min(o.chunk_rows, N), V}, hidden.options().dtype(dtype));
  ChunkedLoss out;
  out.total = at::zeros({}, hidden.options().dtype(at::kFloat));
  if (grads) {
    out.grad_h = at::empty(hidden.sizes(), hidden.options().dtype(dtype));
    out.grad_w = at::zeros(weight.sizes(), weight.options().dtype(at::kFloat));
  }
  for (int64_t start = 0; start < N; start += o.chunk_rows) {
    const int64_t n = std::min(o.chunk_rows, N - start);
    auto h = hidden.narrow(0, start, n).to(dtype);
    auto logits = buffer.narrow(0, 0, n);
    at::mm_out(logits, h, w.t());
    out.total += kernels::cross_entropy_rows(logits, targets.narrow(0, start, n), inv_count,
                                             o.ignore_index, grads)
                     .sum();
    if (!grads) continue;
    auto grad_rows = out.grad_h.narrow(0, start, n);
    at::mm_out(grad_rows, logits, w);  // the logits now hold d loss / d logits
    kernels::add_weight_grad(out.grad_w, logits, h);
  }
  out.total = out.total * inv_count.squeeze();
  return out;
}

class FusedLmLoss : public torch::autograd::Function<FusedLmLoss> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden,
                            const at::Tensor& weight, const at::Tensor& targets, int64_t chunk_rows,
                            int64_t compute_dtype, int64_t ignore_index) {
    LmLossOptions o;
    o.chunk_rows = chunk_rows;
    o.compute_dtype = static_cast<at::ScalarType>(compute_dtype);
    o.ignore_index = ignore_index;
    auto r = chunked_loss(hidden, weight, targets, o, /*grads=*/true);
    ctx->saved_data["grad_h"] = r.grad_h.to(hidden.scalar_type());
    ctx->saved_data["grad_w"] = r.grad_w.to(weight.scalar_type());
    return r.total;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto gh = ctx->saved_data["grad_h"].toTensor();
    auto gw = ctx->saved_data["grad_w"].toTensor();
    auto scale = grad_out[0].to(at::kFloat);  // a 0-d fp32 factor keeps a bf16 result exact
    return {gh * scale, gw * scale, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor lm_head_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                 const at::Tensor& targets, const LmLossOptions& opts) {
  if (!torch::autograd::GradMode::is_enabled() ||
      (!hidden.requires_grad() && !weight.requires_grad()))
    return chunked_loss(hidden, weight, targets, opts, /*grads=*/false).total;
  // The chunks manage precision themselves; autocast must not re-cast inside.
  return FusedLmLoss::apply(hidden, weight, targets, opts.chunk_rows,
                            static_cast<int64_t>(opts.compute_dtype), opts.ignore_index);
}

}  // namespace deepthin::train
