#include "model/param_count.h"

namespace deepthin::model {

using config::FfnType;
using config::NormType;

ParamCounts count_params(const config::ModelConfig& m) {
  ParamCounts c;
  const int64_t norm_size = m.norm.type == NormType::layernorm ? 2 * m.dim : m.dim;
  const int64_t attn_block = m.dim * m.q_dim() + 2 * m.dim * m.kv_dim() + m.q_dim() * m.dim;
  const int64_t ffn_mats = m.ffn.type == FfnType::swiglu ? 3 : 2;
  const int64_t ffn_block = ffn_mats * m.dim * m.ffn.hidden_dim;

  c.physical_layers = m.n_layers;
  c.effective_layers = m.effective_layers();
  c.embedding = m.vocab_size * m.dim;
  c.lm_head = m.tie_embeddings ? 0 : m.vocab_size * m.dim;
  c.attention = m.n_layers * attn_block;
  c.ffn = m.n_layers * ffn_block;
  c.norm = m.n_layers * 2 * norm_size + norm_size;
  c.total = c.embedding + c.lm_head + c.attention + c.ffn + c.norm;
  c.non_embedding = c.total - c.embedding - c.lm_head;
  c.matmul_params_per_token = c.effective_layers * (attn_block + ffn_block) + m.vocab_size * m.dim;
  return c;
}

int64_t training_flops_per_token(const config::ModelConfig& m, int64_t seq_len) {
  ParamCounts c = count_params(m);
  return 6 * c.matmul_params_per_token + 12 * c.effective_layers * m.q_dim() * seq_len;
}

}  // namespace deepthin::model
