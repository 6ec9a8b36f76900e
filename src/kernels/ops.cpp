// Raw operations of the fused path: shape and type checks, the CUDA launch where it applies, and
// the reference maths (fp32 ATen) everywhere else.
#include "kernels/ops.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "util/error.h"

#ifdef DEEPTHIN_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include "kernels/cuda_kernels.h"
#endif

namespace deepthin::kernels {

namespace {

std::atomic<bool> g_force_reference{false};
std::atomic<int> g_simple{-1};  // -1: not yet read from the environment

#ifdef DEEPTHIN_CUDA_KERNELS
bool float_or_bf16(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16;
}

// The CUDA kernels take these tensors: CUDA, fp32/bf16, and not forced onto the reference.
bool use_cuda(std::initializer_list<const at::Tensor*> ts) {
  if (g_force_reference) return false;
  for (const at::Tensor* t : ts)
    if (t->defined() && (!t->is_cuda() || !float_or_bf16(*t))) return false;
  return true;
}

bool aligned(const at::Tensor& t, size_t bytes) {
  return !t.defined() || reinterpret_cast<uintptr_t>(t.data_ptr()) % bytes == 0;
}
#endif

// The reference maths runs in fp32, or in fp64 for fp64 inputs (tests).
at::Tensor up(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? t : t.to(at::kFloat);
}

// Rotate-half: (x1, x2) → (−x2, x1), and its transpose (y1, y2) → (y2, −y1).
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}
at::Tensor rotate_half_t(const at::Tensor& y) {
  const int64_t half = y.size(-1) / 2;
  return at::cat({y.narrow(-1, half, half), -y.narrow(-1, 0, half)}, -1);
}

#ifdef DEEPTHIN_CUDA_KERNELS
cuda::DType dtype_of(at::ScalarType t) {
  return t == at::kBFloat16 ? cuda::DType::bf16 : cuda::DType::f32;
}
cuda::DType dtype_of(const at::Tensor& t) {
  return dtype_of(t.scalar_type());
}
void* stream() {
  return c10::cuda::getCurrentCUDAStream().stream();
}
int multiprocessors(const at::Tensor& t) {
  int n = 0;
  cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, t.device().index());
  return std::max(1, n);
}
void check(int err, const char* what) {
  if (err != 0)
    fail_runtime(std::string("CUDA kernel ") + what +
                 " failed: " + cudaGetErrorString(static_cast<cudaError_t>(err)));
}
// The widest vector (4, 2, 1 pair indices) that hd/2 and every pointer's alignment allow.
int rope_vec(int64_t hd, std::initializer_list<const at::Tensor*> data,
             std::initializer_list<const at::Tensor*> tables) {
  for (int v : {4, 2}) {
    if ((hd / 2) % v != 0) continue;
    bool ok = true;
    for (const at::Tensor* t : data)
      ok = ok && (!t->defined() || aligned(*t, static_cast<size_t>(v) * t->element_size()));
    for (const at::Tensor* t : tables) ok = ok && aligned(*t, static_cast<size_t>(v) * 4);
    if (ok) return v;
  }
  return 1;
}
cuda::HeadStrides head_strides(const at::Tensor& g) {
  // g is [B, T, heads, hd]; the kernel indexes (b, head, t).
  if (!g.defined()) return {};
  return {g.stride(0), g.stride(2), g.stride(1)};
}
#endif

}  // namespace

void use_simple_kernels(bool on) {
  g_simple = on ? 1 : 0;
}
bool simple_kernels() {
  if (g_simple < 0) {
    const char* v = std::getenv("DEEPTHIN_SIMPLE_KERNELS");
    g_simple = v && std::string(v) == "1" ? 1 : 0;
  }
  return g_simple == 1;
}

void force_reference(bool on) {
  g_force_reference = on;
}
bool reference_forced() {
  return g_force_reference;
}

NormForward rms_norm_forward(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& weight,
                             double eps, at::ScalarType out_dtype) {
  const int64_t dim = x.size(-1);
  if (weight.numel() != dim || (delta.defined() && delta.sizes() != x.sizes()))
    fail_runtime("rms_norm_forward: shapes do not match (x " + std::to_string(dim) +
                 " wide, weight " + std::to_string(weight.numel()) + ")");
#ifdef DEEPTHIN_CUDA_KERNELS
  if (use_cuda({&x, &delta, &weight}) && dim <= 12288 &&
      (out_dtype == at::kFloat || out_dtype == at::kBFloat16)) {
    c10::cuda::CUDAGuard guard(x.device());
    auto xc = x.contiguous();
    auto dc = delta.defined() ? delta.contiguous() : delta;
    auto wc = weight.contiguous();
    const int64_t rows = xc.numel() / dim;
    NormForward out;
    if (dc.defined()) out.sum = at::empty_like(xc);
    out.h = at::empty(xc.sizes(), xc.options().dtype(out_dtype));
    out.rstd = at::empty({rows}, xc.options().dtype(at::kFloat));
    const bool vec4 = dim % 4 == 0 && aligned(xc, 16) && aligned(dc, 16) && aligned(wc, 16) &&
                      aligned(out.sum, 16) && aligned(out.h, 16);
    const void* dp = dc.defined() ? dc.data_ptr() : nullptr;
    const auto dt = dc.defined() ? dtype_of(dc) : cuda::DType::f32;
    void* sp = dc.defined() ? out.sum.data_ptr() : nullptr;
    if (vec4 && dim <= 1024 && !simple_kernels())
      check(cuda::rms_norm_forward_cached(xc.data_ptr(), dtype_of(xc), dp, dt, wc.data_ptr(),
                                          dtype_of(wc), sp, out.h.data_ptr(), dtype_of(out_dtype),
                                          out.rstd.data_ptr<float>(), rows, dim,
                                          static_cast<float>(eps), stream()),
            "rms_norm_forward_cached");
    else
      check(cuda::rms_norm_forward(xc.data_ptr(), dtype_of(xc), dp, dt, wc.data_ptr(), dtype_of(wc),
                                   sp, out.h.data_ptr(), dtype_of(out_dtype),
                                   out.rstd.data_ptr<float>(), rows, dim, static_cast<float>(eps),
                                   vec4, stream()),
            "rms_norm_forward");
    return out;
  }
#endif
  // Reference: the sum in x's dtype, then the norm in fp32.
  at::Tensor s = delta.defined() ? at::add(x, delta).to(x.scalar_type()) : x;
  auto sf = up(s);
  auto rstd = at::rsqrt(sf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  NormForward out;
  if (delta.defined()) out.sum = s;
  out.h = (up(weight) * (sf * rstd)).to(out_dtype);
  out.rstd = rstd.reshape({-1});
  return out;
}

NormGrads rms_norm_backward(const at::Tensor& grad_h, const at::Tensor& grad_sum,
                            const at::Tensor& s, const at::Tensor& weight, const at::Tensor& rstd,
                            bool want_delta, at::ScalarType delta_dtype) {
  const int64_t dim = s.size(-1);
  const int64_t rows = s.numel() / dim;
#ifdef DEEPTHIN_CUDA_KERNELS
  if (use_cuda({&grad_h, &grad_sum, &s, &weight}) && dim <= 12288 &&
      (delta_dtype == at::kFloat || delta_dtype == at::kBFloat16)) {
    c10::cuda::CUDAGuard guard(s.device());
    auto gh = grad_h.contiguous();
    auto gs = grad_sum.defined() ? grad_sum.to(s.scalar_type()).contiguous() : grad_sum;
    auto sc = s.contiguous();
    auto wc = weight.contiguous();
    NormGrads out;
    out.x = at::empty_like(sc);
    if (want_delta) out.delta = at::empty(sc.sizes(), sc.options().dtype(delta_dtype));
    const int sms = multiprocessors(sc);
    const int blocks =
        static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((rows + 3) / 4, 4 * sms)));
    auto partial = at::empty({blocks, dim}, sc.options().dtype(at::kFloat));
    const bool vec4 = dim % 4 == 0 && aligned(gh, 16) && aligned(gs, 16) && aligned(sc, 16) &&
                      aligned(wc, 16) && aligned(out.x, 16) && aligned(out.delta, 16);
    if (vec4 && dim <= 1024 && !simple_kernels())
      check(cuda::rms_norm_backward_cached(
                gh.data_ptr(), dtype_of(gh), gs.defined() ? gs.data_ptr() : nullptr, sc.data_ptr(),
                dtype_of(sc), wc.data_ptr(), dtype_of(wc), rstd.data_ptr<float>(), out.x.data_ptr(),
                want_delta ? out.delta.data_ptr() : nullptr, dtype_of(delta_dtype),
                partial.data_ptr<float>(), blocks, rows, dim, stream()),
            "rms_norm_backward_cached");
    else
      check(cuda::rms_norm_backward(
                gh.data_ptr(), dtype_of(gh), gs.defined() ? gs.data_ptr() : nullptr, sc.data_ptr(),
                dtype_of(sc), wc.data_ptr(), dtype_of(wc), rstd.data_ptr<float>(), out.x.data_ptr(),
                want_delta ? out.delta.data_ptr() : nullptr, dtype_of(delta_dtype),
                partial.data_ptr<float>(), blocks, rows, dim, vec4, stream()),
            "rms_norm_backward");
    out.weight = partial.sum(0).to(weight.scalar_type());
    return out;
  }
#endif
  auto shape = s.sizes().vec();
  shape.back() = 1;
  auto r = rstd.view(shape);
  auto xh = up(s) * r;
  auto g = up(grad_h);
  auto wg = g * up(weight);
  auto gx = r * (wg - xh * (wg * xh).mean(-1, /*keepdim=*/true));
  if (grad_sum.defined()) gx = gx + up(grad_sum);
  NormGrads out;
  out.x = gx.to(s.scalar_type());
  if (want_delta) out.delta = gx.to(delta_dtype);
  out.weight = (g * xh).reshape({rows, dim}).sum(0).to(weight.scalar_type());
  return out;
}

QkvSplit rope_split_forward(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                            int64_t H, int64_t KV, int64_t hd) {
  const int64_t B = qkv.size(0), T = qkv.size(1), nh = H + 2 * KV;
  if (qkv.dim() != 3 || qkv.size(2) != nh * hd || cos.size(0) != T || cos.size(1) != hd ||
      hd % 2 != 0)
    fail_runtime(
        "rope_split_forward: qkv must be [B, T, (H + 2·KV)·hd] with an even hd and cos "
        "[T, hd]");
#ifdef DEEPTHIN_CUDA_KERNELS
  if (use_cuda({&qkv}) && cos.is_cuda() && cos.scalar_type() == at::kFloat &&
      sin.scalar_type() == at::kFloat) {
    c10::cuda::CUDAGuard guard(qkv.device());
    auto x = qkv.contiguous();
    auto c = cos.contiguous(), s = sin.contiguous();
    QkvSplit out;
    out.q = at::empty({B, T, H, hd}, x.options());
    out.k = at::empty({B, T, KV, hd}, x.options());
    out.v = at::empty({B, T, KV, hd}, x.options());
    const int vec = rope_vec(hd, {&x, &out.q, &out.k, &out.v}, {&c, &s});
    check(cuda::rope_split_forward(x.data_ptr(), dtype_of(x), c.data_ptr<float>(),
                                   s.data_ptr<float>(), out.q.data_ptr(), out.k.data_ptr(),
                                   out.v.data_ptr(), B * T, T, H, KV, hd, vec, stream()),
          "rope_split_forward");
    return out;
  }
#endif
  auto x = up(qkv).view({B, T, nh, hd});
  auto c = cos.to(x.scalar_type()).view({1, T, 1, hd});
  auto s = sin.to(x.scalar_type()).view({1, T, 1, hd});
  auto rope = [&](const at::Tensor& z) { return z * c + rotate_half(z) * s; };
  const auto dt = qkv.scalar_type();
  return {rope(x.narrow(2, 0, H)).to(dt).contiguous(), rope(x.narrow(2, H, KV)).to(dt).contiguous(),
          x.narrow(2, H + KV, KV).to(dt).contiguous()};
}

at::Tensor rope_split_backward(const at::Tensor& gq, const at::Tensor& gk, const at::Tensor& gv,
                               const at::Tensor& cos, const at::Tensor& sin, int64_t H, int64_t KV,
                               int64_t hd, at::ScalarType dtype) {
  const at::Tensor& any = gq.defined() ? gq : gk.defined() ? gk : gv;
  if (!any.defined()) fail_runtime("rope_split_backward: no gradient given");
  const int64_t B = any.size(0), T = any.size(1), nh = H + 2 * KV;
#ifdef DEEPTHIN_CUDA_KERNELS
  if (use_cuda({&gq, &gk, &gv}) && (dtype == at::kFloat || dtype == at::kBFloat16) &&
      cos.is_cuda() && cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat) {
    c10::cuda::CUDAGuard guard(any.device());
    auto prep = [&](const at::Tensor& g) {
      if (!g.defined()) return g;
      auto t = g.to(dtype);
      return t.stride(-1) == 1 ? t : t.contiguous();
    };
    auto q = prep(gq), k = prep(gk), v = prep(gv);
    auto c = cos.contiguous(), s = sin.contiguous();
    auto out = at::empty({B, T, nh * hd}, any.options().dtype(dtype));
    auto ptr = [](const at::Tensor& g) { return g.defined() ? g.data_ptr() : nullptr; };
    int vec = rope_vec(hd, {&q, &k, &v, &out}, {&c, &s});
    for (const at::Tensor* g : {&q, &k, &v})
      if (g->defined())
        for (int d = 0; d < 3; ++d)
          while (g->stride(d) % vec != 0) vec /= 2;
    check(cuda::rope_split_backward(ptr(q), head_strides(q), ptr(k), head_strides(k), ptr(v),
                                    head_strides(v), dtype_of(dtype), c.data_ptr<float>(),
                                    s.data_ptr<float>(), out.data_ptr(), B * T, T, H, KV, hd, vec,
                                    stream()),
          "rope_split_backward");
    return out;
  }
#endif
  auto opts = any.options().dtype(dtype == at::kDouble ? at::kDouble : at::kFloat);
  auto c = cos.to(opts.dtype()).view({1, T, 1, hd});
  auto s = sin.to(opts.dtype()).view({1, T, 1, hd});
  auto unrope = [&](const at::Tensor& g, int64_t heads) {
    if (!g.defined()) return at::zeros({B, T, heads, hd}, opts);
    auto gf = g.to(opts.dtype());
    return gf * c + rotate_half_t(gf * s);
  };
  auto gvf = gv.defined() ? gv.to(opts.dtype()) : at::zeros({B, T, KV, hd}, opts);
  return at::cat({unrope(gq, H), unrope(gk, KV), gvf}, 2).reshape({B, T, nh * hd}).to(dtype);
}

#ifdef DEEPTHIN_CUDA_KERNELS
namespace {
int swiglu_vec(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, int64_t F) {
  const int64_t elt = a.element_size();
  for (int v : {8, 4, 2}) {
    if (v * elt > 16 || F % v != 0) continue;
    const size_t bytes = static_cast<size_t>(v * elt);
    if (aligned(a, bytes) && aligned(b, bytes) && aligned(c, bytes)) return v;
  }
  return 1;
}
}  // namespace
#endif

at::Tensor swiglu_forward(const at::Tensor& gu) {
  const int64_t F = gu.size(-1) / 2;
  if (gu.size(-1) % 2 != 0) fail_runtime("swiglu_forward: the last dimension must be 2·F");
  auto shape = gu.sizes().vec();
  shape.back() = F;
#ifdef DEEPTHIN_CUDA_KERNELS
  if (use_cuda({&gu})) {
    c10::cuda::CUDAGuard guard(gu.device());
    auto x = gu.contiguous();
    auto out = at::empty(shape, x.options());
    check(cuda::swiglu_forward(x.data_ptr(), dtype_of(x), out.data_ptr(), x.numel() / (2 * F), F,
                               swiglu_vec(x, out, out, F), stream()),
          "swiglu_forward");
    return out;
  }
#endif
  auto x = up(gu);
  auto g = x.narrow(-1, 0, F), u = x.narrow(-1, F, F);
  return (g * at::sigmoid(g) * u).to(gu.scalar_type());
}

at::Tensor swiglu_backward(const at::Tensor& grad, const at::Tensor& gu) {
  const int64_t F = gu.size(-1) / 2;
#ifdef DEEPTHIN_CUDA_KERNELS
  if (use_cuda({&grad, &gu})) {
    c10::cuda::CUDAGuard guard(gu.device());
    auto x = gu.contiguous();
    auto d = grad.to(x.scalar_type()).contiguous();
    auto out = at::empty_like(x);
    check(cuda::swiglu_backward(d.data_ptr(), x.data_ptr(), dtype_of(x), out.data_ptr(),
                                x.numel() / (2 * F), F, swiglu_vec(x, d, out, F), stream()),
          "swiglu_backward");
    return out;
  }
#endif
  auto x = up(gu);
  auto g = x.narrow(-1, 0, F), u = x.narrow(-1, F, F);
  auto d = up(grad);
  auto sg = at::sigmoid(g);
  auto dg = d * u * sg * (1 + g * (1 - sg));
  auto du = d * g * sg;
  return at::cat({dg, du}, -1).to(gu.scalar_type());
}

at::Tensor cross_entropy_rows(const at::Tensor& logits, const at::Tensor& targets,
                              const at::Tensor& inv_count, int64_t ignore_index,
                              bool grad_in_place) {
  const int64_t n = logits.size(0);
  if (logits.dim() != 2 || targets.numel() != n)
    fail_runtime("cross_entropy_rows: logits must be [n, V] with n targets");
#ifdef DEEPTHIN_CUDA_KERNELS
  if (use_cuda({&logits}) && logits.is_contiguous() && targets.is_cuda() &&
      targets.scalar_type() == at::kLong && inv_count.is_cuda() &&
      inv_count.scalar_type() == at::kFloat) {
    c10::cuda::CUDAGuard guard(logits.device());
    auto t = targets.contiguous();
    const int64_t V = logits.size(1);
    auto rows = at::empty({n}, logits.options().dtype(at::kFloat));
    const bool vec = (V * logits.element_size()) % 16 == 0 && aligned(logits, 16);
    check(cuda::cross_entropy_rows(logits.data_ptr(), dtype_of(logits), t.data_ptr<int64_t>(),
                                   inv_count.data_ptr<float>(), rows.data_ptr<float>(), n, V,
                                   ignore_index, grad_in_place, vec, stream()),
          "cross_entropy_rows");
    return rows;
  }
#endif
  auto lf = up(logits);  // the logits themselves when they are fp32 (or fp64)
  auto valid = targets.ne(ignore_index);
  auto safe = targets.masked_fill(~valid, 0).unsqueeze(1);
  auto lse = at::logsumexp(lf, 1);
  auto rows = at::where(valid, lse - lf.gather(1, safe).squeeze(1), at::zeros_like(lse));
  if (grad_in_place) {
    auto g = lf.is_same(logits) ? lf : lf.clone();
    g.sub_(lse.unsqueeze(1)).exp_();
    g.scatter_add_(1, safe, at::full({n, 1}, -1.0, g.options()));
    g.mul_((valid.to(g.scalar_type()) * inv_count.to(g.device(), g.scalar_type())).unsqueeze(1));
    if (!g.is_same(logits)) logits.copy_(g);
  }
  return rows;
}

namespace {

// The reference of distillation_rows: the closed-form gradients of the logits in fp32 ATen.
//   CE           ∂/∂zs = softmax(zs) − onehot(target)
//   forward_kl   ∂/∂u = p − pt
//   reverse_kl   ∂/∂u = p ⊙ (s − t − KL(p‖pt))
//   symmetric_kl the mean of the two
//   js           ∂/∂u = p ⊙ (g − Σ p g), g = ½(s − log m)
DistillationRows distillation_reference(const at::Tensor& zs, const at::Tensor& zt,
                                        const at::Tensor& targets, const at::Tensor& inv_count,
                                        KdDivergence loss, double T, double ce_weight,
                                        double kd_weight, int64_t ignore_index, bool grad) {
  const int64_t n = zs.size(0);
  auto z = up(zs), w = up(zt);
  auto valid = targets.ne(ignore_index);
  auto safe = targets.masked_fill(~valid, 0).unsqueeze(1);
  auto lse = at::logsumexp(z, 1, /*keepdim=*/true);
  auto zero = at::zeros({n}, z.options());
  DistillationRows out;
  out.ce = at::where(valid, lse.squeeze(1) - z.gather(1, safe).squeeze(1), zero);
  auto s = at::log_softmax(z / T, 1), t = at::log_softmax(w / T, 1);
  auto p = s.exp(), pt = t.exp();
  at::Tensor rows, d_u;
  auto reverse = [&](at::Tensor& r) {
    auto diff = s - t;
    r = (p * diff).sum(1);
    return p * (diff - r.unsqueeze(1));
  };
  switch (loss) {
    case KdDivergence::forward_kl:
      rows = -(pt * s).sum(1);
      d_u = p - pt;
      break;
    case KdDivergence::reverse_kl:
      d_u = reverse(rows);
      break;
    case KdDivergence::symmetric_kl: {
      at::Tensor r;
      d_u = 0.5 * ((p - pt) + reverse(r));
      rows = 0.5 * ((pt * (t - s)).sum(1) + r);
      break;
    }
    case KdDivergence::js: {
      auto lm = (0.5 * (p + pt)).clamp_min(1e-30).log();
      rows = 0.5 * ((pt * (t - lm)).sum(1) + (p * (s - lm)).sum(1));
      auto g = 0.5 * (s - lm);
      d_u = p * (g - (p * g).sum(1, /*keepdim=*/true));
      break;
    }
  }
  out.kd = at::where(valid, rows, zero);
  if (grad) {
    auto d_ce = (z - lse).exp_();
    d_ce.scatter_add_(1, safe, at::full({n, 1}, -1.0, z.options()));
    auto scale =
        (valid.to(z.scalar_type()) * inv_count.to(z.device(), z.scalar_type())).unsqueeze(1);
    zs.copy_((ce_weight * d_ce + kd_weight * d_u) * scale);
  }
  return out;
}

}  // namespace

DistillationRows distillation_rows(const at::Tensor& zs, const at::Tensor& zt,
                                   const at::Tensor& targets, const at::Tensor& inv_count,
                                   KdDivergence loss, double temperature, double ce_weight,
                                   double kd_weight, int64_t ignore_index, bool grad_in_place) {
  const int64_t n = zs.size(0);
  if (zs.dim() != 2 || zt.sizes() != zs.sizes() || targets.numel() != n)
    fail_runtime(
        "distillation_rows: the student's and the teacher's logits must both be [n, V] "
        "with n targets; got " +
        c10::str(zs.sizes()) + ", " + c10::str(zt.sizes()) + " and " +
        std::to_string(targets.numel()) + " targets");
  if (!(temperature > 0)) fail_runtime("distillation_rows: the temperature must be > 0");
#ifdef DEEPTHIN_CUDA_KERNELS
  if (use_cuda({&zs, &zt}) && zs.scalar_type() == zt.scalar_type() && zs.is_contiguous() &&
      zt.is_contiguous() && targets.is_cuda() && targets.scalar_type() == at::kLong &&
      inv_count.is_cuda() && inv_count.scalar_type() == at::kFloat) {
    c10::cuda::CUDAGuard guard(zs.device());
    auto t = targets.contiguous();
    const int64_t V = zs.size(1);
    DistillationRows out{at::empty({n}, zs.options().dtype(at::kFloat)),
                         at::empty({n}, zs.options().dtype(at::kFloat))};
    const bool vec = (V * zs.element_size()) % 16 == 0 && aligned(zs, 16) && aligned(zt, 16);
    check(cuda::distillation_rows(zs.data_ptr(), zt.data_ptr(), dtype_of(zs), t.data_ptr<int64_t>(),
                                  inv_count.data_ptr<float>(), out.ce.data_ptr<float>(),
                                  out.kd.data_ptr<float>(), n, V, static_cast<int>(loss),
                                  static_cast<float>(temperature), static_cast<float>(ce_weight),
                                  static_cast<float>(kd_weight), ignore_index, grad_in_place, vec,
                                  stream()),
          "distillation_rows");
    return out;
  }
#endif
  return distillation_reference(zs, zt, targets, inv_count, loss, temperature, ce_weight, kd_weight,
                                ignore_index, grad_in_place);
}

}  // namespace deepthin::kernels
