// Next-token cross-entropy fused with the LM head, computed in chunks of rows.
//
// The naive path materialises logits [tokens × vocab] in bf16, then a float copy for log_softmax,
// then keeps both for backward: at micro-batch 16 × 2048 and a 32k vocabulary that is over 6 GB.
// Here the forward pass walks the rows chunk by chunk: logits for the chunk, log-sum-exp, the loss,
// and right away the gradients with respect to the hidden states and the head weight (softmax −
// one-hot). Backward only scales the stored gradients, so no more than one chunk of logits is ever
// alive.
#pragma once

#include <ATen/core/Tensor.h>

namespace deepthin::train {

struct LmLossOptions {
  int64_t chunk_rows = 4096;
  // Matmul dtype: bf16 under mixed precision, fp32 otherwise. Softmax maths is always fp32.
  at::ScalarType compute_dtype = at::kFloat;
  int64_t ignore_index = -100;  // targets equal to this are masked out
};

// hidden [N, D], weight [V, D], targets [N] int64 → mean cross-entropy over unmasked rows (fp32
// scalar). Differentiable with respect to hidden and weight.
at::Tensor lm_head_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                 const at::Tensor& targets, const LmLossOptions& opts = {});

}  // namespace deepthin::train
