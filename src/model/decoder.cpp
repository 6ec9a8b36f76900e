#include "model/decoder.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/options/embedding.h>
#include <torch/nn/options/linear.h>

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
  for (size_t i = 0; i < schedule_.size(); ++i)
    x = blocks_[schedule_[i]](x, cos, sin, cache ? &cache->slots[i] : nullptr);
  return norm(x);
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
