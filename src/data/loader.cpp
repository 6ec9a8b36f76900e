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

Json LoaderState::to_json() const {
  Json j = Json::object();
  j["seed"] = static_cast<int64_t>(seed);
  j["cursor"] = cursor;
  return j;
}

LoaderState LoaderState::from_json(const Json& j, const std::string& where) {
  LoaderState s;
  s.seed = static_cast<uint64_t>(json::as_int(json::at(j, "seed", where), where + ": seed"));
  s.cursor = json::as_int(json::at(j, "cursor", where), where + ": cursor");
  if (s.cursor < 0) fail_input(where + ": negative loader cursor");
  return s;
}

Loader::Loader(std::shared_ptr<const TokenDataset> dataset, LoaderOptions opts)
    : ds_(std::move(dataset)), opts_(opts) {
  if (opts_.micro_batch < 1 || opts_.seq_len < 1)
    fail_input("loader: micro_batch and seq_len must be >= 1");
  if (opts_.world_size < 1 || opts_.rank < 0 || opts_.rank >= opts_.world_size)
    fail_input("loader: rank " + std::to_string(opts_.rank) + " is outside world size " +
               std::to_string(opts_.world_size));
  n_windows_ = ds_->num_windows(opts_.seq_len);
  if (n_windows_ == 0)
    fail_input(ds_->description() + ": " + std::to_string(ds_->total_tokens()) +
               " tokens hold no window of seq_len + 1 = " + std::to_string(opts_.seq_len + 1) +
               " tokens");
}

Loader::~Loader() {
  stop_prefetch();
}

int64_t Loader::window_at(int64_t pos) const {
  const int64_t epoch = pos / n_windows_, i = pos % n_windows_;
  if (!opts_.shuffle) return i;
  std::lock_guard<std::mutex> lock(perm_mutex_);
  if (epoch != perm_epoch_) {
    perm_ = std::make_unique<Permutation>(n_windows_,
                                          opts_.seed * 1000003ull + static_cast<uint64_t>(epoch));
    perm_epoch_ = epoch;
  }
  return (*perm_)(i);
}

Batch Loader::make_batch(int64_t cursor) const {
  const int64_t B = opts_.micro_batch, T = opts_.seq_len;
  Batch b;
  b.tokens = at::empty({B, T + 1}, at::kLong);
  int64_t* out = b.tokens.data_ptr<int64_t>();
  const int64_t first = cursor + opts_.rank * B;
  b.epoch = first / n_windows_;
  for (int64_t j = 0; j < B; ++j) {
    int64_t w = window_at(first + j);
    b.window_ids.push_back(w);
    ds_->read_window(w, T, out + j * (T + 1));
  }
  return b;
}

void Loader::start_prefetch() {
  if (opts_.prefetch <= 0 || worker_.joinable()) return;
  stop_ = false;
  produce_cursor_ = cursor_;
  worker_ = std::thread([this] {
    const int64_t step = opts_.micro_batch * opts_.world_size;
    while (true) {
      int64_t c;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || static_cast<int>(queue_.size()) < opts_.prefetch; });
        if (stop_) return;
        c = produce_cursor_;
        produce_cursor_ += step;
      }
      Batch b;
      try {
        b = make_batch(c);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        worker_error_ = std::current_exception();
        cv_.notify_all();
        return;
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
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
  const int64_t step = opts_.micro_batch * opts_.world_size;
  if (opts_.prefetch <= 0) {
    Batch b = make_batch(cursor_);
    cursor_ += step;
    return b;
  }
  start_prefetch();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty() || worker_error_; });
  if (queue_.empty() && worker_error_) std::rethrow_exception(worker_error_);
  Batch b = std::move(queue_.front());
  queue_.pop_front();
  cursor_ += step;
  cv_.notify_all();
  return b;
}

LoaderState Loader::state() const {
  return LoaderState{opts_.seed, cursor_};
}

void Loader::set_state(const LoaderState& s) {
  stop_prefetch();
  if (s.seed != opts_.seed) {
    opts_.seed = s.seed;
    std::lock_guard<std::mutex> lock(perm_mutex_);
    perm_epoch_ = -1;
  }
  cursor_ = s.cursor;
  worker_error_ = nullptr;
}

int64_t Loader::epoch() const {
  return cursor_ / n_windows_;
}

}  // namespace deepthin::data
