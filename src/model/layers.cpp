#include "model/layers.h"

#include <ATen/ATen.h>
#include <torch/nn/options/linear.h>

#include "kernels/fused.h"
#include "model/quant_sim.h"

namespace deepthin::model {

using config::FfnType;
using config::NormType;

namespace {
torch::nn::Linear make_linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}
}  // namespace

NormImpl::NormImpl(const config::NormConfig& cfg, int64_t dim) : type_(cfg.type), eps_(cfg.eps) {
  weight = register_parameter("weight", torch::ones({dim}));
  if (type_ == NormType::layernorm) bias = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor NormImpl::forward(const torch::Tensor& x) {
  auto dtype = x.scalar_type();
  auto xf = x.to(torch::kFloat32);
  if (type_ == NormType::rmsnorm) {
    if (x.is_cuda() && dtype == torch::kFloat32) {
      // ATen's fused RMSNorm: one kernel forward, one backward, instead of six elementwise passes.
      return at::rms_norm(x, {x.size(-1)}, weight, eps_);
    }
    auto var = xf.pow(2).mean(-1, /*keepdim=*/true);
    xf = xf * torch::rsqrt(var + eps_);
    return weight * xf.to(dtype);
  }
  return at::layer_norm(xf, {xf.size(-1)}, weight.to(torch::kFloat32), bias.to(torch::kFloat32),
                        eps_)
      .to(dtype);
}

std::pair<torch::Tensor, torch::Tensor> NormImpl::forward_fused(const torch::Tensor& x,
                                                                const torch::Tensor& delta,
                                                                at::ScalarType out_dtype) {
  if (type_ == NormType::rmsnorm) return kernels::add_rms_norm(x, delta, weight, eps_, out_dtype);
  auto s = delta.defined() ? x + delta : x;
  return {s, forward(s)};
}

RopeTables make_rope_tables(int64_t head_dim, int64_t max_seq_len, double theta) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  auto exponent = torch::arange(0, head_dim, 2, torch::kInt64).to(torch::kFloat32) /
                  static_cast<float>(head_dim);
  auto inv_freq = 1.0 / torch::pow(torch::tensor(theta, opts), exponent);
  auto pos = torch::arange(max_seq_len, torch::kInt64).to(torch::kFloat32);
  auto freqs = torch::outer(pos, inv_freq);
  auto emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos,
                         const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half);
  auto x2 = x.narrow(-1, half, half);
  auto rotated = torch::cat({-x2, x1}, -1);
  return x * cos.to(x.scalar_type()) + rotated * sin.to(x.scalar_type());
}

AttentionImpl::AttentionImpl(const config::ModelConfig& cfg)
    : n_heads_(cfg.n_heads), n_kv_heads_(cfg.n_kv_heads), head_dim_(cfg.head_dim) {
  q_proj = register_module("q_proj", make_linear(cfg.dim, cfg.q_dim()));
  k_proj = register_module("k_proj", make_linear(cfg.dim, cfg.kv_dim()));
  v_proj = register_module("v_proj", make_linear(cfg.dim, cfg.kv_dim()));
  o_proj = register_module("o_proj", make_linear(cfg.q_dim(), cfg.dim));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, KvSlot* slot) {
  const int64_t B = x.size(0), T = x.size(1);
  const auto xin = quantize_activations(x);  // the identity unless W8A8 is simulated
  auto q = q_proj(xin).view({B, T, n_heads_, head_dim_}).transpose(1, 2);
  auto k = k_proj(xin).view({B, T, n_kv_heads_, head_dim_}).transpose(1, 2);
  auto v = v_proj(xin).view({B, T, n_kv_heads_, head_dim_}).transpose(1, 2);
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);

  const int64_t past = slot && slot->k.defined() ? slot->k.size(2) : 0;
  if (slot) {
    if (past > 0) {
      k = torch::cat({slot->k, k}, 2);
      v = torch::cat({slot->v, v}, 2);
    }
    slot->k = k;
    slot->v = v;
  }

  torch::Tensor out;
  if (past == 0 || T == 1) {
    // No cached prefix: plain causal attention. One new token: it may see every cached key.
    out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/past == 0, std::nullopt,
                                           /*enable_gqa=*/true);
  } else {
    // Several new tokens after a prefix: query i sits at position past + i (bottom-right causal).
    auto mask =
        torch::ones({T, past + T}, torch::TensorOptions().dtype(torch::kBool).device(x.device()))
            .tril(past);
    out = at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, std::nullopt, true);
  }
  return o_proj(quantize_activations(out.transpose(1, 2).reshape({B, T, n_heads_ * head_dim_})));
}

torch::Tensor AttentionImpl::forward_fused(const torch::Tensor& x, const torch::Tensor& cos,
                                           const torch::Tensor& sin) {
  const int64_t B = x.size(0), T = x.size(1);
  // One product for q|k|v; the weights stay three parameters (the export layout).
  const auto compute = kernels::compute_dtype(x);
  auto qkv = kernels::packed_linear(x, {q_proj->weight, k_proj->weight, v_proj->weight}, qkv_cache_,
                                    compute);
  auto [q, k, v] = kernels::rope_split(qkv, cos.to(at::kFloat), sin.to(at::kFloat), n_heads_,
                                       n_kv_heads_, head_dim_);
  bool gqa = n_kv_heads_ != n_heads_;
  if (gqa && kernels::expand_kv_heads()) {
    k = k.repeat_interleave(n_heads_ / n_kv_heads_, 1);
    v = v.repeat_interleave(n_heads_ / n_kv_heads_, 1);
    gqa = false;
  }
  auto out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, std::nullopt,
                                              /*enable_gqa=*/gqa);
  return kernels::packed_linear(out.transpose(1, 2).reshape({B, T, n_heads_ * head_dim_}),
                                {o_proj->weight}, o_cache_, compute);
}

MlpImpl::MlpImpl(const config::ModelConfig& cfg) : type_(cfg.ffn.type) {
  if (type_ == FfnType::swiglu)
    gate_proj = register_module("gate_proj", make_linear(cfg.dim, cfg.ffn.hidden_dim));
  up_proj = register_module("up_proj", make_linear(cfg.dim, cfg.ffn.hidden_dim));
  down_proj = register_module("down_proj", make_linear(cfg.ffn.hidden_dim, cfg.dim));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  const auto xin = quantize_activations(x);  // the identity unless W8A8 is simulated
  switch (type_) {
    case FfnType::swiglu:
      return down_proj(quantize_activations(at::silu(gate_proj(xin)) * up_proj(xin)));
    case FfnType::relu:
      return down_proj(quantize_activations(at::relu(up_proj(xin))));
    case FfnType::gelu:
      return down_proj(quantize_activations(at::gelu(up_proj(xin))));
  }
  return {};
}

torch::Tensor MlpImpl::forward_fused(const torch::Tensor& x) {
  if (type_ != FfnType::swiglu) return forward(x);
  const auto compute = kernels::compute_dtype(x);
  auto gu = kernels::packed_linear(x, {gate_proj->weight, up_proj->weight}, gu_cache_, compute);
  if (!kernels::recompute_swiglu())
    return kernels::packed_linear(kernels::swiglu(gu), {down_proj->weight}, down_cache_, compute);
  return kernels::swiglu_down(gu, down_proj->weight, down_cache_, compute);
}

BlockImpl::BlockImpl(const config::ModelConfig& cfg) {
  input_layernorm = register_module("input_layernorm", Norm(cfg.norm, cfg.dim));
  self_attn = register_module("self_attn", Attention(cfg));
  post_attention_layernorm = register_module("post_attention_layernorm", Norm(cfg.norm, cfg.dim));
  mlp = register_module("mlp", Mlp(cfg));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                 const torch::Tensor& sin, KvSlot* slot) {
  auto h = x + self_attn(input_layernorm(x), cos, sin, slot);
  return h + mlp(post_attention_layernorm(h));
}

std::pair<torch::Tensor, torch::Tensor> BlockImpl::forward_fused(const torch::Tensor& x,
                                                                 const torch::Tensor& delta,
                                                                 const torch::Tensor& cos,
                                                                 const torch::Tensor& sin) {
  const auto compute = kernels::compute_dtype(x);
  auto [x1, h1] = input_layernorm->forward_fused(x, delta, compute);
  auto attn = self_attn->forward_fused(h1, cos, sin);
  auto [x2, h2] = post_attention_layernorm->forward_fused(x1, attn, compute);
  return {x2, mlp->forward_fused(h2)};
}

}  // namespace deepthin::model
