#include "model/recompute.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>

namespace deepthin::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct StepHolder : torch::CustomClassHolder {
  BlockStep step;
  c10::DeviceType device = c10::kCPU;
  bool autocast = false;
  at::ScalarType autocast_dtype = at::kBFloat16;
};

// The forward's autocast state, restored on the thread that runs the recomputation.
class AutocastAs {
 public:
  AutocastAs(const StepHolder& h) : type_(h.device), active_(h.autocast) {
    prev_enabled_ = at::autocast::is_autocast_enabled(type_);
    prev_dtype_ = at::autocast::get_autocast_dtype(type_);
    at::autocast::set_autocast_enabled(type_, active_);
    if (active_) {
      at::autocast::set_autocast_dtype(type_, h.autocast_dtype);
      at::autocast::increment_nesting();
    }
  }
  ~AutocastAs() {
    if (active_ && at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type_, prev_enabled_);
    at::autocast::set_autocast_dtype(type_, prev_dtype_);
  }
  AutocastAs(const AutocastAs&) = delete;
  AutocastAs& operator=(const AutocastAs&) = delete;

 private:
  c10::DeviceType type_;
  bool active_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

class RecomputeFn : public torch::autograd::Function<RecomputeFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x,
                               const std::optional<at::Tensor>& delta,
                               c10::intrusive_ptr<StepHolder> holder) {
    const at::Tensor d = delta ? *delta : at::Tensor();
    holder->device = x.device().type();
    holder->autocast = at::autocast::is_autocast_enabled(holder->device);
    holder->autocast_dtype = at::autocast::get_autocast_dtype(holder->device);
    auto out = holder->step(x, d);  // grad mode is off here: nothing is saved
    ctx->save_for_backward({x, d});
    ctx->saved_data["step"] = c10::IValue::make_capsule(holder);
    if (out.second.defined()) return {out.first, out.second};
    return {out.first};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto holder =
        c10::static_intrusive_pointer_cast<StepHolder>(ctx->saved_data["step"].toCapsule());
    auto x = saved[0].detach().requires_grad_(true);
    at::Tensor d;
    if (saved[1].defined()) d = saved[1].detach().requires_grad_(true);
    std::pair<at::Tensor, at::Tensor> out;
    {
      at::AutoGradMode grad_on(true);
      AutocastAs autocast(*holder);
      out = holder->step(x, d);
    }
    variable_list outputs, output_grads;
    if (grads[0].defined()) {
      outputs.push_back(out.first);
      output_grads.push_back(grads[0]);
    }
    if (grads.size() > 1 && grads[1].defined() && out.second.defined()) {
      outputs.push_back(out.second);
      output_grads.push_back(grads[1]);
    }
    // Parameters accumulate their gradients here; the inputs' come back below.
    if (!outputs.empty()) torch::autograd::backward(outputs, output_grads);
    return {x.grad(), d.defined() ? d.grad() : at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::pair<at::Tensor, at::Tensor> recompute(BlockStep step, const at::Tensor& x,
                                            const at::Tensor& delta) {
  auto holder = c10::make_intrusive<StepHolder>();
  holder->step = std::move(step);
  std::optional<at::Tensor> d;
  if (delta.defined()) d = delta;
  auto out = RecomputeFn::apply(x, d, holder);
  return {out[0], out.size() > 1 ? out[1] : at::Tensor()};
}

}  // namespace deepthin::model
