// Autograd functions of the fused path: each forward calls a raw operation (kernels/ops.h) and
// saves only what its hand-written backward needs.
#include "kernels/fused.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <ATen/Context.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/ops.h"

namespace deepthin::kernels {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::atomic<Mode> g_mode{Mode::auto_};

at::ScalarType saved_dtype(AutogradContext* ctx, const char* key) {
  return static_cast<at::ScalarType>(ctx->saved_data[key].toInt());
}

class RmsNormFn : public torch::autograd::Function<RmsNormFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            double eps, int64_t out_dtype) {
    auto r = rms_norm_forward(x, {}, weight, eps, static_cast<at::ScalarType>(out_dtype));
    ctx->save_for_backward({x, weight, r.rstd});
    return r.h;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    auto g = rms_norm_backward(grads[0], {}, saved[0], saved[1], saved[2], false, at::kFloat);
    return {g.x, g.weight, at::Tensor(), at::Tensor()};
  }
};

class AddRmsNormFn : public torch::autograd::Function<AddRmsNormFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& delta,
                               const at::Tensor& weight, double eps, int64_t out_dtype) {
    auto r = rms_norm_forward(x, delta, weight, eps, static_cast<at::ScalarType>(out_dtype));
    ctx->save_for_backward({r.sum, weight, r.rstd});
    ctx->saved_data["delta_dtype"] = static_cast<int64_t>(delta.scalar_type());
    return {r.sum, r.h};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto delta_dtype = saved_dtype(ctx, "delta_dtype");
    const at::Tensor &g_sum = grads[0], &g_h = grads[1];
    if (!g_h.defined()) {
      if (!g_sum.defined())
        return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
      return {g_sum, g_sum.to(delta_dtype), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    auto g = rms_norm_backward(g_h, g_sum, saved[0], saved[1], saved[2], true, delta_dtype);
    return {g.x, g.delta, g.weight, at::Tensor(), at::Tensor()};
  }
};

class RopeSplitFn : public torch::autograd::Function<RopeSplitFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& qkv, const at::Tensor& cos,
                               const at::Tensor& sin, int64_t H, int64_t KV, int64_t hd) {
    auto r = rope_split_forward(qkv, cos, sin, H, KV, hd);
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["H"] = H;
    ctx->saved_data["KV"] = KV;
    ctx->saved_data["hd"] = hd;
    ctx->saved_data["dtype"] = static_cast<int64_t>(qkv.scalar_type());
    return {r.q, r.k, r.v};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto g = rope_split_backward(grads[0], grads[1], grads[2], saved[0], saved[1],
                                 ctx->saved_data["H"].toInt(), ctx->saved_data["KV"].toInt(),
                                 ctx->saved_data["hd"].toInt(), saved_dtype(ctx, "dtype"));
    return {g, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class SwigluFn : public torch::autograd::Function<SwigluFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gu) {
    ctx->save_for_backward({gu});
    return swiglu_forward(gu);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {swiglu_backward(grads[0], ctx->get_saved_variables()[0])};
  }
};

class SwigluDownFn : public torch::autograd::Function<SwigluDownFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gu, const at::Tensor& weight,
                            int64_t compute) {
    const auto cd = static_cast<at::ScalarType>(compute);
    auto g = gu.to(cd);
    ctx->save_for_backward({g, weight});
    ctx->saved_data["compute"] = compute;
    return at::matmul(swiglu_forward(g), weight.to(cd).t());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &gu = saved[0], &weight = saved[1];
    const auto cd = saved_dtype(ctx, "compute");
    const int64_t D = weight.size(0), F = weight.size(1);
    auto s = swiglu_forward(gu).reshape({-1, F});  // recomputed, not saved
    auto gy = grads[0].to(cd).reshape({-1, D});
    auto gs = at::mm(gy, weight.to(cd));
    auto gw = at::mm(gy.t(), s).to(weight.scalar_type());
    auto ggu = swiglu_backward(gs.view(s.sizes()), gu.reshape({-1, 2 * F})).view(gu.sizes());
    return {ggu, gw, at::Tensor()};
  }
};

}  // namespace

namespace {
bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v && std::strcmp(v, value) == 0;
}
}  // namespace

void configure_attention_from_env() {
  const char* v = std::getenv("DEEPTHIN_SDPA");
  if (!v || !*v || std::strcmp(v, "default") == 0) return;
  auto& ctx = at::globalContext();
  ctx.setSDPUseFlash(std::strcmp(v, "flash") == 0);
  ctx.setSDPUseCuDNN(std::strcmp(v, "cudnn") == 0);
  ctx.setSDPUseMemEfficient(std::strcmp(v, "efficient") == 0);
  ctx.setSDPUseMath(std::strcmp(v, "math") == 0);
}
bool expand_kv_heads() {
  static const bool on = env_is("DEEPTHIN_GQA_EXPAND", "1");
  return on;
}
bool recompute_swiglu() {
  static const bool on = !env_is("DEEPTHIN_SWIGLU_RECOMPUTE", "0");
  return on;
}

void set_mode(Mode m) {
  g_mode = m;
}
Mode mode() {
  return g_mode;
}

bool use_fused(const at::Tensor& x) {
  switch (g_mode.load()) {
    case Mode::fused:
      return true;
    case Mode::reference:
      return false;
    case Mode::auto_:
      return x.is_cuda();
  }
  return false;
}

at::ScalarType compute_dtype(const at::Tensor& x) {
  const auto type = x.device().type();
  if (at::autocast::is_autocast_enabled(type)) return at::autocast::get_autocast_dtype(type);
  return x.scalar_type();
}

std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta,
                                               const at::Tensor& weight, double eps,
                                               at::ScalarType out_dtype) {
  if (!delta.defined())
    return {x, RmsNormFn::apply(x, weight, eps, static_cast<int64_t>(out_dtype))};
  auto out = AddRmsNormFn::apply(x, delta, weight, eps, static_cast<int64_t>(out_dtype));
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rope_split(const at::Tensor& qkv,
                                                          const at::Tensor& cos,
                                                          const at::Tensor& sin, int64_t H,
                                                          int64_t KV, int64_t hd) {
  auto out = RopeSplitFn::apply(qkv, cos, sin, H, KV, hd);
  return {out[0].transpose(1, 2), out[1].transpose(1, 2), out[2].transpose(1, 2)};
}

at::Tensor swiglu(const at::Tensor& gu) {
  return SwigluFn::apply(gu);
}

at::Tensor swiglu_down(const at::Tensor& gu, const at::Tensor& down_weight,
                       at::ScalarType compute) {
  return SwigluDownFn::apply(gu, down_weight, static_cast<int64_t>(compute));
}

}  // namespace deepthin::kernels
