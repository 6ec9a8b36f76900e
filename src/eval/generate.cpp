#include "eval/generate.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "util/error.h"

namespace deepthin::eval {

namespace {

int64_t sample(const at::Tensor& logits_row, const SampleOptions& o, at::Generator& gen) {
  auto logits = logits_row.to(at::kFloat).cpu();
  if (!at::isfinite(logits).all().item<bool>())
    fail_runtime("generate: the model produced non-finite logits (NaN or ±inf); its weights or "
                 "the precision overflow, so nothing can be sampled");
  if (o.temperature <= 0) return logits.argmax().item<int64_t>();
  logits = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < logits.size(0)) {
    auto kth = std::get<0>(logits.topk(o.top_k)).min();
    logits = logits.masked_fill(logits < kth, -INFINITY);
  }
  auto probs = at::softmax(logits, 0);
  if (o.top_p < 1.0) {
    auto [sorted, idx] = probs.sort(0, /*descending=*/true);
    auto cum = sorted.cumsum(0);
    auto drop = (cum - sorted) > o.top_p;  // keep the smallest prefix whose mass reaches top_p
    sorted = sorted.masked_fill(drop, 0);
    probs = at::zeros_like(probs).scatter(0, idx, sorted);
  }
  return at::multinomial(probs, 1, false, gen).item<int64_t>();
}

}  // namespace

std::vector<int64_t> generate(model::Decoder& m, const std::vector<int64_t>& prompt,
                              const SampleOptions& opts) {
  if (prompt.empty()) fail_input("generate: the prompt holds no tokens");
  torch::NoGradGuard no_grad;
  const auto device = m->embed_tokens->weight.device();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(opts.seed);
  const int64_t limit = m->config().max_seq_len;
  std::vector<int64_t> seq = prompt, out;
  auto cache = m->make_cache();
  auto ids = [&](size_t from) {
    return at::tensor(std::vector<int64_t>(seq.begin() + static_cast<int64_t>(from), seq.end()),
                      at::kLong)
        .to(device)
        .unsqueeze(0);
  };
  size_t fed = 0;  // tokens already in the cache
  while (static_cast<int64_t>(out.size()) < opts.max_new_tokens &&
         static_cast<int64_t>(seq.size()) < limit) {
    at::Tensor logits;
    {
      train::AutocastScope autocast(device, opts.precision);
      if (opts.use_cache) {
        logits = m->forward(ids(fed), &cache);
        fed = seq.size();
      } else {
        logits = m->forward(ids(0));
      }
    }
    int64_t next = sample(logits[0][-1], opts, gen);
    seq.push_back(next);
    out.push_back(next);
    if (next == opts.stop_id) break;
  }
  return out;
}

}  // namespace deepthin::eval
