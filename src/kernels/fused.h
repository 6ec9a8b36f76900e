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
//   packed_linear  x @ [W1 | W2 | …]ᵀ from a compute-dtype copy of the weights that lives across
//                  steps (WeightCache: one cast per optimizer step instead of a concatenation and a
//                  cast per forward); each weight's gradient comes out of the product in the
//                  weight's own dtype (fp32 straight from the bf16 GEMM on CUDA, no cast kernel).
//
// Which path the model takes is decided in one place, use_fused(): the fused path on CUDA (unless
// train.kernels is reference), the plain reference layers on the CPU.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

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
// DEEPTHIN_SWIGLU_RECOMPUTE=0|1 overrides set_recompute_swiglu.
void configure_attention_from_env();
bool expand_kv_heads();
// Whether swiglu_down recomputes the SwiGLU product in backward (train.swiglu_recompute) or the
// product is kept for the down projection (the default).
void set_recompute_swiglu(bool on);
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

// A copy of one or more weights stacked by rows (q|k|v, gate|up, or one) in the compute dtype,
// kept from one forward to the next. It is made again when anything could have changed a weight:
// a version counter moved (an in-place update, a load), a weight's storage moved (.to(), a new
// tensor), the dtype asked for differs, or weights_changed() was called since (the training step
// calls it after every step: optimizer updates in a CUDA-graph replay and parameters gathered by
// NCCL move no version counter). A copied module starts with an empty cache.
class WeightCache {
 public:
  WeightCache() = default;
  WeightCache(const WeightCache&) {}
  WeightCache& operator=(const WeightCache&) {
    clear();
    return *this;
  }
  // The stacked copy in `dtype` (not requiring grad), made again if stale.
  const at::Tensor& get(const std::vector<at::Tensor>& weights, at::ScalarType dtype);
  void clear();
  int64_t refreshes() const { return refreshes_; }  // how often it was made (tests)

 private:
  at::Tensor packed_;
  std::vector<int64_t> versions_;
  std::vector<const void*> ptrs_;
  uint64_t epoch_ = 0;
  int64_t refreshes_ = 0;
};
// Marks every WeightCache stale (see above).
void weights_changed();
// Whether the fused path keeps weight copies across steps (DEEPTHIN_WEIGHT_CACHE=0: no, the
// weights are concatenated and cast in every forward as before) and whether bf16 products write
// fp32 weight gradients directly (DEEPTHIN_FP32_WGRAD=0: no, bf16 and a cast). Read once.
bool cache_weights();
bool fp32_weight_grad();

// acc += gyᵀ · x (the gradient of a weight used as x @ wᵀ): on CUDA, an fp32 acc takes a bf16
// product's result directly.
void add_weight_grad(at::Tensor& acc, const at::Tensor& gy, const at::Tensor& x);

// x [.., in] @ cat(weights, 0)ᵀ in `compute`: the product runs on cache's copy when the cache is on
// and autograd is recording (training), else on a fresh concatenation and cast. Backward: the
// input's gradient in `compute`, each weight's gradient in the weight's dtype.
at::Tensor packed_linear(const at::Tensor& x, const std::vector<at::Tensor>& weights,
                         WeightCache& cache, at::ScalarType compute);

// silu(gate) · up for gu = [.., gate | up].
at::Tensor swiglu(const at::Tensor& gu);
// swiglu(gu) @ down_weightᵀ with the matrix product in `compute` (the weight from `cache` as in
// packed_linear).
at::Tensor swiglu_down(const at::Tensor& gu, const at::Tensor& down_weight, WeightCache& cache,
                       at::ScalarType compute);

}  // namespace deepthin::kernels
