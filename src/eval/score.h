// Per-position log-probabilities of the next token: the primitive under perplexity, zero-shot
// scoring and the cross-checks against transformers.
#pragma once

#include <filesystem>
#include <vector>

#include "model/decoder.h"
#include "train/precision.h"

namespace deepthin::eval {

struct SequenceScore {
  std::vector<double> logprobs;  // log p(token[t+1] | token[..t]), t = 0…T-2
  double sum = 0;
};

// One sequence of whitespace-separated token ids per line (blank lines skipped). Every id must be
// in [0, vocab_size) and every sequence 2…max_len tokens; errors name the file and line.
std::vector<std::vector<int64_t>> read_token_lines(const std::filesystem::path& path,
                                                   int64_t vocab_size, int64_t max_len);

// Scores one sequence with the model as placed (its device), under `precision` autocast.
SequenceScore score_sequence(model::Decoder& m, const std::vector<int64_t>& tokens,
                             train::Precision precision);

}  // namespace deepthin::eval
