// AdamW on fp32 master weights through ATen's fused kernel (_fused_adamw_, CPU and CUDA): one
// launch per parameter group instead of torch::optim's loop over parameters. Two groups: decayed
// and exempt.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "config/train_config.h"
#include "export/safetensors.h"

namespace deepthin::train {

class AdamW {
 public:
  AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_params,
        const config::OptimizerConfig& cfg);
  // One update at learning rate lr from the parameters' .grad().
  void step(double lr);
  int64_t steps() const { return steps_; }
  // exp_avg.<name>, exp_avg_sq.<name> (CPU copies) and the step count.
  exports::TensorList state_tensors() const;
  void load_state(const exports::TensorList& tensors, int64_t steps, const std::string& where);
  const std::vector<std::string>& decayed() const { return decay_.names; }
  const std::vector<std::string>& exempt() const { return no_decay_.names; }

 private:
  struct Group {
    std::vector<std::string> names;
    std::vector<at::Tensor> params, exp_avg, exp_avg_sq, steps;
    double weight_decay = 0;
  };
  void step_group(Group& g, double lr);
  config::OptimizerConfig cfg_;
  Group decay_, no_decay_;
  int64_t steps_ = 0;
};

}  // namespace deepthin::train
