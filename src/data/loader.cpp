#include "data/loader.h"

#include <ATen/ATen.h>

#include "util/error.h"

namespace deepthin::data {

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
}  // namespace

Permutation::Permutation(int64_t n, uint64_t seed) : n_(n) {
  int bits = 2;
  while ((int64_t{1} << bits) < n && bits < 62) bits += 2;  // even: a balanced Feistel network
  half_bits_ = bits / 2;
  mask_ = (uint64_t{1} << half_bits_) - 1;
  uint64_t k = seed;
  for (auto& key : keys_) key = k = splitmix64(k);
}

uint64_t Permutation::round(uint64_t x, int r) const {
  return splitmix64(x ^ keys_[r]) & mask_;
}

int64_t Permutation::operator()(int64_t i) const {
  uint64_t x = static_cast<uint64_t>(i);
  do {  // cycle walking: re-encrypt until the value falls back into [0, n)
    uint64_t left = x >> half_bits_, right = x & mask_;
    for (int r = 0; r < 4; ++r) {
      uint64_t next = left ^ round(right, r);
      left = right;
      right = next;
    }
    x = (left << half_bits_) | right;
  } while (x >= static_cast<uint64_t>(n_));
  return static_cast<int64_t>(x);
}

namespace {

std::vector<MixSource> mix_sources(const std::vector<LoaderSource>& sources, int64_t seq_len) {
  std::vector<MixSource> out;
  for (const auto& s : sources) {
    const int64_t n = s.dataset->num_windows(seq_len);
    if (n == 0)
      fail_input((s.name.empty() ? std::string() : "data source '" + s.name + "': ") +
                 s.dataset->description() + ": " + std::to_string(s.dataset->total_tokens()) +
                 " tokens hold no window of seq_len + 1 = " + std::to_string(seq_len + 1) +
                 " tokens");
    out.push_back(MixSource{s.name, s.weight, n});
  }
  return out;
}

const std::vector<LoaderSource>& checked(const std::vector<LoaderSource>& sources,
                                         const LoaderOptions& o) {
  if (o.micro_batch < 1 || o.seq_len < 1) fail_input("loader: micro_batch and seq_len must be >= 1");
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    fail_input("loader: rank " + std::to_string(o.rank) + " is outside world size " +
               std::to_string(o.world_size));
  if (sources.empty()) fail_input("loader: no data source");
  return sources;
}

}  // namespace

Loader::Loader(std::shared_ptr<const TokenDataset> dataset, LoaderOptions opts)
    : Loader(std::vector<LoaderSource>{LoaderSource{"", 1.0, std::move(dataset)}}, opts) {}

Loader::Loader(std::vector<LoaderSource> sources, LoaderOptions opts)
    : sources_(std::move(sources)),
      opts_(opts),
      mixture_(mix_sources(checked(sources_, opts_), opts_.seq_len), opts_.seed, opts_.shuffle),
      state_(mixture_.initial_state()) {}

Loader::~Loader() {
  stop_prefetch();
}

int64_t Loader::num_windows() const {
  int64_t n = 0;
  for (size_t s = 0; s < mixture_.size(); ++s) n += mixture_.source(s).windows;
  return n;
}

Batch Loader::make_batch(const MixState& st) const {
  const int64_t B = opts_.micro_batch, T = opts_.seq_len;
  Batch b;
  b.after = st;
  std::vector<Mixture::Pick> picks;
  picks.reserve(static_cast<size_t>(B * opts_.world_size));
  mixture_.advance(b.after, B * opts_.world_size, &picks);
  b.tokens = at::empty({B, T + 1}, at::kLong);
  int64_t* out = b.tokens.data_ptr<int64_t>();
  for (int64_t j = 0; j < B; ++j) {
    const auto& p = picks[static_cast<size_t>(opts_.rank * B + j)];
    if (j == 0) b.epoch = p.epoch;
    b.window_ids.push_back(p.window);
    b.sources.push_back(p.source);
    sources_[p.source].dataset->read_window(p.window, T, out + j * (T + 1));
  }
  // A source's epoch e > 0 begins at the step that serves its window position e·n.
  for (size_t s = 0; s < st.sources.size(); ++s) {
    const int64_t n = mixture_.source(s).windows;
    const int64_t before = st.sources[s].position, now = b.after.sources[s].position;
    for (int64_t e = before / n + (before % n ? 1 : 0); e * n < now; ++e)
      if (e > 0) b.epochs_begun.emplace_back(static_cast<int>(s), e);
  }
  return b;
}

void Loader::start_prefetch() {
  if (opts_.prefetch <= 0 || worker_.joinable()) return;
  stop_ = false;
  produce_state_ = state_;
  worker_ = std::thread([this] {
    while (true) {
      MixState st;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || static_cast<int>(queue_.size()) < opts_.prefetch; });
        if (stop_) return;
        st = produce_state_;
      }
      Batch b;
      try {
        b = make_batch(st);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        worker_error_ = std::current_exception();
        cv_.notify_all();
        return;
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      produce_state_ = b.after;
      queue_.push_back(std::move(b));
      cv_.notify_all();
    }
  });
}

void Loader::stop_prefetch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
  queue_.clear();
}

Batch Loader::next() {
  if (opts_.prefetch <= 0) {
    Batch b = make_batch(state_);
    state_ = b.after;
    return b;
  }
  start_prefetch();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty() || worker_error_; });
  if (queue_.empty() && worker_error_) std::rethrow_exception(worker_error_);
  Batch b = std::move(queue_.front());
  queue_.pop_front();
  state_ = b.after;
  cv_.notify_all();
  return b;
}

LoaderState Loader::state() const {
  return state_;
}

void Loader::set_state(const LoaderState& s, bool allow_change, std::vector<std::string>* notes) {
  stop_prefetch();
  state_ = mixture_.resume(s, allow_change, notes);
  worker_error_ = nullptr;
}

std::vector<SourcePlan> data_plan(const Loader& loader, int64_t windows_read) {
  std::vector<SourcePlan> out;
  const Mixture& m = loader.mixture();
  for (size_t s = 0; s < loader.num_sources(); ++s) {
    SourcePlan p;
    p.name = loader.source(s).name.empty() ? std::string("data.path") : loader.source(s).name;
    p.weight = loader.source(s).weight;
    p.share = m.share(s);
    p.tokens = loader.dataset(s).total_tokens();
    p.windows = m.source(s).windows;
    p.description = loader.dataset(s).description();
    const double read = p.share * static_cast<double>(windows_read);
    p.tokens_read = read * static_cast<double>(loader.seq_len());
    p.epochs = read / static_cast<double>(p.windows);
    out.push_back(std::move(p));
  }
  return out;
}

int64_t Loader::epoch() const {
  return state_.sources[0].position / mixture_.source(0).windows;
}

}  // namespace deepthin::data
