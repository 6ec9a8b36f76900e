// Data parallelism over a Comm: the model is replicated, the batch is split by rank (the loader
// does that), and gradients are averaged before every optimizer step.
//
// Gradients live in one flat fp32 buffer; each parameter's .grad() is a view into it, laid out in
// reverse registration order (roughly the order backward produces them) and cut into buckets of
// distributed.bucket_mb. A hook on every parameter's gradient accumulator marks it ready; when all
// of a bucket's parameters are ready its all-reduce is launched right away, overlapping the rest of
// backward. Buckets launch strictly in order, so every rank issues the same collectives in the
// same order. Micro-steps before the last one of an accumulation window do not communicate.
//
// ZeRO-1: the parameters move into one flat buffer too, padded to a multiple of the world size
// and split into equal contiguous shards. Each rank's AdamW holds moments only for its shard and
// updates only those elements; an all-gather then brings every rank the whole updated model. The
// optimizer state is gathered for checkpoints, which therefore look the same at any world size.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "dist/comm.h"
#include "dist/param_slice.h"
#include "storage/safetensors.h"

namespace deepthin::dist {

class DataParallel {
 public:
  struct Entry {
    std::string name;
    at::Tensor param;
    int64_t offset = 0;  // in the flat buffers
    int64_t numel = 0;
    int bucket = 0;
    int accumulations = 1;  // gradient accumulator runs per backward pass
  };

  // `accumulations` names the parameters whose gradient accumulator runs more than once in a
  // backward pass (a shared block recomputed by activation checkpointing: model/recompute.h); a
  // bucket is ready once all its parameters' accumulators have run that often. Absent: once.
  DataParallel(std::shared_ptr<Comm> comm,
               const std::vector<std::pair<std::string, at::Tensor>>& named, double bucket_mb,
               bool zero1, const std::vector<std::pair<std::string, int>>& accumulations = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Rank 0's parameters to every rank.
  void broadcast_parameters();
  // The slices this rank's optimizer updates: everything, or its ZeRO-1 shard.
  std::vector<ParamSlice> optimizer_slices() const;
  // Before a micro-step's backward: whether its gradients are the last of the window (and so are
  // averaged as they are produced).
  void begin_backward(bool sync);
  // After the last backward: launches buckets that are not out yet (parameters without a
  // gradient), waits for all, and leaves the averaged gradient in every .grad().
  void finish_gradients();
  // All gradients, as one tensor (for the global norm).
  const at::Tensor& flat_grads() const { return flat_grads_; }
  void zero_grad();
  // ZeRO-1, after the optimizer step: every rank gets every updated shard.
  void gather_parameters();
  // The full optimizer state (exp_avg.<name>, exp_avg_sq.<name>) on every rank, from the shards.
  // `exp_avg` and `exp_avg_sq` are this rank's flat moments, its slices in optimizer_slices()
  // order.
  storage::TensorList gather_moments(const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq);

  bool zero1() const { return zero1_; }
  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  const std::vector<Entry>& entries() const { return entries_; }
  int64_t shard_begin() const { return shard_begin_; }
  int64_t shard_end() const { return shard_end_; }

 private:
  struct Bucket {
    int64_t begin = 0, end = 0;  // element range in flat_grads_
    int params = 0;              // accumulator runs expected per backward
    int pending = 0;
    bool launched = false;
    c10::intrusive_ptr<c10d::Work> work;
  };
  void on_ready(size_t entry);
  void launch_ready_locked();
  void launch_locked(Bucket& b);

  std::shared_ptr<Comm> comm_;
  bool zero1_ = false;
  std::vector<Entry> entries_;
  std::vector<Bucket> buckets_;
  int next_bucket_ = 0;
  bool sync_ = false;
  at::Tensor flat_grads_, flat_params_;
  int64_t total_ = 0, padded_ = 0, shard_begin_ = 0, shard_end_ = 0, shard_len_ = 0;
  std::mutex mutex_;
  // Keeps each parameter's gradient accumulator (and so our hook on it) alive; releasing one
  // removes the hook. Type-erased: the node pointer type differs between torch versions.
  std::vector<std::shared_ptr<void>> hooks_;
};

}  // namespace deepthin::dist
