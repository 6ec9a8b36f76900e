// Evaluation during training: the mean validation loss over the first eval.batches batches of the
// validation split, the same number at any world size.
#pragma once

#include <c10/core/Device.h>

#include <memory>

#include "config/config.h"
#include "data/shard.h"
#include "dist/comm.h"
#include "model/decoder.h"
#include "train/precision.h"

namespace deepthin::train {

// With several ranks, batch i is computed by rank i mod world and the sums are all-reduced.
double validation_loss(model::Decoder& m, const std::shared_ptr<data::TokenDataset>& ds,
                       const config::Config& cfg, const c10::Device& device, Precision precision,
                       dist::Comm& comm);

}  // namespace deepthin::train
