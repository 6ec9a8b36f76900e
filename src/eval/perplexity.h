// Per-token perplexity of a token stream with sliding windows, the usual wikitext evaluation:
// windows of `window` tokens start every `stride` tokens; each window scores only the tokens no
// earlier window scored, so every token after the first is predicted once, with up to window −
// stride tokens of left context.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/decoder.h"
#include "train/precision.h"

namespace deepthin::eval {

struct PerplexityOptions {
  int64_t window = 0;  // 0: model.max_seq_len
  int64_t stride = 0;  // 0: window / 2
  int64_t batch_windows = 8;
  train::Precision precision = train::Precision::fp32;
  std::function<void(int64_t scored, int64_t total)> progress;
};

struct PerplexityResult {
  int64_t tokens = 0;  // tokens scored (the stream's length − 1)
  int64_t windows = 0;
  double nll = 0;  // mean negative log-likelihood per scored token (nats)
  double ppl = 0;  // exp(nll)
  double seconds = 0;
};

PerplexityResult sliding_perplexity(model::Decoder& m, const std::vector<int64_t>& tokens,
                                    const PerplexityOptions& o);

}  // namespace deepthin::eval
