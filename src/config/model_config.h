// The `model` section: everything that fixes a decoder's shape.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "config/schema.h"

namespace deepthin::config {

enum class FfnType { swiglu, relu, gelu };
inline constexpr std::array<std::string_view, 3> kFfnTypes{"swiglu", "relu", "gelu"};

enum class NormType { rmsnorm, layernorm };
inline constexpr std::array<std::string_view, 2> kNormTypes{"rmsnorm", "layernorm"};

// How physical blocks map to effective layers (MobileLLM-LS).
enum class SharingScheme { none, immediate, repeat_all_over, reverse };
inline constexpr std::array<std::string_view, 4> kSharingSchemes{"none", "immediate",
                                                                 "repeat_all_over", "reverse"};

struct FfnConfig : Section {
  FfnType type = FfnType::swiglu;
  int64_t hidden_dim = 0;  // 0: derived in ModelConfig::finalize
  int64_t multiple_of = 256;
  void visit(Visitor& v) override;
};

struct NormConfig : Section {
  NormType type = NormType::rmsnorm;
  double eps = 1e-5;
  void visit(Visitor& v) override;
};

struct RopeConfig : Section {
  double theta = 10000.0;
  void visit(Visitor& v) override;
};

struct LayerSharingConfig : Section {
  SharingScheme scheme = SharingScheme::none;
  int64_t repeats = 1;
  void visit(Visitor& v) override;
  void check(const Checker& c) const override;
};

struct InitConfig : Section {
  double std = 0.02;
  void visit(Visitor& v) override;
};

// Defaults are MobileLLM-125M's shape.
struct ModelConfig : Section {
  int64_t vocab_size = 32000;
  int64_t dim = 576;
  int64_t n_layers = 30;
  int64_t n_heads = 9;
  int64_t n_kv_heads = 3;
  int64_t head_dim = 0;  // 0: dim / n_heads
  FfnConfig ffn;
  NormConfig norm;
  RopeConfig rope;
  int64_t max_seq_len = 2048;
  bool tie_embeddings = true;
  LayerSharingConfig layer_sharing;
  InitConfig init;

  void visit(Visitor& v) override;
  void finalize() override;
  void check(const Checker& c) const override;

  int64_t effective_layers() const { return n_layers * layer_sharing.repeats; }
  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  // The physical block each effective layer runs, in order (length effective_layers()).
  std::vector<int64_t> layer_schedule() const;
};

// The FFN width deepthin derives when ffn.hidden_dim is 0: LLaMA's rule for SwiGLU (8/3·dim rounded
// up to multiple_of, which gives every MobileLLM preset), 4·dim for a plain FFN.
int64_t default_ffn_hidden(FfnType type, int64_t dim, int64_t multiple_of);

}  // namespace deepthin::config
