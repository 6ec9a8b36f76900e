// AdamW over parameter slices through ATen's fused kernel (optimizer.h): host-driven and
// device-only steps, state for checkpoints.
#include "train/optimizer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <map>

#include "util/error.h"

namespace deepthin::train {

namespace {

bool whole(const ParamSlice& s) {
  return s.begin == 0 && (s.end < 0 || s.end == s.param.numel());
}

int64_t slice_end(const ParamSlice& s) {
  return s.end < 0 ? s.param.numel() : s.end;
}

// The slice of `t` (the parameter or its gradient) that `s` covers, without autograd history.
at::Tensor slice_of(const at::Tensor& t, const ParamSlice& s) {
  at::Tensor d = t.detach();
  if (whole(s)) return d;
  return d.view(-1).narrow(0, s.begin, slice_end(s) - s.begin);
}

std::vector<ParamSlice> whole_slices(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  std::vector<ParamSlice> out;
  for (const auto& [name, p] : named) out.push_back({name, p, 0, -1});
  return out;
}

}  // namespace

AdamW::AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_params,
             const config::OptimizerConfig& cfg)
    : AdamW(whole_slices(named_params), cfg) {}

AdamW::AdamW(const std::vector<ParamSlice>& slices, const config::OptimizerConfig& cfg)
    : cfg_(cfg) {
  decay_.weight_decay = cfg.weight_decay;
  no_decay_.weight_decay = 0.0;
  int64_t total = 0;
  for (const auto& s : slices) total += slice_end(s) - s.begin;
  auto opts = slices.empty() ? at::TensorOptions().dtype(at::kFloat)
                             : slices.front().param.options().requires_grad(false);
  exp_avg_flat_ = at::zeros({total}, opts);
  exp_avg_sq_flat_ = at::zeros({total}, opts);
  int64_t offset = 0;
  for (const auto& s : slices) {
    bool exempt = false;
    for (const auto& pat : cfg.no_decay) exempt = exempt || s.name.find(pat) != std::string::npos;
    Group& g = exempt ? no_decay_ : decay_;
    const int64_t n = slice_end(s) - s.begin;
    g.names.push_back(s.name);
    g.slices.push_back(s);
    g.params.push_back(slice_of(s.param, s));
    auto shape = g.params.back().sizes();
    g.exp_avg.push_back(exp_avg_flat_.narrow(0, offset, n).view(shape));
    g.exp_avg_sq.push_back(exp_avg_sq_flat_.narrow(0, offset, n).view(shape));
    g.steps.push_back(at::zeros({}, s.param.options().dtype(at::kFloat).requires_grad(false)));
    offset += n;
  }
}

std::vector<at::Tensor> AdamW::group_grads(Group& g) {
  std::vector<at::Tensor> grads;
  for (const auto& s : g.slices) {
    if (!s.param.grad().defined()) s.param.mutable_grad() = at::zeros_like(s.param);
    grads.push_back(slice_of(s.param.grad(), s));
  }
  return grads;
}

void AdamW::step_group(Group& g, double lr) {
  if (g.params.empty()) return;
  auto grads = group_grads(g);
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

void AdamW::step_on_device(const at::Tensor& lr, const std::optional<at::Tensor>& grad_scale,
                           const at::Tensor& found_inf) {
  torch::NoGradGuard no_grad;
  auto applied = 1.0 - found_inf;
  for (Group* g : {&decay_, &no_decay_}) {
    if (g->params.empty()) continue;
    auto grads = group_grads(*g);
    at::_foreach_add_(g->steps, applied);
    at::_fused_adamw_(g->params, grads, g->exp_avg, g->exp_avg_sq, {}, g->steps, lr, cfg_.betas[0],
                      cfg_.betas[1], g->weight_decay, cfg_.eps, /*amsgrad=*/false,
                      /*maximize=*/false, grad_scale, found_inf);
  }
}

storage::TensorList AdamW::state_tensors() const {
  storage::TensorList out;
  for (const Group* g : {&decay_, &no_decay_}) {
    for (size_t i = 0; i < g->names.size(); ++i) {
      if (!whole(g->slices[i]))
        fail_runtime("AdamW::state_tensors: '" + g->names[i] +
                     "' is a slice (ZeRO-1); gather the sharded state instead");
      out.emplace_back("exp_avg." + g->names[i], g->exp_avg[i].detach());
      out.emplace_back("exp_avg_sq." + g->names[i], g->exp_avg_sq[i].detach());
    }
  }
  return out;
}

void AdamW::load_state(const storage::TensorList& tensors, int64_t steps,
                       const std::string& where) {
  std::map<std::string, at::Tensor> by_name(tensors.begin(), tensors.end());
  torch::NoGradGuard no_grad;
  for (Group* g : {&decay_, &no_decay_}) {
    for (size_t i = 0; i < g->names.size(); ++i) {
      const ParamSlice& s = g->slices[i];
      for (auto [prefix, dst] :
           {std::pair{"exp_avg.", &g->exp_avg[i]}, std::pair{"exp_avg_sq.", &g->exp_avg_sq[i]}}) {
        auto it = by_name.find(prefix + g->names[i]);
        if (it == by_name.end())
          fail_input(where + ": optimizer state '" + prefix + g->names[i] + "' is missing");
        if (it->second.sizes() != s.param.sizes())
          fail_input(where + ": optimizer state '" + it->first + "' has the wrong shape");
        dst->copy_(slice_of(it->second, s));
      }
      g->steps[i].fill_(static_cast<double>(steps));
    }
  }
  steps_ = steps;
}

}  // namespace deepthin::train
