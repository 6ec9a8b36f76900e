// Knowledge distillation: the student's next-token loss mixed with a divergence from a teacher's
// distribution over the vocabulary, (1 − ratio)·CE + ratio·T²·KD, as masked token means.
//
// Like the fused LM loss (train/loss.h), it walks the rows in chunks: the student's and the
// teacher's logits exist for one chunk at a time (in fp32 for the softmax maths), and the gradients
// with respect to the student's hidden states and head are computed chunk by chunk in the forward
// pass, so no [tokens × vocab] tensor outlives its chunk.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "config/train_config.h"

namespace deepthin::train {

struct KdLossOptions {
  config::KdLossType loss = config::KdLossType::forward_kl;
  double temperature = 1.0;
  double ratio = 1.0;
  int64_t chunk_rows = 4096;
  at::ScalarType compute_dtype = at::kFloat;  // matmul dtype of the student's and teacher's heads
  int64_t ignore_index = -100;
  // The gradients of the logits in closed form, written over the student's logits by one kernel
  // (kernels::distillation_rows: its CUDA kernel on GPUs, its ATen maths elsewhere); false runs
  // autograd over each chunk, the reference the CPU keeps.
  bool closed_form = false;
};

struct KdLossParts {
  at::Tensor total;  // differentiable with respect to the student's hidden states and head
  at::Tensor ce;     // the next-token cross-entropy (detached)
  at::Tensor kd;     // the divergence, without the T² factor (detached)
};

// The options the training step uses for kd: on a GPU, the closed-form gradients; on the CPU, the
// autograd reference.
KdLossOptions kd_loss_options(const config::KdConfig& kd, int64_t chunk_rows,
                              at::ScalarType compute_dtype, const c10::Device& device);

// student_hidden [N, D], student_weight [V, D], teacher_hidden [N, Dt], teacher_weight [V, Dt],
// targets [N]. The teacher tensors take no gradient.
KdLossParts distillation_loss(const at::Tensor& student_hidden, const at::Tensor& student_weight,
                              const at::Tensor& teacher_hidden, const at::Tensor& teacher_weight,
                              const at::Tensor& targets, const KdLossOptions& opts);

// The same from a teacher's top-k log-probabilities (kd.cache): teacher_ids [N, k] int64 and
// teacher_logp [N, k] (log-probabilities at temperature 1) instead of its hidden states and head.
// The loss is forward_kl over the teacher's k tokens plus one outcome for its remaining mass
// 1 − Σ exp(logp) (at T ≠ 1 taken as spread evenly over the other V − k tokens); forward_kl only.
// The gradients come in closed form, chunk by chunk, on any device; with k = V it is the full-logit
// forward_kl.
KdLossParts distillation_loss_topk(const at::Tensor& student_hidden,
                                   const at::Tensor& student_weight, const at::Tensor& teacher_ids,
                                   const at::Tensor& teacher_logp, const at::Tensor& targets,
                                   const KdLossOptions& opts);

// Per-row divergence between two sets of logits [N, V] at temperature T (no T² factor): the maths
// the chunked loss uses, for tests and evaluation.
at::Tensor kd_divergence(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                         config::KdLossType loss, double temperature);

}  // namespace deepthin::train
