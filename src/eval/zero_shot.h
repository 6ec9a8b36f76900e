// Zero-shot multiple-choice accuracy as lm-evaluation-harness 0.4 computes it for a causal model:
// each (context, continuation) request is tokenised as BOS + context + continuation (trailing
// spaces of the context moved onto the continuation; the continuation's tokens are what the whole
// string has beyond the context's), the continuation's tokens' log-probabilities are summed, and
//   acc      = [argmax over choices of the log-likelihood is the gold choice]
//   acc_norm = the same with each log-likelihood divided by its choice's length in characters,
// with the standard error of the mean over items (sample standard deviation / √n).
//
// Scoring is batched: the requests of many items are packed into padded batches of about
// `batch_tokens` tokens. Where the choices of an item share a long prefix (a BoolQ passage, a
// HellaSwag context) the prefix runs once and its keys and values serve every choice.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "eval/tasks.h"
#include "model/decoder.h"
#include "train/precision.h"
#include "util/json_io.h"

namespace deepthin::eval {

struct ZeroShotOptions {
  train::Precision precision = train::Precision::fp32;
  int64_t batch_tokens = 16384;  // padded tokens per forward pass
  // Tokens a shared prefix must save for an item's choices to run as its prefix once plus the rest;
  // 0: never (every request goes into the length-sorted batches). Sharing saves compute, which is
  // what a CPU lacks; on a GPU two small forward passes per item cost more in launches and syncs
  // than the padded batches, so `deepthin eval` turns it off there.
  int64_t shared_prefix_min = 64;
  bool truncate_left = false;  // cut over-long requests from the left (lm-eval) instead of failing
  // Called after each item: task name, items done, items in the task.
  std::function<void(const std::string&, int64_t, int64_t)> progress;
};

struct ItemScore {
  std::vector<double> loglik;  // per choice: Σ log p(continuation tokens)
  std::vector<bool> greedy;    // per choice: every continuation token was the argmax
  int pred = 0, pred_norm = 0, gold = 0;
};

struct TaskScore {
  std::string task;
  int64_t n = 0;
  double acc = 0, acc_stderr = 0, acc_norm = 0, acc_norm_stderr = 0;
  std::vector<ItemScore> items;
  double seconds = 0;
};

// Scores the tasks with the model as placed (its device). Input error naming the task file and line
// when a request exceeds model.max_seq_len and truncate_left is off.
std::vector<TaskScore> score_tasks(model::Decoder& m, const data::Tokenizer& tok,
                                   const std::vector<Task>& tasks, const ZeroShotOptions& o);

// {task: {acc, acc_stderr, acc_norm, acc_norm_stderr, n}, ..., "average": {...}}.
Json zero_shot_json(const std::vector<TaskScore>& scores);

}  // namespace deepthin::eval
