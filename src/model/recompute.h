// Activation checkpointing: run a block without keeping its activations, and run it again, with
// gradients, when backward reaches it. Only the block's input is kept: (x, delta) on the fused
// path, x on the reference path.
//
// The recomputation runs inside the backward pass (a re-entrant backward through the block), under
// the autocast state the forward had. Parameters of a recomputed block therefore receive their
// gradient once per recomputed use, which gradient bucketing must count (dist/data_parallel.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <utility>

namespace deepthin::model {

using BlockStep =
    std::function<std::pair<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&)>;

// step(x, delta) under no saved activations; delta may be undefined (and so may the second output).
std::pair<at::Tensor, at::Tensor> recompute(BlockStep step, const at::Tensor& x,
                                            const at::Tensor& delta);

}  // namespace deepthin::model
