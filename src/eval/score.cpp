#include "eval/score.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <sstream>

#include "util/error.h"
#include "util/fs.h"
#include "util/strings.h"

namespace deepthin::eval {

std::vector<std::vector<int64_t>> read_token_lines(const std::filesystem::path& path,
                                                   int64_t vocab_size, int64_t max_len) {
  std::string text = read_file(path, "token file");
  std::vector<std::vector<int64_t>> out;
  std::istringstream lines(text);
  std::string line;
  int lineno = 0;
  while (std::getline(lines, line)) {
    ++lineno;
    std::string where = path.string() + ":" + std::to_string(lineno);
    std::istringstream words(line);
    std::vector<int64_t> seq;
    std::string w;
    while (words >> w) {
      auto id = parse_int(w);
      if (!id) fail_input(where + ": '" + w + "' is not a token id (expected integers)");
      if (*id < 0 || *id >= vocab_size)
        fail_input(where + ": token id " + w + " is outside the vocabulary [0, " +
                   std::to_string(vocab_size) + ")");
      seq.push_back(*id);
    }
    if (seq.empty()) continue;
    if (seq.size() < 2) fail_input(where + ": a sequence needs at least 2 tokens to score");
    if (static_cast<int64_t>(seq.size()) > max_len)
      fail_input(where + ": " + std::to_string(seq.size()) + " tokens exceed model.max_seq_len " +
                 std::to_string(max_len));
    out.push_back(std::move(seq));
  }
  if (out.empty()) fail_input(path.string() + ": no token sequences found");
  return out;
}

SequenceScore score_sequence(model::Decoder& m, const std::vector<int64_t>& tokens,
                             train::Precision precision) {
  torch::NoGradGuard no_grad;
  auto device = m->embed_tokens->weight.device();
  auto ids = torch::tensor(tokens, torch::kInt64).to(device).unsqueeze(0);
  torch::Tensor logp;
  {
    train::AutocastScope autocast(device, precision);
    auto logits = m->forward(ids.narrow(1, 0, ids.size(1) - 1));
    logp = at::log_softmax(logits.to(torch::kFloat32), -1);
  }
  auto target = ids.narrow(1, 1, ids.size(1) - 1).unsqueeze(-1);
  auto picked = logp.gather(-1, target).squeeze(-1).squeeze(0).to(torch::kFloat64).cpu();
  SequenceScore s;
  s.logprobs.assign(picked.data_ptr<double>(), picked.data_ptr<double>() + picked.numel());
  for (double v : s.logprobs) s.sum += v;
  return s;
}

}  // namespace deepthin::eval
