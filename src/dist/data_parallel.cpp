#include "dist/data_parallel.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "util/error.h"

namespace deepthin::dist {

DataParallel::DataParallel(std::shared_ptr<Comm> comm,
                           const std::vector<std::pair<std::string, at::Tensor>>& named,
                           double bucket_mb, bool zero1,
                           const std::vector<std::pair<std::string, int>>& accumulations)
    : comm_(std::move(comm)), zero1_(zero1) {
  if (named.empty()) fail_runtime("DataParallel: the model has no parameters");
  // Reverse registration order: the output end of the model produces its gradients first.
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * 1024 * 1024 / 4));
  int64_t offset = 0;
  for (auto it = named.rbegin(); it != named.rend(); ++it) {
    Entry e{it->first, it->second, offset, it->second.numel(), 0, 1};
    for (const auto& [name, n] : accumulations)
      if (name == e.name) e.accumulations = std::max(1, n);
    if (buckets_.empty() || buckets_.back().end - buckets_.back().begin >= cap)
      buckets_.push_back(Bucket{offset, offset, 0, 0, false, {}});
    e.bucket = static_cast<int>(buckets_.size()) - 1;
    buckets_.back().end = offset + e.numel;
    buckets_.back().params += e.accumulations;
    offset += e.numel;
    entries_.push_back(e);
  }
  total_ = offset;
  const int world = comm_->size();
  shard_len_ = (total_ + world - 1) / world;
  padded_ = shard_len_ * world;
  shard_begin_ = zero1_ ? std::min(total_, shard_len_ * comm_->rank()) : 0;
  shard_end_ = zero1_ ? std::min(total_, shard_begin_ + shard_len_) : total_;

  const auto& first = named.front().second;
  auto opts = first.options().requires_grad(false);
  torch::NoGradGuard no_grad;
  flat_grads_ = at::zeros({padded_}, opts);
  if (zero1_) flat_params_ = at::zeros({padded_}, opts);
  for (auto& e : entries_) {
    if (e.param.scalar_type() != first.scalar_type() || e.param.device() != first.device())
      fail_runtime("DataParallel: all parameters must share one dtype and device");
    if (zero1_) {
      auto slot = flat_params_.narrow(0, e.offset, e.numel);
      slot.copy_(e.param.detach().reshape({-1}));
      e.param.set_data(slot.view(e.param.sizes()));
    }
    e.param.mutable_grad() = flat_grads_.narrow(0, e.offset, e.numel).view(e.param.sizes());
  }
  // A hook after each parameter's gradient accumulation.
  for (size_t i = 0; i < entries_.size(); ++i) {
    auto acc = torch::autograd::impl::grad_accumulator(entries_[i].param);
    if (!acc) fail_runtime("DataParallel: parameter " + entries_[i].name + " is not a leaf");
    auto key = acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs,
                  const torch::autograd::variable_list&) {
          on_ready(i);
          return outputs;
        }));
    hooks_.emplace_back(nullptr, [acc, key](void*) mutable { acc->del_post_hook(key); });
  }
}

DataParallel::~DataParallel() = default;

void DataParallel::broadcast_parameters() {
  torch::NoGradGuard no_grad;
  if (zero1_) {
    comm_->broadcast(flat_params_, 0, "broadcast of the initial parameters");
    return;
  }
  for (auto& e : entries_) {
    auto t = e.param.detach();
    comm_->broadcast(t, 0, "broadcast of the initial parameters (" + e.name + ")");
  }
}

std::vector<ParamSlice> DataParallel::optimizer_slices() const {
  // Registration order, as a single-process run has it.
  std::vector<ParamSlice> out;
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
    const int64_t lo = std::max(shard_begin_, it->offset);
    const int64_t hi = std::min(shard_end_, it->offset + it->numel);
    if (lo >= hi) continue;
    out.push_back({it->name, it->param, lo - it->offset, hi - it->offset});
  }
  return out;
}

void DataParallel::begin_backward(bool sync) {
  std::lock_guard<std::mutex> lock(mutex_);
  sync_ = sync && comm_->active();
  next_bucket_ = 0;
  for (auto& b : buckets_) {
    b.pending = b.params;
    b.launched = false;
    b.work = {};
  }
}

void DataParallel::on_ready(size_t entry) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!sync_) return;
  Bucket& b = buckets_[entries_[entry].bucket];
  if (b.pending > 0) --b.pending;
  launch_ready_locked();
}

void DataParallel::launch_ready_locked() {
  while (next_bucket_ < static_cast<int>(buckets_.size()) && buckets_[next_bucket_].pending == 0)
    launch_locked(buckets_[next_bucket_++]);
}

void DataParallel::launch_locked(Bucket& b) {
  torch::NoGradGuard no_grad;
  auto g = flat_grads_.narrow(0, b.begin, b.end - b.begin);
  // Average = sum of (gradient / world size): the same on every backend.
  g.mul_(1.0 / comm_->size());
  b.work = comm_->allreduce_async(g);
  b.launched = true;
}

void DataParallel::finish_gradients() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!sync_) return;
    // Parameters that got no gradient this step leave their bucket pending: launch the rest in
    // order (the same order on every rank).
    while (next_bucket_ < static_cast<int>(buckets_.size()))
      launch_locked(buckets_[next_bucket_++]);
  }
  for (auto& b : buckets_) comm_->wait(b.work, "gradient all-reduce");
  std::lock_guard<std::mutex> lock(mutex_);
  sync_ = false;
}

void DataParallel::zero_grad() {
  flat_grads_.zero_();
}

void DataParallel::gather_parameters() {
  if (!zero1_ || !comm_->active()) return;
  torch::NoGradGuard no_grad;
  comm_->allgather_into(flat_params_,
                        flat_params_.narrow(0, comm_->rank() * shard_len_, shard_len_),
                        "ZeRO-1 parameter all-gather");
}

storage::TensorList DataParallel::gather_moments(const at::Tensor& exp_avg,
                                                 const at::Tensor& exp_avg_sq) {
  torch::NoGradGuard no_grad;
  storage::TensorList out;
  std::vector<std::pair<std::string, at::Tensor>> full;
  for (auto [prefix, flat] :
       {std::pair{"exp_avg.", &exp_avg}, std::pair{"exp_avg_sq.", &exp_avg_sq}}) {
    // This rank's moments cover [shard_begin, shard_end) in layout order; pad to the shard length.
    auto mine = at::zeros({shard_len_}, flat->options());
    // The optimizer keeps its slices in registration order; put each back at its layout offset.
    int64_t src = 0;
    auto slices = optimizer_slices();
    for (const auto& s : slices) {
      const auto& e = *std::find_if(entries_.begin(), entries_.end(),
                                    [&](const Entry& x) { return x.name == s.name; });
      const int64_t n = s.end - s.begin;
      mine.narrow(0, e.offset + s.begin - shard_begin_, n).copy_(flat->narrow(0, src, n));
      src += n;
    }
    auto all = at::empty({padded_}, flat->options());
    comm_->allgather_into(all, mine, "ZeRO-1 optimizer-state all-gather");
    for (auto it = entries_.rbegin(); it != entries_.rend(); ++it)  // views of `all`, on the device
      out.emplace_back(prefix + it->name,
                       all.narrow(0, it->offset, it->numel).view(it->param.sizes()));
  }
  return out;
}

}  // namespace deepthin::dist
