// One teacher pass for many students (kd.cache): the teacher's top-k log-probabilities for every
// training window of every data source, written once by `deepthin kd cache` and read by each
// student's loader instead of running the teacher.
//
// Layout of a cache directory (published whole, like a checkpoint):
//   kd_cache.json   format, k, vocab_size, seq_len, id_bytes, the teacher, and per source its name,
//                   windows and tokens (what a run's sources must match)
//   <i>.ids         source i: windows × seq_len × k token ids (uint16 when the vocabulary fits,
//                   else int32), little-endian, window-major, the teacher's ranking within a token
//   <i>.logp        the same positions' log-probabilities at temperature 1, fp16
// Window w of a source is its w-th window of seq_len + 1 tokens (data::TokenDataset::read_window):
// the loader's permutations and mixtures pick windows by that number, so every run over the same
// sources and seq_len finds its windows here, at any world size, seed or mixture weights.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/shard.h"

namespace deepthin::train {

struct KdCacheProgress {
  int64_t windows = 0, total_windows = 0;
  int64_t bytes = 0;  // written so far
  double seconds = 0;
};

struct KdCacheStats {
  int64_t windows = 0, tokens = 0, bytes = 0;
  double seconds = 0;
  double bytes_per_token() const { return tokens ? static_cast<double>(bytes) / tokens : 0; }
};

// Runs kd.teacher over every training window of the config's sources (batches of `batch`
// windows on `device`) and writes the cache to `out` (which must not exist unless force).
KdCacheStats write_kd_cache(const config::Config& cfg, const std::filesystem::path& out, int64_t k,
                            int64_t batch, const c10::Device& device, bool force,
                            const std::function<void(const KdCacheProgress&)>& progress = {});

// The rows of one batch of windows: ids [B, seq_len, k] int64 and logp [B, seq_len, k] fp32.
struct KdCacheRows {
  at::Tensor ids, logp;
};

class KdCache {
 public:
  // Opens kd.cache and checks it against the run: seq_len, vocabulary, and each source's name,
  // windows and tokens (input errors name what differs). `train`: the run's training datasets,
  // one a source, in the config's order (already open).
  KdCache(const std::filesystem::path& dir, const config::Config& cfg,
          const std::vector<std::shared_ptr<data::TokenDataset>>& train);
  ~KdCache();
  KdCache(const KdCache&) = delete;
  KdCache& operator=(const KdCache&) = delete;

  // The cached rows of windows `windows` of sources `sources` (one per row of a batch).
  KdCacheRows rows(const std::vector<int>& sources, const std::vector<int64_t>& windows) const;
  int64_t k() const { return k_; }
  const std::filesystem::path& dir() const { return dir_; }
  std::string describe() const;

 private:
  std::filesystem::path dir_;
  int64_t k_ = 0, seq_len_ = 0, id_bytes_ = 2;
  std::vector<int> ids_fd_, logp_fd_;
  std::vector<int64_t> windows_;
  std::string teacher_;
};

}  // namespace deepthin::train
