// Parameter and FLOP counts from a ModelConfig alone: no tensors are built, so the 1.5B preset is
// counted instantly. Tests check these against the numel of a built model.
#pragma once

#include <cstdint>

#include "config/model_config.h"

namespace deepthin::model {

struct ParamCounts {
  int64_t embedding = 0;      // input embedding, vocab·dim
  int64_t lm_head = 0;        // untied output head, vocab·dim; 0 when tied
  int64_t attention = 0;      // q, k, v, o over all physical blocks
  int64_t ffn = 0;            // gate/up/down over all physical blocks
  int64_t norm = 0;           // two per block plus the final norm
  int64_t total = 0;          // unique parameters (shared blocks counted once)
  int64_t non_embedding = 0;  // total minus embedding and lm_head
  int64_t physical_layers = 0;
  int64_t effective_layers = 0;
  // Weights multiplied per token: every block once per time it runs, plus the vocab·dim output
  // projection (tied or not). The "N" of the FLOP estimate.
  int64_t matmul_params_per_token = 0;
};

ParamCounts count_params(const config::ModelConfig& m);

// Training FLOPs per token at context length seq_len: 6·N + 12·L_eff·(n_heads·head_dim)·seq_len,
// with N = matmul_params_per_token (forward 2N, backward 4N; attention scores and values
// 2·2·T·width per layer forward, counted without the causal halving, as PaLM's MFU convention
// does).
int64_t training_flops_per_token(const config::ModelConfig& m, int64_t seq_len);

}  // namespace deepthin::model
