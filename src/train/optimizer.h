// AdamW on fp32 master weights through ATen's fused kernel (_fused_adamw_, CPU and CUDA): one
// launch per parameter group instead of torch::optim's loop over parameters. Two groups: decayed
// and exempt.
//
// The optimizer updates slices: whole parameters normally, or under ZeRO-1 only the elements this
// rank owns. The moments of all slices live end to end in two flat buffers (exp_avg_flat,
// exp_avg_sq_flat), so that a sharded optimizer's state can be gathered in one collective.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/train_config.h"
#include "dist/param_slice.h"
#include "storage/safetensors.h"

namespace deepthin::train {

using dist::ParamSlice;

class AdamW {
 public:
  AdamW(const std::vector<ParamSlice>& slices, const config::OptimizerConfig& cfg);
  // Whole parameters.
  AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_params,
        const config::OptimizerConfig& cfg);
  // One update at learning rate lr from the parameters' .grad().
  void step(double lr);
  // The same update with no host synchronisation, so that it can be captured in a CUDA graph: the
  // learning rate is a 0-d fp32 tensor on the parameters' device; gradients are divided by
  // grad_scale when given (clipping), and where found_inf is 1 nothing changes, the step counts
  // included. The host-side count is the caller's: count_step() once the outcome is known.
  void step_on_device(const at::Tensor& lr, const std::optional<at::Tensor>& grad_scale,
                      const at::Tensor& found_inf);
  void count_step() { ++steps_; }
  int64_t steps() const { return steps_; }
  // exp_avg.<name>, exp_avg_sq.<name>: views of the live moments on their device (copy them before
  // the next step changes them). Needs whole slices; a
  // sharded optimizer's state is gathered from the flat buffers instead (dist/data_parallel.h).
  storage::TensorList state_tensors() const;
  // Restores from full per-parameter moments: each slice takes its part.
  void load_state(const storage::TensorList& tensors, int64_t steps, const std::string& where);
  const at::Tensor& exp_avg_flat() const { return exp_avg_flat_; }
  const at::Tensor& exp_avg_sq_flat() const { return exp_avg_sq_flat_; }
  const std::vector<std::string>& decayed() const { return decay_.names; }
  const std::vector<std::string>& exempt() const { return no_decay_.names; }

 private:
  struct Group {
    std::vector<std::string> names;
    std::vector<ParamSlice> slices;
    std::vector<at::Tensor> params, exp_avg, exp_avg_sq, steps;
    double weight_decay = 0;
  };
  void step_group(Group& g, double lr);
  std::vector<at::Tensor> group_grads(Group& g);
  config::OptimizerConfig cfg_;
  Group decay_, no_decay_;
  at::Tensor exp_avg_flat_, exp_avg_sq_flat_;
  int64_t steps_ = 0;
};

}  // namespace deepthin::train
