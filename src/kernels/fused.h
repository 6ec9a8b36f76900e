// The fused training path as autograd functions with hand-written backward passes, built from the
// raw operations of kernels/ops.h (CUDA kernels on GPUs, their reference maths elsewhere):
//
//   add_rms_norm   the residual add and the RMSNorm of the sum, one kernel each way; the norm's
//                  output comes out in the compute dtype (no separate autocast copy);
//   rope_split     one q|k|v projection output split into q, k, v with RoPE applied to q and k;
//                  nothing is saved for backward (the rotation is undone from the tables);
//   swiglu_down    silu(gate) · up followed by the down projection; saves the gate|up projection
//                  only and recomputes the product in backward (one [tokens × ffn] tensor less per
//                  layer).
//
// Which path the model takes is decided in one place, use_fused(): the fused path on CUDA (unless
// train.kernels is reference), the plain reference layers on the CPU.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>
#include <utility>

namespace deepthin::kernels {

enum class Mode {
  auto_,      // fused on CUDA, reference on the CPU
  reference,  // the plain layers everywhere
  fused,      // the fused functions everywhere (the CPU runs their reference maths: tests)
};
void set_mode(Mode m);
Mode mode();

// Experiments (read once from the environment): DEEPTHIN_SDPA=flash|cudnn|efficient|math limits
// SDPA to one backend; DEEPTHIN_GQA_EXPAND=1 repeats k and v to every query head before SDPA;
// DEEPTHIN_SWIGLU_RECOMPUTE=0 keeps the SwiGLU product for backward instead of recomputing it.
void configure_attention_from_env();
bool expand_kv_heads();
bool recompute_swiglu();

// Whether the model runs its fused path for this input.
bool use_fused(const at::Tensor& x);
// The dtype matrix products run in for inputs on x's device: the autocast dtype when autocast is
// on there, otherwise x's own dtype.
at::ScalarType compute_dtype(const at::Tensor& x);

// (x + delta, rms_norm(x + delta) · weight in out_dtype). Without delta: (x, rms_norm(x)·weight).
std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta,
                                               const at::Tensor& weight, double eps,
                                               at::ScalarType out_dtype);

// qkv [B, T, (H + 2·KV)·hd] → q [B, H, T, hd], k and v [B, KV, T, hd] (transposed views of
// [B, T, heads, hd] buffers: the layout SDPA's kernels read without a copy).
std::tuple<at::Tensor, at::Tensor, at::Tensor> rope_split(const at::Tensor& qkv,
                                                          const at::Tensor& cos,
                                                          const at::Tensor& sin, int64_t H,
                                                          int64_t KV, int64_t hd);

// silu(gate) · up for gu = [.., gate | up].
at::Tensor swiglu(const at::Tensor& gu);
// swiglu(gu) @ down_weightᵀ with the matrix product in `compute` (the weight is cast to it).
at::Tensor swiglu_down(const at::Tensor& gu, const at::Tensor& down_weight, at::ScalarType compute);

}  // namespace deepthin::kernels
