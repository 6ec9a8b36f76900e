// The raw operations of the fused training path, forward and backward, without autograd: each runs
// its CUDA kernel (kernels/cuda_kernels.cu) for CUDA tensors of the types the kernel is built for,
// and otherwise its reference maths, an ATen composition in fp32 (the CPU path, and what the GPU
// tests compare the kernels against: `force_reference` runs it on any device).
//
// The autograd functions built from these are in kernels/fused.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace deepthin::kernels {

// Run the reference maths even for CUDA tensors (tests; train.kernels: reference does not need it).
void force_reference(bool on);
bool reference_forced();

// Use the first, simpler versions of the RMSNorm-backward and RoPE kernels (two passes over each
// row; a flat grid with 64-bit index arithmetic) instead of the register-cached and row-per-block
// ones. Off by default; DEEPTHIN_SIMPLE_KERNELS=1 turns it on. Both are tested against the
// reference.
void use_simple_kernels(bool on);
bool simple_kernels();

struct NormForward {
  at::Tensor sum;   // x + delta in x's dtype; undefined without delta
  at::Tensor h;     // weight · norm(sum) in out_dtype
  at::Tensor rstd;  // fp32 [rows]
};
// x [.., dim]; delta (optional) like x; weight [dim].
NormForward rms_norm_forward(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& weight,
                             double eps, at::ScalarType out_dtype);

struct NormGrads {
  at::Tensor x;       // in s's dtype: the gradient of the norm's input (plus grad_sum)
  at::Tensor delta;   // the same values in delta_dtype; undefined unless asked for
  at::Tensor weight;  // in weight's dtype
};
// grad_h like h; grad_sum (optional) like s, the gradient that reaches the sum from elsewhere.
NormGrads rms_norm_backward(const at::Tensor& grad_h, const at::Tensor& grad_sum,
                            const at::Tensor& s, const at::Tensor& weight, const at::Tensor& rstd,
                            bool want_delta, at::ScalarType delta_dtype);

struct QkvSplit {
  at::Tensor q, k, v;  // [B, T, heads, hd], contiguous
};
// qkv [B, T, (H + 2·KV)·hd]; cos, sin fp32 [T, hd] (the positions of the T tokens).
QkvSplit rope_split_forward(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                            int64_t H, int64_t KV, int64_t hd);
// Gradients of q, k, v ([B, T, heads, hd], any strides; undefined counts as zero) → [B, T,
// (H+2KV)·hd].
at::Tensor rope_split_backward(const at::Tensor& gq, const at::Tensor& gk, const at::Tensor& gv,
                               const at::Tensor& cos, const at::Tensor& sin, int64_t H, int64_t KV,
                               int64_t hd, at::ScalarType dtype);

// gu [.., 2F] (gate | up) → silu(gate) · up [.., F].
at::Tensor swiglu_forward(const at::Tensor& gu);
at::Tensor swiglu_backward(const at::Tensor& grad, const at::Tensor& gu);

// Per-row cross-entropy of logits [n, V] (fp32 or bf16) against targets [n] (int64): logsumexp −
// logit[target], 0 where the target is ignore_index. With grad_in_place the logits become
// (softmax − onehot) · inv_count (a one-element fp32 tensor on the logits' device), zero on ignored
// rows.
at::Tensor cross_entropy_rows(const at::Tensor& logits, const at::Tensor& targets,
                              const at::Tensor& inv_count, int64_t ignore_index,
                              bool grad_in_place);

// The divergences of distillation (the order of config::KdLossType).
enum class KdDivergence : int { forward_kl = 0, reverse_kl = 1, symmetric_kl = 2, js = 3 };

struct DistillationRows {
  at::Tensor ce, kd;  // fp32 [n]: logsumexp(zs) − zs[target], and the divergence (no T² factor)
};
// Distillation of a chunk of the student's logits zs [n, V] against the teacher's zt [n, V] (fp32
// or bf16, one dtype) and targets [n] (int64), at temperature T, 0 on rows whose target is
// ignore_index. With u = zs/T, s = log_softmax(u), t = log_softmax(zt/T), p = e^s, pt = e^t:
//   forward_kl −Σ pt·s, reverse_kl Σ p·(s − t), symmetric_kl their mean with KL(pt‖p),
//   js ½ Σ pt·(t − log m) + ½ Σ p·(s − log m), m = ½(p + pt).
// With grad_in_place zs becomes the gradient of (ce_weight · ce + kd_weight · T · kd) with respect
// to zs, times inv_count (a one-element fp32 tensor on the logits' device), zero on ignored rows:
// the loss (1 − r)·CE + r·T²·KD takes ce_weight 1 − r and kd_weight r·T (∂/∂zs = ∂/∂u / T).
DistillationRows distillation_rows(const at::Tensor& zs, const at::Tensor& zt,
                                   const at::Tensor& targets, const at::Tensor& inv_count,
                                   KdDivergence loss, double temperature, double ce_weight,
                                   double kd_weight, int64_t ignore_index, bool grad_in_place);

}  // namespace deepthin::kernels
