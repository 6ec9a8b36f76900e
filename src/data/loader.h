// The training loader: memory-mapped shards in, (micro_batch, seq_len + 1) token windows out.
//
// Order: every epoch of a source is a seeded pseudo-random permutation of its windows (a Feistel
// network with cycle walking, so it costs no memory however many windows there are). The epochs are
// laid end to end into the source's stream; several sources are blended by weight into one mixed
// stream (data/mixture.h); a global cursor walks it. At each step the ranks take consecutive,
// disjoint slices: rank r of w gets mixed positions cursor + r·B … cursor + r·B + B − 1, then the
// cursor moves by w·B. So every window of a source is served exactly once per epoch of that source
// for any world size, and the whole state is the mixture's (seed, cursor, per-source positions): a
// resume — even at another world size — continues exactly where the run stopped. One source is the
// plain stream of before, with the same order and the same saved state.
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

#include "data/mixture.h"
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

using LoaderState = MixState;

struct Batch {
  at::Tensor tokens;                // [micro_batch, seq_len + 1] int64, CPU
  std::vector<int64_t> window_ids;  // which windows of their sources (for tests and debugging)
  std::vector<int> sources;         // which source each row came from
  int64_t epoch = 0;                // epoch (of its source) of the batch's first window
  // Sources whose next epoch began within this step (all ranks' windows): (source, epoch).
  std::vector<std::pair<int, int64_t>> epochs_begun;
  MixState after;                   // the loader's state once this batch is consumed
};

// One source of a mixture: a dataset and its weight (in tokens). An empty name is data.path's
// single source.
struct LoaderSource {
  std::string name;
  double weight = 1.0;
  std::shared_ptr<const TokenDataset> dataset;
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
  Loader(std::vector<LoaderSource> sources, LoaderOptions opts);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  Batch next();
  // The state as of the next batch next() will return (prefetched batches do not count).
  LoaderState state() const;
  // Takes a saved state. A state saved under other sources or weights is refused (input error
  // naming what changed) unless allow_change; then each source continues from its position, and
  // `notes` (if given) says so per source.
  void set_state(const LoaderState& s, bool allow_change = false,
                 std::vector<std::string>* notes = nullptr);
  // Windows of all sources together.
  int64_t num_windows() const;
  // The epoch of the first source.
  int64_t epoch() const;
  const TokenDataset& dataset(size_t source = 0) const { return *sources_[source].dataset; }
  size_t num_sources() const { return sources_.size(); }
  const LoaderSource& source(size_t s) const { return sources_[s]; }
  const Mixture& mixture() const { return mixture_; }
  int64_t seq_len() const { return opts_.seq_len; }

 private:
  Batch make_batch(const MixState& st) const;
  void start_prefetch();
  void stop_prefetch();

  std::vector<LoaderSource> sources_;
  LoaderOptions opts_;
  Mixture mixture_;
  MixState state_;  // consumer position

  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  MixState produce_state_;
  bool stop_ = false;
  std::exception_ptr worker_error_;
};

// What a run will read of each source: for `deepthin train --dry-run` and the run's first log lines.
struct SourcePlan {
  std::string name;
  double weight = 0, share = 0;  // as configured; as the fraction of the tokens
  int64_t tokens = 0, windows = 0;
  std::string description;
  double tokens_read = 0, epochs = 0;  // over `windows_read` windows of the mixed stream
};
std::vector<SourcePlan> data_plan(const Loader& loader, int64_t windows_read);

}  // namespace deepthin::data
