// The CUDA kernels of the fused training path, as plain launchers over raw pointers (no torch
// types: the .cu file compiles with nvcc alone). kernels/ops.cpp checks shapes, dtypes and strides
// and calls these; the reference maths of every kernel lives there too (the ATen composition used
// on the CPU and by the tests).
//
// Every launcher returns a cudaError_t value (0 = success) from its launch.
#pragma once

#include <cstdint>

namespace deepthin::kernels::cuda {

enum class DType : int { f32 = 0, bf16 = 1 };

// Rows of `dim` elements: sum = x + delta (when delta is given; rounded to x's dtype, as an ATen
// add would), h = weight · sum · rstd in h's dtype, rstd = 1 / sqrt(mean(sum²) + eps) in fp32.
int rms_norm_forward(const void* x, DType x_t, const void* delta, DType delta_t, const void* weight,
                     DType w_t, void* sum, void* h, DType h_t, float* rstd, int64_t rows,
                     int64_t dim, float eps, bool vec4, void* stream);

// The same with the row in registers (one read of x and delta, every load issued up front); dim a
// multiple of 4 and at most 1024, 16-byte aligned pointers.
int rms_norm_forward_cached(const void* x, DType x_t, const void* delta, DType delta_t,
                            const void* weight, DType w_t, void* sum, void* h, DType h_t,
                            float* rstd, int64_t rows, int64_t dim, float eps, void* stream);

// The gradient of the above: grad_x = rstd · (w·gh − x̂ · mean(w·gh·x̂)) + grad_sum (x's dtype), the
// same values in delta's dtype into grad_delta (when given), and per-block partial sums of gh · x̂
// into weight_partial [blocks, dim] (fp32; the caller sums the rows). Deterministic: no atomics.
// Rows are handled 4 to a block; dim may be up to 12288 (4·dim floats of shared memory).
int rms_norm_backward(const void* grad_h, DType h_t, const void* grad_sum, const void* s, DType x_t,
                      const void* weight, DType w_t, const float* rstd, void* grad_x,
                      void* grad_delta, DType delta_t, float* weight_partial, int blocks,
                      int64_t rows, int64_t dim, bool vec4, void* stream);

// The same with each lane's columns in registers (one read of gh, s and grad_sum, all issued before
// the row's reduction; the weight read once per warp); dim a multiple of 4 and at most 1024.
int rms_norm_backward_cached(const void* grad_h, DType h_t, const void* grad_sum, const void* s,
                             DType x_t, const void* weight, DType w_t, const float* rstd,
                             void* grad_x, void* grad_delta, DType delta_t, float* weight_partial,
                             int blocks, int64_t rows, int64_t dim, void* stream);

// qkv rows [rows, (H + 2·KV)·hd] → q [rows, H, hd], k [rows, KV, hd], v [rows, KV, hd], with
// rotate-half RoPE applied to q and k at position row % seq_len (cos / sin: fp32 [seq_len, hd]).
// One block per row; vec ∈ {1, 2, 4} consecutive pair indices per thread (hd/2 divisible by vec,
// pointers aligned to vec elements).
int rope_split_forward(const void* qkv, DType t, const float* cos, const float* sin, void* q,
                       void* k, void* v, int64_t rows, int64_t seq_len, int64_t H, int64_t KV,
                       int64_t hd, int vec, void* stream);

// Element strides of a gradient laid out as [B, heads, T, hd] (last dimension contiguous).
struct HeadStrides {
  int64_t b = 0, h = 0, t = 0;
};
// The gradient of the above: dq, dk, dv (any strides divisible by vec; null → zero) →
// grad_qkv [rows, (H+2KV)·hd].
int rope_split_backward(const void* gq, HeadStrides sq, const void* gk, HeadStrides sk,
                        const void* gv, HeadStrides sv, DType t, const float* cos, const float* sin,
                        void* grad_qkv, int64_t rows, int64_t seq_len, int64_t H, int64_t KV,
                        int64_t hd, int vec, void* stream);

// gu [rows, 2F] (gate | up) → out [rows, F] = silu(gate) · up.
int swiglu_forward(const void* gu, DType t, void* out, int64_t rows, int64_t F, int vec,
                   void* stream);
// grad_out [rows, F], gu [rows, 2F] → grad_gu [rows, 2F].
int swiglu_backward(const void* grad_out, const void* gu, DType t, void* grad_gu, int64_t rows,
                    int64_t F, int vec, void* stream);

// Cross-entropy of logits rows [rows, V] against targets (int64; ignore_index rows give 0):
// loss_rows = logsumexp − logit[target] (fp32). With grad, the logits are overwritten by
// (softmax − onehot) · (*inv_count) (0 on ignored rows), in their own dtype.
int cross_entropy_rows(void* logits, DType t, const int64_t* targets, const float* inv_count,
                       float* loss_rows, int64_t rows, int64_t V, int64_t ignore_index, bool grad,
                       bool vec, void* stream);

// Distillation of a chunk: the student's logits zs [rows, V] and the teacher's zt [rows, V] (one
// dtype), targets (int64; ignore_index rows give 0). ce_rows = logsumexp(zs) − zs[target] and
// kd_rows = the divergence at `temperature` (loss 0 forward_kl = −Σ pt·log p, 1 reverse_kl,
// 2 symmetric_kl, 3 js; no T² factor), both fp32. With grad, zs is overwritten by
// (ce_weight · ∂ce/∂zs + kd_weight · ∂kd/∂(zs/T)) · (*inv_count) (0 on ignored rows).
int distillation_rows(void* zs, const void* zt, DType t, const int64_t* targets,
                      const float* inv_count, float* ce_rows, float* kd_rows, int64_t rows,
                      int64_t V, int loss, float temperature, float ce_weight, float kd_weight,
                      int64_t ignore_index, bool grad, bool vec, void* stream);

}  // namespace deepthin::kernels::cuda
