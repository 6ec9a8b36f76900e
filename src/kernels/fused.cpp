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

// gyᵀ · x, the gradient of a weight used as x @ wᵀ, in the weight's dtype: on CUDA a bf16 / fp16
// product writes fp32 directly (cuBLAS accumulates in fp32 either way; this skips a rounding to
// bf16, a copy and a cast kernel). A torch without that overload falls back to the cast, once.
// Whether the fp32-output products work here; one flag each for mm and addmm, switched off (with a
// warning) the first time the overload is refused.
std::atomic<bool> g_direct_mm{true}, g_direct_addmm{true};
bool direct_fp32_grad(const at::Tensor& gy, at::ScalarType w_dtype, const std::atomic<bool>& ok) {
  return gy.is_cuda() && w_dtype == at::kFloat && gy.scalar_type() != at::kFloat &&
         fp32_weight_grad() && ok.load();
}
void no_direct_fp32_grad(std::atomic<bool>& ok, const char* op, const c10::Error& e) {
  ok = false;
  TORCH_WARN("fp32 results from bf16 products (", op, ") are not available here (",
             e.what_without_backtrace(), "); casting instead");
}
at::Tensor weight_grad(const at::Tensor& gy, const at::Tensor& x, at::ScalarType w_dtype) {
  if (direct_fp32_grad(gy, w_dtype, g_direct_mm)) {
    try {
      return at::mm(gy.t(), x, at::kFloat);
    } catch (const c10::Error& e) {
      no_direct_fp32_grad(g_direct_mm, "mm", e);
    }
  }
  return at::mm(gy.t(), x).to(w_dtype);
}

// x @ packedᵀ where packed is the compute-dtype stack of the weights `ws` (1 to 3). Saves x and
// packed (no copy: packed lives in its WeightCache, or is the forward's temporary).
class PackedLinearFn : public torch::autograd::Function<PackedLinearFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& packed,
                            at::TensorList ws) {
    ctx->save_for_backward({x, packed});
    std::vector<int64_t> rows;
    for (const auto& w : ws) rows.push_back(w.size(0));
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["w_dtype"] = static_cast<int64_t>(ws.front().scalar_type());
    auto sizes = x.sizes().vec();
    sizes.back() = packed.size(0);
    return at::mm(x.reshape({-1, x.size(-1)}), packed.t()).view(sizes);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &packed = saved[1];
    const auto rows = ctx->saved_data["rows"].toIntVector();
    variable_list out(2 + rows.size());
    if (!grads[0].defined()) return out;
    auto gy = grads[0].to(packed.scalar_type()).reshape({-1, packed.size(0)});
    out[0] = at::mm(gy, packed).view(x.sizes());
    auto gw = weight_grad(gy, x.reshape({-1, x.size(-1)}), saved_dtype(ctx, "w_dtype"));
    int64_t at_row = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      out[2 + i] = gw.narrow(0, at_row, rows[i]);
      at_row += rows[i];
    }
    return out;
  }
};

// swiglu(gu) @ wcᵀ, wc the compute-dtype copy of `weight` (given, not made here).
class SwigluDownFn : public torch::autograd::Function<SwigluDownFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gu, const at::Tensor& wc,
                            const at::Tensor& weight) {
    auto g = gu.to(wc.scalar_type());
    ctx->save_for_backward({g, wc});
    ctx->saved_data["w_dtype"] = static_cast<int64_t>(weight.scalar_type());
    return at::matmul(swiglu_forward(g), wc.t());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &gu = saved[0], &wc = saved[1];
    const int64_t D = wc.size(0), F = wc.size(1);
    auto s = swiglu_forward(gu).reshape({-1, F});  // recomputed, not saved
    auto gy = grads[0].to(wc.scalar_type()).reshape({-1, D});
    auto gs = at::mm(gy, wc);
    auto gw = weight_grad(gy, s, saved_dtype(ctx, "w_dtype"));
    auto ggu = swiglu_backward(gs.view(s.sizes()), gu.reshape({-1, 2 * F})).view(gu.sizes());
    return {ggu, at::Tensor(), gw};
  }
};

std::atomic<uint64_t> g_weights_epoch{1};

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
std::atomic<bool> g_recompute_swiglu{false};
void set_recompute_swiglu(bool on) {
  g_recompute_swiglu = on;
}
bool recompute_swiglu() {
  static const int forced = env_is("DEEPTHIN_SWIGLU_RECOMPUTE", "1")   ? 1
                            : env_is("DEEPTHIN_SWIGLU_RECOMPUTE", "0") ? 0
                                                                       : -1;
  return forced < 0 ? g_recompute_swiglu.load() : forced == 1;
}
bool cache_weights() {
  static const bool on = !env_is("DEEPTHIN_WEIGHT_CACHE", "0");
  return on;
}
bool fp32_weight_grad() {
  static const bool on = !env_is("DEEPTHIN_FP32_WGRAD", "0");
  return on;
}

void weights_changed() {
  ++g_weights_epoch;
}

void WeightCache::clear() {
  packed_ = at::Tensor();
  versions_.clear();
  ptrs_.clear();
  epoch_ = 0;
}

const at::Tensor& WeightCache::get(const std::vector<at::Tensor>& weights, at::ScalarType dtype) {
  const uint64_t epoch = g_weights_epoch.load();
  const auto& w0 = weights.front();
  int64_t rows = 0;
  for (const auto& w : weights) rows += w.size(0);
  // The buffer still fits: it is written in place (a captured CUDA graph keeps reading it).
  const bool fits = packed_.defined() && packed_.scalar_type() == dtype &&
                    packed_.device() == w0.device() && packed_.size(0) == rows &&
                    packed_.size(1) == w0.size(1);
  bool fresh = fits && epoch_ == epoch && versions_.size() == weights.size();
  for (size_t i = 0; fresh && i < weights.size(); ++i)
    fresh = weights[i]._version() == versions_[i] && weights[i].data_ptr() == ptrs_[i];
  if (fresh) return packed_;
  at::NoGradGuard no_grad;
  if (!fits) packed_ = at::empty({rows, w0.size(1)}, w0.options().dtype(dtype));
  int64_t at_row = 0;
  versions_.clear();
  ptrs_.clear();
  for (const auto& w : weights) {
    packed_.narrow(0, at_row, w.size(0)).copy_(w);
    at_row += w.size(0);
    versions_.push_back(w._version());
    ptrs_.push_back(w.data_ptr());
  }
  epoch_ = epoch;
  ++refreshes_;
  return packed_;
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

namespace {
// The compute copy of `weights` stacked: from the cache while training, else made now.
at::Tensor compute_copy(const std::vector<at::Tensor>& weights, WeightCache& cache,
                        at::ScalarType compute) {
  if (cache_weights() && at::GradMode::is_enabled()) return cache.get(weights, compute);
  at::NoGradGuard no_grad;
  return (weights.size() == 1 ? weights.front() : at::cat(weights, 0)).to(compute);
}
}  // namespace

void add_weight_grad(at::Tensor& acc, const at::Tensor& gy, const at::Tensor& x) {
  if (direct_fp32_grad(gy, acc.scalar_type(), g_direct_addmm)) {
    try {
      at::addmm_out(acc, acc, gy.t(), x, at::kFloat);
      return;
    } catch (const c10::Error& e) {
      no_direct_fp32_grad(g_direct_addmm, "addmm", e);
    }
  }
  if (gy.scalar_type() == acc.scalar_type())
    acc.addmm_(gy.t(), x);
  else
    acc.add_(at::mm(gy.t(), x));
}

at::Tensor packed_linear(const at::Tensor& x, const std::vector<at::Tensor>& weights,
                         WeightCache& cache, at::ScalarType compute) {
  TORCH_CHECK(!weights.empty(), "packed_linear: no weights");
  auto packed = compute_copy(weights, cache, compute);
  return PackedLinearFn::apply(x.to(compute), packed, at::TensorList(weights));
}

at::Tensor swiglu_down(const at::Tensor& gu, const at::Tensor& down_weight, WeightCache& cache,
                       at::ScalarType compute) {
  return SwigluDownFn::apply(gu, compute_copy({down_weight}, cache, compute), down_weight);
}

}  // namespace deepthin::kernels
