#include "eval/zero_shot.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "util/error.h"
#include "util/unicode.h"

namespace deepthin::eval {

namespace {

// One log-likelihood request: the model reads `input` and the last `n_cont` of its positions
// predict `targets`.
struct Request {
  size_t item = 0, choice = 0;
  std::vector<int64_t> input;
  std::vector<int64_t> targets;
  int64_t first_scored = 0;  // position in `input` whose logits predict targets[0]
};

struct Result {
  double loglik = 0;
  bool greedy = true;
};

Request encode(const data::Tokenizer& tok, std::string context, std::string continuation,
               int64_t max_len, bool truncate_left, const Task& task, const McItem& item) {
  // Trailing whitespace of the context belongs to the continuation (lm-eval's _encode_pair:
  // context.rstrip(), Python's whitespace on every code point).
  const size_t cut = unicode::py_rstrip(context).size();
  continuation = context.substr(cut) + continuation;
  context.resize(cut);
  // lm-eval's tok_encode adds BOS unless the text already starts with BOS's own spelling ("<s>"),
  // which it then takes for the token (the tokenizer, like SentencePiece, reads it as text).
  const std::string bos_text = tok.piece(tok.bos_id());
  auto with_bos = [&](const std::string& s) {
    std::vector<int64_t> ids;
    if (bos_text.empty() || s.compare(0, bos_text.size(), bos_text) != 0)
      ids.push_back(tok.bos_id());
    for (int32_t t : tok.encode(s)) ids.push_back(t);
    return ids;
  };
  std::vector<int64_t> whole, ctx;
  if (context.empty()) {  // lm-eval conditions an empty context on BOS alone
    ctx = {tok.bos_id()};
    whole = ctx;
    for (int32_t t : tok.encode(continuation)) whole.push_back(t);
  } else {
    whole = with_bos(context + continuation);
    ctx = with_bos(context);
  }
  Request r;
  const int64_t n_ctx =
      std::min<int64_t>(static_cast<int64_t>(ctx.size()), static_cast<int64_t>(whole.size()));
  r.targets.assign(whole.begin() + n_ctx, whole.end());
  if (static_cast<int64_t>(whole.size()) > max_len + 1) {
    if (!truncate_left)
      fail_input(task.file.string() + ":" + std::to_string(item.line) + ": a request of " +
                 std::to_string(whole.size() - 1) + " tokens exceeds model.max_seq_len " +
                 std::to_string(max_len) +
                 "; pass --truncate-left to cut it from the left as "
                 "lm-eval does");
    whole.erase(whole.begin(), whole.end() - (max_len + 1));
  }
  r.input.assign(whole.begin(), whole.end() - 1);
  r.first_scored = static_cast<int64_t>(r.input.size()) - static_cast<int64_t>(r.targets.size());
  if (r.first_scored < 0)  // lm-eval asserts here too: no score of part of a continuation
    fail_input(task.file.string() + ":" + std::to_string(item.line) +
               ": the continuation alone is " + std::to_string(r.targets.size()) +
               " tokens, more than the model's window of " + std::to_string(max_len) +
               "; it cannot be scored whole");
  if (r.targets.empty())  // lm-eval asserts as well
    fail_input(task.file.string() + ":" + std::to_string(item.line) +
               ": a continuation adds no token beyond its context (" + std::to_string(ctx.size()) +
               " tokens); it cannot be scored");
  return r;
}

// One request's scored positions inside a forward pass: row `row` of the batch's hidden states,
// positions [first, first + targets.size()).
struct Scored {
  int64_t row = 0, first = 0;
  const std::vector<int64_t>* targets = nullptr;
  Result* out = nullptr;
};

// Every scored position of a forward pass at once: one gather of hidden rows, one LM head, one
// log-softmax, one copy to the host. (Per request, a GPU spent its time on launches and syncs.)
void score_all(model::Decoder& m, const at::Tensor& hidden, const std::vector<Scored>& reqs) {
  std::vector<int64_t> rows, cols, targets;
  for (const auto& r : reqs) {
    *r.out = Result{};
    for (size_t i = 0; i < r.targets->size(); ++i) {
      rows.push_back(r.row);
      cols.push_back(r.first + static_cast<int64_t>(i));
      targets.push_back((*r.targets)[i]);
    }
  }
  if (targets.empty()) return;
  const auto dev = hidden.device();
  auto idx = [&](const std::vector<int64_t>& v) { return at::tensor(v, at::kLong).to(dev); };
  auto picked_rows = hidden.index({idx(rows), idx(cols)});  // [N, D]
  auto logits = m->logits(picked_rows).to(at::kFloat);
  auto t = idx(targets).unsqueeze(1);
  auto logp = at::log_softmax(logits, -1);
  auto picked = logp.gather(1, t).squeeze(1).to(at::kDouble).cpu();
  // lm-eval's is_greedy: the argmax of the log-softmax (where rounding can tie two logits).
  auto best = (logp.argmax(1) == t.squeeze(1)).cpu();
  const double* ll = picked.data_ptr<double>();
  const bool* greedy = best.data_ptr<bool>();
  size_t k = 0;
  for (const auto& r : reqs) {
    for (size_t i = 0; i < r.targets->size(); ++i, ++k) {
      r.out->loglik += ll[k];
      r.out->greedy = r.out->greedy && greedy[k];
    }
  }
}

class Scorer {
 public:
  Scorer(model::Decoder& m, const ZeroShotOptions& o) : m_(m), o_(o) {
    device_ = m->embed_tokens->weight.device();
  }

  // Full sequences, padded into batches of about batch_tokens.
  void run_batched(std::vector<Request*> reqs, std::vector<Result*> out) {
    std::vector<size_t> order(reqs.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return reqs[a]->input.size() > reqs[b]->input.size(); });
    size_t i = 0;
    while (i < order.size()) {
      const int64_t len = static_cast<int64_t>(reqs[order[i]]->input.size());
      const int64_t batch = std::max<int64_t>(1, o_.batch_tokens / std::max<int64_t>(1, len));
      const size_t end = std::min(order.size(), i + static_cast<size_t>(batch));
      auto tokens = at::zeros({static_cast<int64_t>(end - i), len}, at::kLong);
      for (size_t k = i; k < end; ++k) {
        const auto& in = reqs[order[k]]->input;
        tokens[static_cast<int64_t>(k - i)]
            .narrow(0, 0, static_cast<int64_t>(in.size()))
            .copy_(at::tensor(in, at::kLong));
      }
      at::Tensor hidden;
      {
        train::AutocastScope ac(device_, o_.precision);
        hidden = m_->hidden_states(tokens.to(device_));
      }
      std::vector<Scored> scored;
      for (size_t k = i; k < end; ++k) {
        const Request& r = *reqs[order[k]];
        scored.push_back({static_cast<int64_t>(k - i), r.first_scored, &r.targets, out[order[k]]});
      }
      {
        train::AutocastScope ac(device_, o_.precision);
        score_all(m_, hidden, scored);
      }
      i = end;
    }
  }

  // The choices of one item: their common prefix once, then the rest of every choice in one batch
  // that reads the prefix's keys and values.
  void run_shared_prefix(std::vector<Request*> reqs, int64_t prefix, std::vector<Result*> out) {
    auto cache = m_->make_cache();
    const auto& first = reqs[0]->input;
    {
      train::AutocastScope ac(device_, o_.precision);
      m_->hidden_states(
          at::tensor(std::vector<int64_t>(first.begin(), first.begin() + prefix), at::kLong)
              .unsqueeze(0)
              .to(device_),
          &cache);
    }
    const int64_t n = static_cast<int64_t>(reqs.size());
    for (auto& slot : cache.slots) {
      slot.k = slot.k.expand({n, slot.k.size(1), slot.k.size(2), slot.k.size(3)});
      slot.v = slot.v.expand({n, slot.v.size(1), slot.v.size(2), slot.v.size(3)});
    }
    int64_t len = 0;
    for (auto* r : reqs)
      len = std::max<int64_t>(len, static_cast<int64_t>(r->input.size()) - prefix);
    auto tokens = at::zeros({n, len}, at::kLong);
    for (int64_t k = 0; k < n; ++k) {
      const auto& in = reqs[k]->input;
      const int64_t rest = static_cast<int64_t>(in.size()) - prefix;
      tokens[k]
          .narrow(0, 0, rest)
          .copy_(at::tensor(std::vector<int64_t>(in.begin() + prefix, in.end()), at::kLong));
    }
    at::Tensor hidden;
    {
      train::AutocastScope ac(device_, o_.precision);
      hidden = m_->hidden_states(tokens.to(device_), &cache);
    }
    std::vector<Scored> scored;
    for (int64_t k = 0; k < n; ++k)
      scored.push_back({k, reqs[k]->first_scored - prefix, &reqs[k]->targets, out[k]});
    train::AutocastScope ac(device_, o_.precision);
    score_all(m_, hidden, scored);
  }

 private:
  model::Decoder& m_;
  const ZeroShotOptions& o_;
  c10::Device device_{c10::kCPU};
};

double stderr_of(const std::vector<double>& x) {
  const double n = static_cast<double>(x.size());
  if (x.size() < 2) return NAN;
  const double mean = std::accumulate(x.begin(), x.end(), 0.0) / n;
  double ss = 0;
  for (double v : x) ss += (v - mean) * (v - mean);
  return std::sqrt(ss / (n - 1)) / std::sqrt(n);
}

// numpy.argmax: the first NaN when there is one, else the first maximum.
int argmax(const std::vector<double>& v) {
  for (size_t i = 0; i < v.size(); ++i)
    if (std::isnan(v[i])) return static_cast<int>(i);
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Every request of every task (per task, per item, per choice).
using Requests = std::vector<std::vector<std::vector<Request>>>;

Requests encode_all(const data::Tokenizer& tok, const std::vector<Task>& tasks, int64_t max_len,
                    const ZeroShotOptions& o) {
  Requests all(tasks.size());
  for (size_t k = 0; k < tasks.size(); ++k) {
    const auto& task = tasks[k];
    all[k].resize(task.items.size());
    for (size_t i = 0; i < task.items.size(); ++i) {
      const auto& item = task.items[i];
      for (size_t c = 0; c < item.contexts.size(); ++c) {
        all[k][i].push_back(encode(tok, item.contexts[c], item.continuations[c], max_len,
                                   o.truncate_left, task, item));
        all[k][i].back().item = i;
        all[k][i].back().choice = c;
      }
    }
  }
  return all;
}

// The tokens an item's choices share before the first scored position.
int64_t shared_prefix(const std::vector<Request>& rs) {
  int64_t prefix = static_cast<int64_t>(rs[0].input.size());
  for (const auto& r : rs) {
    int64_t p = 0;
    while (p < prefix && p < static_cast<int64_t>(r.input.size()) && r.input[p] == rs[0].input[p])
      ++p;
    prefix = std::min(p, r.first_scored);  // scored positions stay after the prefix
  }
  return prefix;
}

// Runs one task's requests, a chunk of items between progress reports: per item, per choice.
std::vector<std::vector<Result>> run_task(Scorer& scorer, const Task& task,
                                          std::vector<std::vector<Request>>& reqs,
                                          const ZeroShotOptions& o) {
  std::vector<std::vector<Result>> results(task.items.size());
  for (size_t i = 0; i < task.items.size(); ++i) results[i].resize(task.items[i].contexts.size());
  // Items whose choices share a long prefix run one by one; the rest are batched together.
  std::vector<Request*> pooled;
  std::vector<Result*> pooled_out;
  const size_t chunk = 256;  // items between progress reports
  for (size_t begin = 0; begin < task.items.size(); begin += chunk) {
    const size_t end = std::min(task.items.size(), begin + chunk);
    for (size_t i = begin; i < end; ++i) {
      auto& rs = reqs[i];
      const int64_t prefix = shared_prefix(rs);
      std::vector<Request*> ptrs;
      std::vector<Result*> outs;
      for (size_t c = 0; c < rs.size(); ++c) {
        ptrs.push_back(&rs[c]);
        outs.push_back(&results[i][c]);
      }
      if (o.shared_prefix_min > 0 && rs.size() > 1 && prefix > 0 &&
          prefix * static_cast<int64_t>(rs.size() - 1) >= o.shared_prefix_min) {
        scorer.run_shared_prefix(ptrs, prefix, outs);
      } else {
        pooled.insert(pooled.end(), ptrs.begin(), ptrs.end());
        pooled_out.insert(pooled_out.end(), outs.begin(), outs.end());
      }
    }
    scorer.run_batched(pooled, pooled_out);
    pooled.clear();
    pooled_out.clear();
    if (o.progress)
      o.progress(task.name, static_cast<int64_t>(end), static_cast<int64_t>(task.items.size()));
  }
  return results;
}

// One item's log-likelihoods and its predictions, raw and length-normalised.
ItemScore score_item(const Task& task, const McItem& item, const std::vector<Result>& results) {
  ItemScore s;
  std::vector<double> norm;
  for (size_t c = 0; c < item.choices.size(); ++c) {
    const double ll = results[c].loglik;
    if (!std::isfinite(ll))
      fail_runtime(task.file.string() + ":" + std::to_string(item.line) + ": choice " +
                   std::to_string(c) + " has a non-finite log-likelihood (" + std::to_string(ll) +
                   "); the model's weights or its precision overflow; nothing is reported");
    s.loglik.push_back(ll);
    s.greedy.push_back(results[c].greedy);
    // lm-eval divides by the choice's length in code points as numpy does: an empty choice
    // gives -inf (NaN when its log-likelihood is 0), never a division by one.
    norm.push_back(ll / static_cast<double>(utf8_length(item.choices[c])));
  }
  s.pred = argmax(s.loglik);
  s.pred_norm = argmax(norm);
  s.gold = item.gold;
  return s;
}

// A task's accuracies and their standard errors, from its items' results.
void score_task(const Task& task, const std::vector<std::vector<Result>>& results, TaskScore& ts) {
  std::vector<double> acc, acc_norm;
  for (size_t i = 0; i < task.items.size(); ++i) {
    ItemScore s = score_item(task, task.items[i], results[i]);
    acc.push_back(s.pred == s.gold ? 1.0 : 0.0);
    acc_norm.push_back(s.pred_norm == s.gold ? 1.0 : 0.0);
    ts.items.push_back(std::move(s));
  }
  ts.n = static_cast<int64_t>(acc.size());
  ts.acc = std::accumulate(acc.begin(), acc.end(), 0.0) / static_cast<double>(ts.n);
  ts.acc_norm = std::accumulate(acc_norm.begin(), acc_norm.end(), 0.0) / static_cast<double>(ts.n);
  ts.acc_stderr = stderr_of(acc);
  ts.acc_norm_stderr = stderr_of(acc_norm);
}

}  // namespace

std::vector<TaskScore> score_tasks(model::Decoder& m, const data::Tokenizer& tok,
                                   const std::vector<Task>& tasks, const ZeroShotOptions& o) {
  torch::NoGradGuard no_grad;
  Scorer scorer(m, o);
  // Every request of every task first: tokenisation errors surface before any compute.
  Requests all = encode_all(tok, tasks, m->config().max_seq_len, o);
  std::vector<TaskScore> scores;
  for (size_t k = 0; k < tasks.size(); ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    TaskScore ts;
    ts.task = tasks[k].name;
    const auto results = run_task(scorer, tasks[k], all[k], o);
    score_task(tasks[k], results, ts);
    ts.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    scores.push_back(std::move(ts));
  }
  return scores;
}

Json zero_shot_json(const std::vector<TaskScore>& scores) {
  Json out = Json::object();
  double acc = 0, acc_norm = 0;
  int64_t items = 0;
  for (const auto& s : scores) {
    Json j = Json::object();
    j["acc"] = s.acc;
    j["acc_stderr"] = s.acc_stderr;
    j["acc_norm"] = s.acc_norm;
    j["acc_norm_stderr"] = s.acc_norm_stderr;
    j["n"] = s.n;
    j["seconds"] = s.seconds;
    out[s.task] = std::move(j);
    acc += s.acc;
    acc_norm += s.acc_norm;
    items += s.n;
  }
  if (!scores.empty()) {
    Json avg = Json::object();
    avg["acc"] = acc / static_cast<double>(scores.size());
    avg["acc_norm"] = acc_norm / static_cast<double>(scores.size());
    avg["tasks"] = static_cast<int64_t>(scores.size());
    avg["n"] = items;
    out["average"] = std::move(avg);
  }
  return out;
}

}  // namespace deepthin::eval
