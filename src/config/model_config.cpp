#include "config/model_config.h"

namespace deepthin::config {

void FfnConfig::visit(Visitor& v) {
  v.choice(
      "type", type, kFfnTypes,
      "Feed-forward block: SwiGLU (gate, up, down) or a plain two-matrix FFN with ReLU or GELU");
  v.field("hidden_dim", hidden_dim,
          "FFN hidden width; 0 derives it: SwiGLU round_up(8·dim/3, multiple_of), plain 4·dim",
          IntRange{0, 1 << 20});
  v.field("multiple_of", multiple_of, "Rounding unit for a derived SwiGLU hidden width", kPositive);
}

void NormConfig::visit(Visitor& v) {
  v.choice("type", type, kNormTypes,
           "Normalisation: RMSNorm (weight only) or LayerNorm (weight, bias)");
  v.field("eps", eps, "Epsilon added to the variance", kPositiveReal);
}

void RopeConfig::visit(Visitor& v) {
  v.field("theta", theta, "RoPE base frequency (rotate-half convention, as HF Llama)",
          kPositiveReal);
}

void LayerSharingConfig::visit(Visitor& v) {
  v.choice("scheme", scheme, kSharingSchemes,
           "Order in which physical blocks run: immediate 0,0,1,1,…; repeat_all_over 0…n-1,0…n-1; "
           "reverse 0…n-1,n-1…0");
  v.field("repeats", repeats, "Times each physical block runs; 1 means no sharing",
          IntRange{1, 64});
}

void LayerSharingConfig::check(const Checker& c) const {
  c.require(
      !(scheme == SharingScheme::none && repeats > 1), "repeats",
      "repeats is " + std::to_string(repeats) +
          " but scheme is none; choose a scheme (immediate | repeat_all_over | reverse) or set "
          "repeats: 1");
}

void InitConfig::visit(Visitor& v) {
  v.field("std", std, "Standard deviation of the normal init of every linear and embedding weight",
          kPositiveReal);
}

void ModelConfig::visit(Visitor& v) {
  v.field("vocab_size", vocab_size, "Vocabulary size (token ids are 0…vocab_size-1)",
          IntRange{1, 1LL << 31});
  v.field("dim", dim, "Model width (embedding and residual stream)", IntRange{1, 1 << 16});
  v.field("n_layers", n_layers, "Physical transformer blocks (parameters)", IntRange{1, 4096});
  v.field("n_heads", n_heads, "Query heads", IntRange{1, 4096});
  v.field("n_kv_heads", n_kv_heads, "Key/value heads (GQA); must divide n_heads",
          IntRange{1, 4096});
  v.field("head_dim", head_dim, "Per-head width; 0 means dim / n_heads", IntRange{0, 1 << 14});
  v.section("ffn", ffn, "Feed-forward block");
  v.section("norm", norm, "Normalisation");
  v.section("rope", rope, "Rotary position embedding");
  v.field("max_seq_len", max_seq_len, "Longest sequence the model accepts", IntRange{1, 1 << 20});
  v.field("tie_embeddings", tie_embeddings, "The LM head reuses the input embedding matrix");
  v.section("layer_sharing", layer_sharing, "Block-wise weight sharing (MobileLLM-LS)");
  v.section("init", init, "Initialisation");
}

int64_t default_ffn_hidden(FfnType type, int64_t dim, int64_t multiple_of) {
  if (type != FfnType::swiglu) return 4 * dim;
  int64_t h = 8 * dim / 3;
  return (h + multiple_of - 1) / multiple_of * multiple_of;
}

void ModelConfig::finalize() {
  if (head_dim == 0 && n_heads > 0 && dim % n_heads == 0) head_dim = dim / n_heads;
  if (ffn.hidden_dim == 0) ffn.hidden_dim = default_ffn_hidden(ffn.type, dim, ffn.multiple_of);
}

void ModelConfig::check(const Checker& c) const {
  c.require(head_dim != 0, "n_heads",
            "dim " + std::to_string(dim) + " is not divisible by n_heads " +
                std::to_string(n_heads) +
                "; pick n_heads dividing dim, or set head_dim explicitly");
  c.require(n_kv_heads <= n_heads && n_heads % n_kv_heads == 0, "n_kv_heads",
            "n_heads " + std::to_string(n_heads) + " is not divisible by n_kv_heads " +
                std::to_string(n_kv_heads) + "; n_kv_heads must divide n_heads (GQA groups)");
  c.require(
      head_dim % 2 == 0, "head_dim",
      "head_dim " + std::to_string(head_dim) + " is odd; rotary embedding needs an even width");
}

std::vector<int64_t> ModelConfig::layer_schedule() const {
  std::vector<int64_t> order;
  int64_t r = layer_sharing.repeats;
  switch (layer_sharing.scheme) {
    case SharingScheme::none:
    case SharingScheme::immediate:
      for (int64_t i = 0; i < n_layers; ++i)
        for (int64_t k = 0; k < r; ++k) order.push_back(i);
      break;
    case SharingScheme::repeat_all_over:
      for (int64_t k = 0; k < r; ++k)
        for (int64_t i = 0; i < n_layers; ++i) order.push_back(i);
      break;
    case SharingScheme::reverse:
      for (int64_t k = 0; k < r; ++k)
        for (int64_t i = 0; i < n_layers; ++i) order.push_back(k % 2 == 0 ? i : n_layers - 1 - i);
      break;
  }
  return order;
}

}  // namespace deepthin::config
