// The MobileLLM decoder: token embedding → effective layers → final norm → LM head.
//
// n_layers physical blocks run n_layers × repeats times, in the order the layer-sharing scheme
// gives. The model knows nothing of devices, precision or parallelism; the trainer applies those
// from outside.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>

#include <string>
#include <utility>
#include <vector>

#include "config/model_config.h"
#include "model/layers.h"

namespace deepthin::model {

// One slot per *effective* layer: a block that runs twice keeps two sets of keys and values.
struct KvCache {
  std::vector<KvSlot> slots;
  int64_t length() const { return slots.empty() || !slots[0].k.defined() ? 0 : slots[0].k.size(2); }
};

class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const config::ModelConfig& cfg);

  // tokens [B, T] int64 → final hidden states [B, T, dim] (after the last norm). With a cache, the
  // tokens continue the cached sequence and their keys and values are appended.
  torch::Tensor hidden_states(const torch::Tensor& tokens, KvCache* cache = nullptr);
  // Hidden states [.., dim] → logits [.., vocab].
  torch::Tensor logits(const torch::Tensor& hidden);
  torch::Tensor forward(const torch::Tensor& tokens, KvCache* cache = nullptr) {
    return logits(hidden_states(tokens, cache));
  }

  // The output projection: lm_head.weight, or the embedding when tied.
  torch::Tensor output_weight() const;
  KvCache make_cache() const { return KvCache{std::vector<KvSlot>(schedule_.size())}; }
  const config::ModelConfig& config() const { return cfg_; }
  const std::vector<int64_t>& schedule() const { return schedule_; }

  // Activation checkpointing: effective layers whose flag is set keep only their input and are run
  // again in backward. Empty (the default) recomputes nothing. Applied from outside, by the
  // trainer.
  void set_recompute(std::vector<bool> layers);
  const std::vector<bool>& recompute_layers() const { return recompute_; }
  // How many times each parameter's gradient is accumulated in one backward pass: 1, except that
  // a shared block's parameters are accumulated once per recomputed use (plus once for its plain
  // uses, which autograd sums first).
  std::vector<std::pair<std::string, int>> gradient_accumulations() const;

  // Normal(0, init.std) for linear and embedding weights, ones / zeros for norms; drawn on the CPU
  // from `seed` in parameter order, so the same seed gives the same weights on every device.
  void reset_parameters(uint64_t seed);

  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  Norm norm{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when tied

 private:
  config::ModelConfig cfg_;
  std::vector<int64_t> schedule_;
  std::vector<Block> blocks_;
  std::vector<bool> recompute_;
  torch::Tensor rope_cos_, rope_sin_;
};
TORCH_MODULE(Decoder);

// Number of elements over unique parameters.
int64_t numel(const torch::nn::Module& m);

}  // namespace deepthin::model
