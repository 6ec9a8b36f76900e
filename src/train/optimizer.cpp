#include "train/optimizer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <map>

#include "util/error.h"

namespace deepthin::train {

AdamW::AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_params,
             const config::OptimizerConfig& cfg)
    : cfg_(cfg) {
  decay_.weight_decay = cfg.weight_decay;
  no_decay_.weight_decay = 0.0;
  for (const auto& [name, p] : named_params) {
    bool exempt = false;
    for (const auto& pat : cfg.no_decay) exempt = exempt || name.find(pat) != std::string::npos;
    Group& g = exempt ? no_decay_ : decay_;
    g.names.push_back(name);
    g.params.push_back(p);
    g.exp_avg.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
    g.exp_avg_sq.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
    g.steps.push_back(at::zeros({}, p.options().dtype(at::kFloat)));
  }
}

void AdamW::step_group(Group& g, double lr) {
  if (g.params.empty()) return;
  std::vector<at::Tensor> grads;
  for (auto& p : g.params) {
    if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
    grads.push_back(p.grad());
  }
  // The kernel reads the step count after the increment (bias correction 1 − β^t needs t ≥ 1).
  at::_foreach_add_(g.steps, 1.0);
  at::_fused_adamw_(g.params, grads, g.exp_avg, g.exp_avg_sq, {}, g.steps, lr, cfg_.betas[0],
                    cfg_.betas[1], g.weight_decay, cfg_.eps, /*amsgrad=*/false, /*maximize=*/false);
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  step_group(decay_, lr);
  step_group(no_decay_, lr);
  ++steps_;
}

exports::TensorList AdamW::state_tensors() const {
  exports::TensorList out;
  for (const Group* g : {&decay_, &no_decay_}) {
    for (size_t i = 0; i < g->names.size(); ++i) {
      out.emplace_back("exp_avg." + g->names[i], g->exp_avg[i].detach().cpu());
      out.emplace_back("exp_avg_sq." + g->names[i], g->exp_avg_sq[i].detach().cpu());
    }
  }
  return out;
}

void AdamW::load_state(const exports::TensorList& tensors, int64_t steps,
                       const std::string& where) {
  std::map<std::string, at::Tensor> by_name(tensors.begin(), tensors.end());
  torch::NoGradGuard no_grad;
  for (Group* g : {&decay_, &no_decay_}) {
    for (size_t i = 0; i < g->names.size(); ++i) {
      for (auto [prefix, dst] :
           {std::pair{"exp_avg.", &g->exp_avg[i]}, std::pair{"exp_avg_sq.", &g->exp_avg_sq[i]}}) {
        auto it = by_name.find(prefix + g->names[i]);
        if (it == by_name.end())
          fail_input(where + ": optimizer state '" + prefix + g->names[i] + "' is missing");
        if (it->second.sizes() != dst->sizes())
          fail_input(where + ": optimizer state '" + it->first + "' has the wrong shape");
        dst->copy_(it->second);
      }
      g->steps[i].fill_(static_cast<double>(steps));
    }
  }
  steps_ = steps;
}

}  // namespace deepthin::train
