#include "eval/perplexity.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <cmath>

#include "util/error.h"

namespace deepthin::eval {

PerplexityResult sliding_perplexity(model::Decoder& m, const std::vector<int64_t>& tokens,
                                    const PerplexityOptions& o) {
  torch::NoGradGuard no_grad;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t max_len = m->config().max_seq_len;
  const int64_t window = o.window > 0 ? o.window : max_len;
  const int64_t stride = o.stride > 0 ? o.stride : std::max<int64_t>(1, window / 2);
  if (window < 2 || window > max_len)
    fail_input("--seq-len " + std::to_string(window) + " must be 2…" + std::to_string(max_len) +
               " (model.max_seq_len)");
  if (stride > window)
    fail_input("--stride must not exceed the window (" + std::to_string(window) + ")");
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < 2) fail_input("perplexity needs at least 2 tokens");
  // Windows [begin, end) and the first position whose next token each scores.
  struct Win {
    int64_t begin, end, first;
  };
  std::vector<Win> wins;
  int64_t scored_to = 0;  // tokens [0, scored_to] have been predicted (token 0 never is)
  for (int64_t begin = 0; scored_to < n - 1; begin += stride) {
    const int64_t end = std::min(begin + window, n);
    wins.push_back({begin, end, scored_to - begin});
    scored_to = end - 1;
  }
  const auto device = m->embed_tokens->weight.device();
  double nll = 0;
  int64_t count = 0;
  for (size_t i = 0; i < wins.size(); i += static_cast<size_t>(o.batch_windows)) {
    const size_t j = std::min(wins.size(), i + static_cast<size_t>(o.batch_windows));
    int64_t len = 0;
    for (size_t k = i; k < j; ++k) len = std::max(len, wins[k].end - wins[k].begin);
    auto batch = at::zeros({static_cast<int64_t>(j - i), len}, at::kLong);
    for (size_t k = i; k < j; ++k)
      batch[static_cast<int64_t>(k - i)]
          .narrow(0, 0, wins[k].end - wins[k].begin)
          .copy_(at::tensor(
              std::vector<int64_t>(tokens.begin() + wins[k].begin, tokens.begin() + wins[k].end),
              at::kLong));
    at::Tensor hidden;
    {
      train::AutocastScope ac(device, o.precision);
      hidden = m->hidden_states(batch.to(device));
    }
    for (size_t k = i; k < j; ++k) {
      const Win& w = wins[k];
      const int64_t rows = w.end - w.begin - 1 - w.first;  // positions first … len−2
      at::Tensor logp;
      {
        train::AutocastScope ac(device, o.precision);
        logp = at::log_softmax(
            m->logits(hidden[static_cast<int64_t>(k - i)].narrow(0, w.first, rows)).to(at::kFloat),
            -1);
      }
      auto target = at::tensor(std::vector<int64_t>(tokens.begin() + w.begin + w.first + 1,
                                                    tokens.begin() + w.end),
                               at::kLong)
                        .to(device)
                        .unsqueeze(1);
      nll -= logp.gather(1, target).to(at::kDouble).sum().item<double>();
      count += rows;
    }
    if (o.progress) o.progress(count, n - 1);
  }
  PerplexityResult r;
  r.tokens = count;
  r.windows = static_cast<int64_t>(wins.size());
  r.nll = nll / static_cast<double>(count);
  r.ppl = std::exp(r.nll);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace deepthin::eval
