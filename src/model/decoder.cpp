#include "model/decoder.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/options/embedding.h>
#include <torch/nn/options/linear.h>

#include "kernels/fused.h"
#include "model/recompute.h"
#include "util/error.h"

namespace deepthin::model {

DecoderImpl::DecoderImpl(const config::ModelConfig& cfg)
    : cfg_(cfg), schedule_(cfg.layer_schedule()) {
  // HF Llama names: model.embed_tokens, model.layers.N, model.norm, lm_head.
  auto body = register_module("model", std::make_shared<torch::nn::Module>("model"));
  embed_tokens =
      body->register_module("embed_tokens", torch::nn::Embedding(cfg.vocab_size, cfg.dim));
  layers = body->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    blocks_.push_back(Block(cfg));
    layers->push_back(blocks_.back());
  }
  norm = body->register_module("norm", Norm(cfg.norm, cfg.dim));
  if (!cfg.tie_embeddings) {
    lm_head = register_module(
        "lm_head",
        torch::nn::Linear(torch::nn::LinearOptions(cfg.dim, cfg.vocab_size).bias(false)));
  }
  auto tables = make_rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope.theta);
  // Buffers so that .to(device) moves them; they are derived, never saved.
  rope_cos_ = register_buffer("rope_cos", tables.cos);
  rope_sin_ = register_buffer("rope_sin", tables.sin);
  reset_parameters(0);
}

torch::Tensor DecoderImpl::hidden_states(const torch::Tensor& tokens, KvCache* cache) {
  const int64_t offset = cache ? cache->length() : 0;
  const int64_t T = tokens.size(1);
  if (offset + T > cfg_.max_seq_len)
    fail_input("sequence of " + std::to_string(offset + T) + " tokens exceeds model.max_seq_len " +
               std::to_string(cfg_.max_seq_len));
  if (cache && cache->slots.size() != schedule_.size())
    fail_runtime("KV cache has " + std::to_string(cache->slots.size()) + " slots, model has " +
                 std::to_string(schedule_.size()) + " effective layers");
  // Buffers live in named_buffers(); re-read them so a .to(device) is seen.
  auto cos = buffers()[0].narrow(0, offset, T);
  auto sin = buffers()[1].narrow(0, offset, T);
  auto x = embed_tokens(tokens);
  const bool grad = torch::autograd::GradMode::is_enabled();
  auto recomputed = [&](size_t i) { return grad && i < recompute_.size() && recompute_[i]; };
  if (!cache && kernels::use_fused(x)) {
    // The fused path: the residual stream travels as (x, delta), each add done by the next norm.
    at::Tensor delta;
    for (size_t i = 0; i < schedule_.size(); ++i) {
      auto block = blocks_[schedule_[i]].ptr();
      BlockStep step = [block, cos, sin](const at::Tensor& a, const at::Tensor& b) {
        return block->forward_fused(a, b, cos, sin);
      };
      std::tie(x, delta) = recomputed(i) ? recompute(step, x, delta) : step(x, delta);
    }
    return norm->forward_fused(x, delta, kernels::compute_dtype(x)).second;
  }
  for (size_t i = 0; i < schedule_.size(); ++i) {
    auto block = blocks_[schedule_[i]].ptr();
    if (recomputed(i) && !cache) {
      BlockStep step = [block, cos, sin](const at::Tensor& a, const at::Tensor&) {
        return std::pair<at::Tensor, at::Tensor>{block->forward(a, cos, sin), {}};
      };
      x = recompute(step, x, {}).first;
    } else {
      x = block->forward(x, cos, sin, cache ? &cache->slots[i] : nullptr);
    }
  }
  return norm(x);
}

void DecoderImpl::set_recompute(std::vector<bool> layers) {
  if (!layers.empty() && layers.size() != schedule_.size())
    fail_runtime("set_recompute: " + std::to_string(layers.size()) + " flags for " +
                 std::to_string(schedule_.size()) + " effective layers");
  recompute_ = std::move(layers);
}

std::vector<std::pair<std::string, int>> DecoderImpl::gradient_accumulations() const {
  std::vector<int> recomputed(blocks_.size(), 0), plain(blocks_.size(), 0);
  for (size_t i = 0; i < schedule_.size(); ++i)
    ++(i < recompute_.size() && recompute_[i] ? recomputed : plain)[schedule_[i]];
  std::vector<std::pair<std::string, int>> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    int n = 1;
    const std::string prefix = "model.layers.";
    if (name.rfind(prefix, 0) == 0) {
      const size_t b = std::stoul(name.substr(prefix.size()));
      n = recomputed[b] + (plain[b] > 0 ? 1 : 0);
    }
    out.emplace_back(name, n);
  }
  return out;
}

torch::Tensor DecoderImpl::output_weight() const {
  return cfg_.tie_embeddings ? embed_tokens->weight : lm_head->weight;
}

torch::Tensor DecoderImpl::logits(const torch::Tensor& hidden) {
  return at::linear(hidden, output_weight());
}

void DecoderImpl::reset_parameters(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    bool is_norm = name.find("norm") != std::string::npos;
    if (is_norm) {
      p.fill_(name.size() >= 4 && name.substr(name.size() - 4) == "bias" ? 0.0 : 1.0);
      continue;
    }
    auto values = torch::empty(p.sizes(), torch::kFloat32);
    values.normal_(0.0, cfg_.init.std, gen);
    p.copy_(values);
  }
}

int64_t numel(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters(/*recurse=*/true)) n += p.numel();
  return n;
}

}  // namespace deepthin::model
