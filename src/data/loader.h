// The training loader: memory-mapped shards in, (micro_batch, seq_len + 1) token windows out.
//
// Order: every epoch is a seeded pseudo-random permutation of all windows (a Feistel network with
// cycle walking, so it costs no memory however many windows there are). The epochs are laid end to
// end into one stream; a global cursor walks it. At each step the ranks take consecutive, disjoint
// slices: rank r of w gets stream positions cursor + r·B … cursor + r·B + B − 1, then the cursor
// moves by w·B. So every window is served exactly once per epoch for any world size, and the whole
// state is (seed, cursor): a resume — even at another world size — continues exactly where the run
// stopped.
//
// A background thread keeps `prefetch` batches ready. Validation reads windows in order (no
// shuffle).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <ATen/core/Tensor.h>

#include "data/shard.h"
#include "util/json_io.h"

namespace deepthin::data {

// A bijection of [0, n) keyed by a seed.
class Permutation {
 public:
  Permutation(int64_t n, uint64_t seed);
  int64_t operator()(int64_t i) const;
  int64_t size() const { return n_; }

 private:
  uint64_t round(uint64_t x, int r) const;
  int64_t n_;
  int half_bits_;
  uint64_t mask_;
  uint64_t keys_[4];
};

struct LoaderState {
  uint64_t seed = 0;
  int64_t cursor = 0;  // position in the window stream of the next batch
  Json to_json() const;
  static LoaderState from_json(const Json& j, const std::string& where);
};

struct Batch {
  at::Tensor tokens;                // [micro_batch, seq_len + 1] int64, CPU
  std::vector<int64_t> window_ids;  // which windows (for tests and debugging)
  int64_t epoch = 0;                // epoch of the batch's first window
};

struct LoaderOptions {
  int64_t micro_batch = 1;
  int64_t seq_len = 128;
  int rank = 0;
  int world_size = 1;
  uint64_t seed = 0;
  bool shuffle = true;
  int prefetch = 2;  // batches kept ready by the background thread; 0 reads on demand
};

class Loader {
 public:
  Loader(std::shared_ptr<const TokenDataset> dataset, LoaderOptions opts);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  Batch next();
  // The state as of the next batch next() will return (prefetched batches do not count).
  LoaderState state() const;
  void set_state(const LoaderState& s);
  int64_t num_windows() const { return n_windows_; }
  int64_t epoch() const;
  const TokenDataset& dataset() const { return *ds_; }

 private:
  Batch make_batch(int64_t cursor) const;
  void start_prefetch();
  void stop_prefetch();

  std::shared_ptr<const TokenDataset> ds_;
  LoaderOptions opts_;
  int64_t n_windows_;
  int64_t cursor_ = 0;  // consumer position

  // Permutations are cached per epoch (cheap to build: they hold only keys).
  mutable std::mutex perm_mutex_;
  mutable int64_t perm_epoch_ = -1;
  mutable std::unique_ptr<Permutation> perm_;
  int64_t window_at(int64_t stream_pos) const;

  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  int64_t produce_cursor_ = 0;
  bool stop_ = false;
  std::exception_ptr worker_error_;
};

}  // namespace deepthin::data
