// The pieces of a MobileLLM block: norm, rotary embedding, grouped-query attention, feed-forward.
//
// Parameter names follow HF Llama (q_proj, gate_proj, input_layernorm, …) so a state dict is the
// export format. The maths follows transformers' LlamaForCausalLM step for step (norm in fp32,
// rotate-half RoPE with fp32 angles) so that logits agree to fp32 rounding.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <utility>

#include "config/model_config.h"
#include "kernels/fused.h"

namespace deepthin::model {

// RMSNorm (weight) or LayerNorm (weight, bias), computed in fp32 and cast back.
class NormImpl : public torch::nn::Module {
 public:
  NormImpl(const config::NormConfig& cfg, int64_t dim);
  torch::Tensor forward(const torch::Tensor& x);
  // Fused path: (x + delta, norm(x + delta)) with the norm in out_dtype; delta may be undefined.
  std::pair<torch::Tensor, torch::Tensor> forward_fused(const torch::Tensor& x,
                                                        const torch::Tensor& delta,
                                                        at::ScalarType out_dtype);
  torch::Tensor weight, bias;

 private:
  config::NormType type_;
  double eps_;
};
TORCH_MODULE(Norm);

// cos / sin tables for rotate-half RoPE, fp32, [max_seq_len, head_dim].
struct RopeTables {
  torch::Tensor cos, sin;
};
RopeTables make_rope_tables(int64_t head_dim, int64_t max_seq_len, double theta);
// q or k [B, heads, T, head_dim] rotated by the table rows for positions offset…offset+T-1.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos,
                         const torch::Tensor& sin);

// Keys and values of one effective layer for incremental decoding.
struct KvSlot {
  torch::Tensor k, v;  // [B, kv_heads, S, head_dim]; undefined while empty
};

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const config::ModelConfig& cfg);
  // x [B, T, dim]; cos/sin [T, head_dim] for the positions of x. With a slot, the new keys and
  // values are appended to it and attention covers the cached prefix too.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        KvSlot* slot = nullptr);
  // Fused path (training and full-sequence scoring): one q|k|v product, RoPE fused with the split.
  torch::Tensor forward_fused(const torch::Tensor& x, const torch::Tensor& cos,
                              const torch::Tensor& sin);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t n_heads_, n_kv_heads_, head_dim_;
  kernels::WeightCache qkv_cache_, o_cache_;  // the fused path's compute copies
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const config::ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x);
  // Fused path: one gate|up product, SwiGLU and the down projection with the product recomputed in
  // backward (relu / gelu run as in forward()).
  torch::Tensor forward_fused(const torch::Tensor& x);
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  config::FfnType type_;
  kernels::WeightCache gu_cache_, down_cache_;  // the fused path's compute copies
};
TORCH_MODULE(Mlp);

// Pre-norm block: x + attn(norm(x)), then h + mlp(norm(h)).
class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const config::ModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        KvSlot* slot = nullptr);
  // Fused path. The residual stream arrives as (x, delta) with x + delta the block's input (delta
  // undefined for the first block) and leaves the same way, so that each residual add runs inside
  // the next norm's kernel: returns (x + delta + attn, mlp output).
  std::pair<torch::Tensor, torch::Tensor> forward_fused(const torch::Tensor& x,
                                                        const torch::Tensor& delta,
                                                        const torch::Tensor& cos,
                                                        const torch::Tensor& sin);
  Norm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

}  // namespace deepthin::model
