// Validation loss during training (evaluation.h), split over ranks batch by batch.
#include "train/evaluation.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>

#include "data/loader.h"
#include "train/step.h"

namespace deepthin::train {

double validation_loss(model::Decoder& m, const std::shared_ptr<data::TokenDataset>& ds,
                       const config::Config& cfg, const c10::Device& device, Precision precision,
                       dist::Comm& comm) {
  torch::NoGradGuard no_grad;
  const int64_t T = cfg.train.seq_len;
  const int64_t windows = ds->num_windows(T);
  const int64_t B = std::min(cfg.train.micro_batch_size, windows);
  data::Loader loader(ds, data::LoaderOptions{B, T, 0, 1, 0, /*shuffle=*/false, /*prefetch=*/0});
  const int64_t n = std::max<int64_t>(1, std::min(cfg.eval.batches, windows / B));
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    auto batch = loader.next();
    if (i % comm.size() != comm.rank()) continue;
    total += batch_loss(m, batch.tokens, device, precision, cfg.train.loss_chunk_tokens)
                 .total.item<double>();
  }
  auto sum = at::full({1}, total, at::TensorOptions().dtype(at::kDouble).device(comm.device()));
  comm.allreduce(sum, c10d::ReduceOp::SUM, "validation loss all-reduce");
  return sum.item<double>() / static_cast<double>(n);
}

}  // namespace deepthin::train
