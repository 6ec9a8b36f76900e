// CUDA kernels of the fused training path: RMSNorm (with the residual add), RoPE fused with the
// q|k|v split, SwiGLU, the LM-head cross-entropy and the distillation loss computed in place on a
// chunk of logits. Maths
// in fp32, inputs and outputs in fp32 or bf16. Each is memory-bound: one pass over its inputs where
// the data allows (two for a row reduction, the second from L1/L2), vector loads where the shape
// allows. The reference maths of each is the ATen composition in kernels/ops.cpp.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels/cuda_kernels.h"

namespace deepthin::kernels::cuda {

namespace {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_f(float v) {
  return v;
}
__device__ __forceinline__ float to_f(bf16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int N, typename T>
__device__ __forceinline__ void load(const T* p, float (&out)[N]) {
  const Pack<T, N> pk = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_f(pk.v[i]);
}

template <int N, typename T>
__device__ __forceinline__ void store(T* p, const float (&in)[N]) {
  Pack<T, N> pk;
#pragma unroll
  for (int i = 0; i < N; ++i) pk.v[i] = from_f<T>(in[i]);
  *reinterpret_cast<Pack<T, N>*>(p) = pk;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Two-type dispatch over the element types this file is built for.
template <typename F>
int with_type(DType t, F&& f) {
  if (t == DType::bf16) return f(bf16{});
  return f(float{});
}

// The four element types of a norm kernel (x, delta, weight, h) as type tags.
template <typename F>
int with_norm_types(DType x_t, DType d_t, DType w_t, DType h_t, F&& f) {
  return with_type(x_t, [&](auto x) {
    return with_type(d_t, [&](auto d) {
      return with_type(
          w_t, [&](auto w) { return with_type(h_t, [&](auto h) { return f(x, d, w, h); }); });
    });
  });
}

int last_error() {
  return static_cast<int>(cudaGetLastError());
}

// One instantiation per ITERS = 1..N of a kernel template, chosen at run time: `make` maps
// std::integral_constant<int, I> to the kernel for I (all of one pointer type).
template <typename Make, int... I>
auto pick_from_table(int iters, Make& make, std::integer_sequence<int, I...>) {
  using K = decltype(make(std::integral_constant<int, 1>{}));
  const K table[] = {make(std::integral_constant<int, I + 1>{})...};
  return table[iters - 1];
}

template <int N, typename Make>
auto kernel_for_iters(int iters, Make make) {
  return pick_from_table(iters, make, std::make_integer_sequence<int, N>{});
}

// ---------------------------------------------------------------- RMSNorm

constexpr int kNormThreads = 256;  // 8 warps, one row per warp
constexpr int kMaxNormIters = 8;   // the cached kernels hold up to 8 x 128 = 1,024 columns a row

template <typename X, typename Dl, typename W, typename H, int VEC>
__global__ void __launch_bounds__(kNormThreads)
    rms_forward_kernel(const X* __restrict__ x, const Dl* __restrict__ delta,
                       const W* __restrict__ w, X* __restrict__ sum, H* __restrict__ h,
                       float* __restrict__ rstd, int64_t rows, int dim, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kNormThreads / 32) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const X* xr = x + row * dim;
  X* sr = delta ? sum + row * dim : nullptr;
  float ss = 0.f;
  for (int c = lane * VEC; c < dim; c += 32 * VEC) {
    float v[VEC];
    load<VEC>(xr + c, v);
    if (delta) {
      float d[VEC];
      load<VEC>(delta + row * dim + c, d);
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] = to_f(from_f<X>(v[i] + d[i]));
      store<VEC>(sr + c, v);
    }
#pragma unroll
    for (int i = 0; i < VEC; ++i) ss += v[i] * v[i];
  }
  const float r = rsqrtf(warp_sum(ss) / static_cast<float>(dim) + eps);
  if (lane == 0) rstd[row] = r;
  const X* src = delta ? sr : xr;
  for (int c = lane * VEC; c < dim; c += 32 * VEC) {
    float v[VEC], wv[VEC], o[VEC];
    load<VEC>(src + c, v);
    load<VEC>(w + c, wv);
#pragma unroll
    for (int i = 0; i < VEC; ++i) o[i] = wv[i] * (v[i] * r);
    store<VEC>(h + row * dim + c, o);
  }
}

// The same with the row held in registers: x and delta read once, the sum and h written once (the
// kernel above reads the sum back for its second pass), every load of the row issued before the
// first use. For dim ≤ 32 · 4 · ITERS, dim a multiple of 4.
template <typename X, typename Dl, typename W, typename H, int ITERS>
__global__ void __launch_bounds__(kNormThreads)
    rms_forward_cached_kernel(const X* __restrict__ x, const Dl* __restrict__ delta,
                              const W* __restrict__ w, X* __restrict__ sum, H* __restrict__ h,
                              float* __restrict__ rstd, int64_t rows, int dim, float eps) {
  constexpr int VEC = 4;
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kNormThreads / 32) + (threadIdx.x >> 5);
  if (row >= rows) return;
  float v[ITERS][VEC], d[ITERS][VEC];
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = (it * 32 + lane) * VEC;
#pragma unroll
    for (int i = 0; i < VEC; ++i) v[it][i] = d[it][i] = 0.f;
    if (c < dim) {
      load<VEC>(x + row * dim + c, v[it]);
      if (delta) load<VEC>(delta + row * dim + c, d[it]);
    }
  }
  float ss = 0.f;
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = (it * 32 + lane) * VEC;
    if (delta) {
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[it][i] = to_f(from_f<X>(v[it][i] + d[it][i]));
      if (c < dim) store<VEC>(sum + row * dim + c, v[it]);
    }
#pragma unroll
    for (int i = 0; i < VEC; ++i) ss += v[it][i] * v[it][i];
  }
  const float r = rsqrtf(warp_sum(ss) / static_cast<float>(dim) + eps);
  if (lane == 0) rstd[row] = r;
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = (it * 32 + lane) * VEC;
    if (c >= dim) continue;
    float wv[VEC], o[VEC];
    load<VEC>(w + c, wv);
#pragma unroll
    for (int i = 0; i < VEC; ++i) o[i] = wv[i] * (v[it][i] * r);
    store<VEC>(h + row * dim + c, o);
  }
}

constexpr int kNormBwdThreads = 128;  // 4 warps; each keeps its own grad_w row in shared memory

// Rows are strided over the grid, one warp per row. Each warp sums gh · x̂ for its rows into its own
// shared-memory row (no atomics: the result does not depend on scheduling), and the block adds its
// warps' rows in a fixed order into weight_partial[block].
template <typename X, typename Dl, typename W, typename H, int VEC>
__global__ void __launch_bounds__(kNormBwdThreads)
    rms_backward_kernel(const H* __restrict__ gh, const X* __restrict__ gsum,
                        const X* __restrict__ s, const W* __restrict__ w,
                        const float* __restrict__ rstd, X* __restrict__ gx, Dl* __restrict__ gd,
                        float* __restrict__ partial, int64_t rows, int dim) {
  extern __shared__ float acc[];  // [warps][dim]
  constexpr int warps = kNormBwdThreads / 32;
  for (int c = threadIdx.x; c < warps * dim; c += kNormBwdThreads) acc[c] = 0.f;
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* mine = acc + warp * dim;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * warps + warp; row < rows;
       row += static_cast<int64_t>(gridDim.x) * warps) {
    const float r = rstd[row];
    const H* ghr = gh + row * dim;
    const X* sr = s + row * dim;
    float dot = 0.f;
    for (int c = lane * VEC; c < dim; c += 32 * VEC) {
      float g[VEC], wv[VEC], v[VEC];
      load<VEC>(ghr + c, g);
      load<VEC>(w + c, wv);
      load<VEC>(sr + c, v);
#pragma unroll
      for (int i = 0; i < VEC; ++i) dot += g[i] * wv[i] * v[i];
    }
    // mean over the row of (w·gh)·x̂, with x̂ = s·r
    const float mean = warp_sum(dot) * r / static_cast<float>(dim);
    for (int c = lane * VEC; c < dim; c += 32 * VEC) {
      float g[VEC], wv[VEC], v[VEC], res[VEC], out[VEC];
      load<VEC>(ghr + c, g);
      load<VEC>(w + c, wv);
      load<VEC>(sr + c, v);
      if (gsum) {
        load<VEC>(gsum + row * dim + c, res);
      } else {
#pragma unroll
        for (int i = 0; i < VEC; ++i) res[i] = 0.f;
      }
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const float xh = v[i] * r;
        out[i] = r * (g[i] * wv[i] - xh * mean) + res[i];
        mine[c + i] += g[i] * xh;
      }
      store<VEC>(gx + row * dim + c, out);
      if (gd) store<VEC>(gd + row * dim + c, out);
    }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < dim; c += kNormBwdThreads) {
    float t = 0.f;
#pragma unroll
    for (int k = 0; k < warps; ++k) t += acc[k * dim + c];
    partial[static_cast<int64_t>(blockIdx.x) * dim + c] = t;
  }
}

// The same gradient with each lane's columns held in registers: weight loaded once per warp, the
// row's gh and s read once (the two-pass kernel above reads them twice), and the lane's share of
// grad_w summed in registers. For dim ≤ 32 · 4 · ITERS, dim a multiple of 4.
template <typename X, typename Dl, typename W, typename H, int ITERS>
__global__ void __launch_bounds__(kNormBwdThreads)
    rms_backward_cached_kernel(const H* __restrict__ gh, const X* __restrict__ gsum,
                               const X* __restrict__ s, const W* __restrict__ w,
                               const float* __restrict__ rstd, X* __restrict__ gx,
                               Dl* __restrict__ gd, float* __restrict__ partial, int64_t rows,
                               int dim) {
  constexpr int VEC = 4;
  constexpr int warps = kNormBwdThreads / 32;
  extern __shared__ float acc[];  // [warps][dim], written once at the end
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float wv[ITERS][VEC], gw[ITERS][VEC];
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = (it * 32 + lane) * VEC;
#pragma unroll
    for (int i = 0; i < VEC; ++i) wv[it][i] = gw[it][i] = 0.f;
    if (c < dim) load<VEC>(w + c, wv[it]);
  }
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * warps + warp; row < rows;
       row += static_cast<int64_t>(gridDim.x) * warps) {
    const float r = rstd[row];
    // Every load of the row is issued before the reduction (grad_sum too): one memory latency
    // per row instead of two.
    float g[ITERS][VEC], v[ITERS][VEC], res[ITERS][VEC];
    float dot = 0.f;
#pragma unroll
    for (int it = 0; it < ITERS; ++it) {
      const int c = (it * 32 + lane) * VEC;
#pragma unroll
      for (int i = 0; i < VEC; ++i) g[it][i] = v[it][i] = res[it][i] = 0.f;
      if (c < dim) {
        load<VEC>(gh + row * dim + c, g[it]);
        load<VEC>(s + row * dim + c, v[it]);
        if (gsum) load<VEC>(gsum + row * dim + c, res[it]);
      }
    }
#pragma unroll
    for (int it = 0; it < ITERS; ++it) {
#pragma unroll
      for (int i = 0; i < VEC; ++i) dot += g[it][i] * wv[it][i] * v[it][i];
    }
    const float mean = warp_sum(dot) * r / static_cast<float>(dim);
#pragma unroll
    for (int it = 0; it < ITERS; ++it) {
      const int c = (it * 32 + lane) * VEC;
      if (c >= dim) continue;
      float out[VEC];
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const float xh = v[it][i] * r;
        out[i] = r * (g[it][i] * wv[it][i] - xh * mean) + res[it][i];
        gw[it][i] += g[it][i] * xh;
      }
      store<VEC>(gx + row * dim + c, out);
      if (gd) store<VEC>(gd + row * dim + c, out);
    }
  }
  float* mine = acc + warp * dim;
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = (it * 32 + lane) * VEC;
    if (c < dim) {
#pragma unroll
      for (int i = 0; i < VEC; ++i) mine[c + i] = gw[it][i];
    }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < dim; c += kNormBwdThreads) {
    float t = 0.f;
#pragma unroll
    for (int k = 0; k < warps; ++k) t += acc[k * dim + c];
    partial[static_cast<int64_t>(blockIdx.x) * dim + c] = t;
  }
}

// ---------------------------------------------------------------- RoPE + q|k|v split

constexpr int kEltThreads = 256;

// One block per token row: the (head, pair) index comes from the thread index with 32-bit
// arithmetic, and VEC of 4 reads 8 or 16 bytes at a time.
template <typename T, int VEC>
__global__ void __launch_bounds__(kEltThreads)
    rope_forward_rows_kernel(const T* __restrict__ qkv, const float* __restrict__ cos,
                             const float* __restrict__ sin, T* __restrict__ q, T* __restrict__ k,
                             T* __restrict__ v, int64_t seq_len, int H, int KV, int hd) {
  const int half = hd / 2, nh = H + 2 * KV, jv = half / VEC;
  const int64_t row = blockIdx.x;
  const int pos = static_cast<int>(row % seq_len);
  const T* src_row = qkv + row * nh * hd;
  for (int t = threadIdx.x; t < nh * jv; t += blockDim.x) {
    const int head = t / jv, j = (t - head * jv) * VEC;
    const T* src = src_row + head * hd;
    float a[VEC], b[VEC];
    load<VEC>(src + j, a);
    load<VEC>(src + j + half, b);
    if (head >= H + KV) {
      T* dst = v + (row * KV + (head - H - KV)) * hd;
      store<VEC>(dst + j, a);
      store<VEC>(dst + j + half, b);
      continue;
    }
    float c1[VEC], s1[VEC], c2[VEC], s2[VEC], o1[VEC], o2[VEC];
    load<VEC>(cos + pos * hd + j, c1);
    load<VEC>(sin + pos * hd + j, s1);
    load<VEC>(cos + pos * hd + j + half, c2);
    load<VEC>(sin + pos * hd + j + half, s2);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      o1[i] = a[i] * c1[i] - b[i] * s1[i];
      o2[i] = b[i] * c2[i] + a[i] * s2[i];
    }
    T* dst = head < H ? q + (row * H + head) * hd : k + (row * KV + (head - H)) * hd;
    store<VEC>(dst + j, o1);
    store<VEC>(dst + j + half, o2);
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kEltThreads)
    rope_backward_rows_kernel(const T* __restrict__ gq, HeadStrides sq, const T* __restrict__ gk,
                              HeadStrides sk, const T* __restrict__ gv, HeadStrides sv,
                              const float* __restrict__ cos, const float* __restrict__ sin,
                              T* __restrict__ out, int64_t seq_len, int H, int KV, int hd) {
  const int half = hd / 2, nh = H + 2 * KV, jv = half / VEC;
  const int64_t row = blockIdx.x;
  const int64_t b = row / seq_len;
  const int pos = static_cast<int>(row - b * seq_len);
  T* out_row = out + row * nh * hd;
  for (int t = threadIdx.x; t < nh * jv; t += blockDim.x) {
    const int head = t / jv, j = (t - head * jv) * VEC;
    const T* g;
    HeadStrides st;
    int hh;
    if (head < H) {
      g = gq, st = sq, hh = head;
    } else if (head < H + KV) {
      g = gk, st = sk, hh = head - H;
    } else {
      g = gv, st = sv, hh = head - H - KV;
    }
    float a[VEC], bb[VEC];
    if (g) {
      const T* src = g + b * st.b + hh * st.h + pos * st.t;
      load<VEC>(src + j, a);
      load<VEC>(src + j + half, bb);
    } else {
#pragma unroll
      for (int i = 0; i < VEC; ++i) a[i] = bb[i] = 0.f;
    }
    T* dst = out_row + head * hd;
    if (head >= H + KV) {
      store<VEC>(dst + j, a);
      store<VEC>(dst + j + half, bb);
      continue;
    }
    float c1[VEC], s1[VEC], c2[VEC], s2[VEC], o1[VEC], o2[VEC];
    load<VEC>(cos + pos * hd + j, c1);
    load<VEC>(sin + pos * hd + j, s1);
    load<VEC>(cos + pos * hd + j + half, c2);
    load<VEC>(sin + pos * hd + j + half, s2);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      o1[i] = a[i] * c1[i] + bb[i] * s2[i];
      o2[i] = bb[i] * c2[i] - a[i] * s1[i];
    }
    store<VEC>(dst + j, o1);
    store<VEC>(dst + j + half, o2);
  }
}

// ---------------------------------------------------------------- SwiGLU

__device__ __forceinline__ float sigmoid(float g) {
  return 1.f / (1.f + expf(-g));
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kEltThreads)
    swiglu_forward_kernel(const T* __restrict__ gu, T* __restrict__ out, int64_t rows, int64_t F) {
  const int64_t per_row = F / VEC;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kEltThreads + threadIdx.x;
  if (idx >= rows * per_row) return;
  const int64_t row = idx / per_row, c = (idx % per_row) * VEC;
  float g[VEC], u[VEC], o[VEC];
  load<VEC>(gu + row * 2 * F + c, g);
  load<VEC>(gu + row * 2 * F + F + c, u);
#pragma unroll
  for (int i = 0; i < VEC; ++i) o[i] = g[i] * sigmoid(g[i]) * u[i];
  store<VEC>(out + row * F + c, o);
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kEltThreads)
    swiglu_backward_kernel(const T* __restrict__ go, const T* __restrict__ gu, T* __restrict__ ggu,
                           int64_t rows, int64_t F) {
  const int64_t per_row = F / VEC;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kEltThreads + threadIdx.x;
  if (idx >= rows * per_row) return;
  const int64_t row = idx / per_row, c = (idx % per_row) * VEC;
  float d[VEC], g[VEC], u[VEC], dg[VEC], du[VEC];
  load<VEC>(go + row * F + c, d);
  load<VEC>(gu + row * 2 * F + c, g);
  load<VEC>(gu + row * 2 * F + F + c, u);
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    const float sg = sigmoid(g[i]);
    const float silu = g[i] * sg;
    du[i] = d[i] * silu;
    dg[i] = d[i] * u[i] * sg * (1.f + g[i] * (1.f - sg));
  }
  store<VEC>(ggu + row * 2 * F + c, dg);
  store<VEC>(ggu + row * 2 * F + F + c, du);
}

// ---------------------------------------------------------------- cross-entropy

constexpr int kXentThreads = 512;

struct MaxSum {
  float m, s;
};
__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  if (a.m == -INFINITY) return b;
  if (b.m == -INFINITY) return a;
  const float m = fmaxf(a.m, b.m);
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kXentThreads)
    xent_kernel(T* __restrict__ logits, const int64_t* __restrict__ targets,
                const float* __restrict__ inv_count, float* __restrict__ loss_rows, int64_t V,
                int64_t ignore_index, bool grad) {
  __shared__ MaxSum red[kXentThreads / 32];
  __shared__ float lse_shared;
  const int64_t row = blockIdx.x;
  T* lr = logits + row * V;
  MaxSum ms{-INFINITY, 0.f};
  for (int64_t c = static_cast<int64_t>(threadIdx.x) * VEC; c < V; c += kXentThreads * VEC) {
    float v[VEC];
    load<VEC>(lr + c, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      if (v[i] > ms.m) {
        ms.s = ms.s * expf(ms.m - v[i]) + 1.f;
        ms.m = v[i];
      } else {
        ms.s += expf(v[i] - ms.m);
      }
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, ms.m, o), __shfl_xor_sync(0xffffffffu, ms.s, o)};
    ms = combine(ms, other);
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) red[warp] = ms;
  __syncthreads();
  if (threadIdx.x == 0) {
    MaxSum all = red[0];
    for (int w = 1; w < kXentThreads / 32; ++w) all = combine(all, red[w]);
    const float lse = all.m + logf(all.s);
    lse_shared = lse;
    const int64_t t = targets[row];
    float loss = 0.f;
    if (t != ignore_index) loss = (t >= 0 && t < V) ? lse - to_f(lr[t]) : NAN;
    loss_rows[row] = loss;
  }
  __syncthreads();  // the target's logit is read before any thread overwrites it
  if (!grad) return;
  const float lse = lse_shared;
  const int64_t t = targets[row];
  const float scale = t == ignore_index ? 0.f : *inv_count;
  for (int64_t c = static_cast<int64_t>(threadIdx.x) * VEC; c < V; c += kXentThreads * VEC) {
    float v[VEC];
    load<VEC>(lr + c, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      v[i] = expf(v[i] - lse) * scale;
      if (c + i == t) v[i] -= scale;
    }
    store<VEC>(lr + c, v);
  }
}

// ---------------------------------------------------------------- distillation

constexpr int kKdThreads = 512;

// An online softmax with two weighted sums: m the running max of x, s = Σ e^{x−m}, a = Σ e^{x−m}·y,
// b = Σ e^{x−m}·z.
struct Soft {
  float m, s, a, b;
};
__device__ __forceinline__ Soft combine(Soft x, Soft y) {
  if (x.m == -INFINITY) return y;
  if (y.m == -INFINITY) return x;
  const float m = fmaxf(x.m, y.m), fx = expf(x.m - m), fy = expf(y.m - m);
  return {m, x.s * fx + y.s * fy, x.a * fx + y.a * fy, x.b * fx + y.b * fy};
}
__device__ __forceinline__ void add(Soft& st, float x, float y, float z) {
  if (x > st.m) {
    const float f = expf(st.m - x);
    st.s = st.s * f + 1.f;
    st.a = st.a * f + y;
    st.b = st.b * f + z;
    st.m = x;
  } else {
    const float e = expf(x - st.m);
    st.s += e;
    st.a += e * y;
    st.b += e * z;
  }
}
__device__ __forceinline__ Soft shfl_combine(Soft v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Soft other{__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o),
               __shfl_xor_sync(0xffffffffu, v.a, o), __shfl_xor_sync(0xffffffffu, v.b, o)};
    v = combine(v, other);
  }
  return v;
}

// The block's sum of two floats (every thread gets it).
__device__ __forceinline__ void block_sum2(float& x, float& y, float2* red) {
  x = warp_sum(x);
  y = warp_sum(y);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();  // red may still be read from an earlier reduction
  if (lane == 0) red[warp] = make_float2(x, y);
  __syncthreads();
  x = y = 0.f;
  for (int w = 0; w < kKdThreads / 32; ++w) {
    x += red[w].x;
    y += red[w].y;
  }
}

// f(c, a, b) for each of this thread's runs of VEC columns c… of a row of zs (a) and zt (b), in
// fp32.
template <int VEC, typename T, typename F>
__device__ __forceinline__ void over_row(const T* zs, const T* zt, int64_t V, F&& f) {
  for (int64_t c = static_cast<int64_t>(threadIdx.x) * VEC; c < V; c += kKdThreads * VEC) {
    float a[VEC], b[VEC];
    load<VEC>(zs + c, a);
    load<VEC>(zt + c, b);
    f(c, a, b);
  }
}

// A row's scalars after the first pass (LOSS as below).
struct KdRow {
  float lse_z, lse_u, lse_w;  // log-sum-exps of zs, u = zs/T and w = zt/T
  float kl_pt;                // KL(p‖pt)
  float kd;                   // the divergence (JS: after its second pass)
};

// Pass 1 over both rows: the log-sum-exps and Σ p·(u − w), Σ pt·u, Σ pt·w online, from which every
// divergence but JS follows. Every thread gets the row's scalars.
template <typename T, int VEC, int LOSS>
__device__ __forceinline__ KdRow kd_first_pass(const T* zs, const T* zt, int64_t V, float inv_T) {
  __shared__ Soft red[3][kKdThreads / 32];
  __shared__ KdRow row_shared;
  const bool same = inv_T == 1.f;  // the CE's softmax is p itself
  Soft sc{-INFINITY, 0.f, 0.f, 0.f}, su = sc, sw = sc;
  over_row<VEC>(zs, zt, V, [&](int64_t, const float(&a)[VEC], const float(&b)[VEC]) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const float u = a[i] * inv_T, w = b[i] * inv_T;
      if (!same) add(sc, a[i], 0.f, 0.f);
      add(su, u, u - w, 0.f);
      add(sw, w, u, w);
    }
  });
  sc = shfl_combine(sc);
  su = shfl_combine(su);
  sw = shfl_combine(sw);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
    red[0][warp] = sc;
    red[1][warp] = su;
    red[2][warp] = sw;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    Soft c0 = red[0][0], u0 = red[1][0], w0 = red[2][0];
    for (int k = 1; k < kKdThreads / 32; ++k) {
      c0 = combine(c0, red[0][k]);
      u0 = combine(u0, red[1][k]);
      w0 = combine(w0, red[2][k]);
    }
    KdRow r;
    r.lse_u = u0.m + logf(u0.s);
    r.lse_w = w0.m + logf(w0.s);
    r.lse_z = same ? r.lse_u : c0.m + logf(c0.s);
    const float pt_u = w0.a / w0.s, pt_w = w0.b / w0.s, p_uw = u0.a / u0.s;
    const float kl_tp = pt_w - r.lse_w - pt_u + r.lse_u;  // KL(pt‖p)
    r.kl_pt = p_uw - r.lse_u + r.lse_w;
    r.kd = LOSS == 0 ? r.lse_u - pt_u : LOSS == 1 ? r.kl_pt : 0.5f * (kl_tp + r.kl_pt);
    row_shared = r;
  }
  __syncthreads();
  return row_shared;
}

// JS's second pass: Σ pt·(t − log m) and Σ p·(s − log m), m = ½(p + pt), summed over the block.
template <typename T, int VEC>
__device__ __forceinline__ float2 js_sums(const T* zs, const T* zt, int64_t V, float inv_T,
                                          const KdRow& r) {
  __shared__ float2 red[kKdThreads / 32];
  float sa = 0.f, sb = 0.f;
  over_row<VEC>(zs, zt, V, [&](int64_t, const float(&a)[VEC], const float(&b)[VEC]) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const float s = a[i] * inv_T - r.lse_u, t = b[i] * inv_T - r.lse_w;
      const float p = expf(s), pt = expf(t);
      const float lm = logf(fmaxf(0.5f * (p + pt), 1e-30f));
      sa += pt * (t - lm);
      sb += p * (s - lm);
    }
  });
  block_sum2(sa, sb, red);
  return make_float2(sa, sb);
}

// One block per row of the student's logits zs and the teacher's zt. With u = zs/T, w = zt/T,
// s = log_softmax(u), t = log_softmax(w), p = e^s, pt = e^t: the first pass (and JS's second) give
// the row's loss; the last writes the gradient of the row's loss with respect to zs over zs.
// LOSS: 0 forward_kl, 1 reverse_kl, 2 symmetric_kl, 3 js (kernels::KdDivergence).
template <typename T, int VEC, int LOSS>
__global__ void __launch_bounds__(kKdThreads)
    kd_kernel(T* __restrict__ zs_rows, const T* __restrict__ zt_rows,
              const int64_t* __restrict__ targets, const float* __restrict__ inv_count,
              float* __restrict__ ce_rows, float* __restrict__ kd_rows, int64_t V,
              int64_t ignore_index, float inv_T, float c_ce, float c_kd, bool grad) {
  const int64_t row = blockIdx.x;
  T* zs = zs_rows + row * V;
  const T* zt = zt_rows + row * V;
  const int64_t t = targets[row];
  const bool valid = t != ignore_index;
  KdRow r = kd_first_pass<T, VEC, LOSS>(zs, zt, V, inv_T);
  float js_b = 0.f;
  if (LOSS == 3) {
    const float2 ab = js_sums<T, VEC>(zs, zt, V, inv_T, r);
    r.kd = 0.5f * (ab.x + ab.y);
    js_b = ab.y;
  }
  if (threadIdx.x == 0) {
    ce_rows[row] = valid ? ((t >= 0 && t < V) ? r.lse_z - to_f(zs[t]) : NAN) : 0.f;
    kd_rows[row] = valid ? r.kd : 0.f;
  }
  __syncthreads();  // the target's logit is read before any thread overwrites it
  if (!grad) return;
  const bool same = inv_T == 1.f;
  const float scale = valid ? *inv_count : 0.f;
  const float k_ce = c_ce * scale, k_kd = c_kd * scale;
  over_row<VEC>(zs, zt, V, [&](int64_t c, const float(&a)[VEC], const float(&b)[VEC]) {
    float g[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const float s = a[i] * inv_T - r.lse_u, tt = b[i] * inv_T - r.lse_w;
      const float p = expf(s), pt = expf(tt);
      float d_ce = same ? p : expf(a[i] - r.lse_z);
      if (c + i == t) d_ce -= 1.f;
      float d_u = 0.f;
      if (LOSS == 0) d_u = p - pt;
      if (LOSS == 1) d_u = p * (s - tt - r.kl_pt);
      if (LOSS == 2) d_u = 0.5f * ((p - pt) + p * (s - tt - r.kl_pt));
      if (LOSS == 3) d_u = 0.5f * p * (s - logf(fmaxf(0.5f * (p + pt), 1e-30f)) - js_b);
      g[i] = k_ce * d_ce + k_kd * d_u;
    }
    store<VEC>(zs + c, g);
  });
}

unsigned blocks_for(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

}  // namespace

int rms_norm_forward(const void* x, DType x_t, const void* delta, DType delta_t, const void* weight,
                     DType w_t, void* sum, void* h, DType h_t, float* rstd, int64_t rows,
                     int64_t dim, float eps, bool vec4, void* stream) {
  if (rows == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const unsigned grid = blocks_for(rows, kNormThreads / 32);
  return with_norm_types(x_t, delta_t, w_t, h_t, [&](auto xv, auto dv, auto wv, auto hv) {
    using X = decltype(xv);
    using Dl = decltype(dv);
    using W = decltype(wv);
    using H = decltype(hv);
    auto launch = [&](auto kernel) {
      kernel<<<grid, kNormThreads, 0, s>>>(
          static_cast<const X*>(x), static_cast<const Dl*>(delta), static_cast<const W*>(weight),
          static_cast<X*>(sum), static_cast<H*>(h), rstd, rows, static_cast<int>(dim), eps);
      return last_error();
    };
    return vec4 ? launch(rms_forward_kernel<X, Dl, W, H, 4>)
                : launch(rms_forward_kernel<X, Dl, W, H, 1>);
  });
}

int rms_norm_forward_cached(const void* x, DType x_t, const void* delta, DType delta_t,
                            const void* weight, DType w_t, void* sum, void* h, DType h_t,
                            float* rstd, int64_t rows, int64_t dim, float eps, void* stream) {
  const int iters = static_cast<int>((dim + 127) / 128);
  if (dim % 4 != 0 || iters < 1 || iters > kMaxNormIters)
    return static_cast<int>(cudaErrorInvalidValue);
  if (rows == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const unsigned grid = blocks_for(rows, kNormThreads / 32);
  return with_norm_types(x_t, delta_t, w_t, h_t, [&](auto xv, auto dv, auto wv, auto hv) {
    using X = decltype(xv);
    using Dl = decltype(dv);
    using W = decltype(wv);
    using H = decltype(hv);
    auto kernel = kernel_for_iters<kMaxNormIters>(
        iters, [](auto n) { return rms_forward_cached_kernel<X, Dl, W, H, decltype(n)::value>; });
    kernel<<<grid, kNormThreads, 0, s>>>(
        static_cast<const X*>(x), static_cast<const Dl*>(delta), static_cast<const W*>(weight),
        static_cast<X*>(sum), static_cast<H*>(h), rstd, rows, static_cast<int>(dim), eps);
    return last_error();
  });
}

namespace {

// Both backward kernels take the same arguments; `pick` chooses one for the four types.
template <typename Pick>
int launch_norm_backward(Pick&& pick, const void* grad_h, DType h_t, const void* grad_sum,
                         const void* s, DType x_t, const void* weight, DType w_t, const float* rstd,
                         void* grad_x, void* grad_delta, DType delta_t, float* weight_partial,
                         int blocks, int64_t rows, int64_t dim, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  const size_t smem = static_cast<size_t>(kNormBwdThreads / 32) * dim * sizeof(float);
  return with_norm_types(x_t, delta_t, w_t, h_t, [&](auto xv, auto dv, auto wv, auto hv) {
    using X = decltype(xv);
    using Dl = decltype(dv);
    using W = decltype(wv);
    using H = decltype(hv);
    auto kernel = pick(xv, dv, wv, hv);
    if (smem > 48 * 1024) {
      cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem));
      if (e != cudaSuccess) return static_cast<int>(e);
    }
    kernel<<<blocks, kNormBwdThreads, smem, st>>>(
        static_cast<const H*>(grad_h), static_cast<const X*>(grad_sum), static_cast<const X*>(s),
        static_cast<const W*>(weight), rstd, static_cast<X*>(grad_x), static_cast<Dl*>(grad_delta),
        weight_partial, rows, static_cast<int>(dim));
    return last_error();
  });
}

}  // namespace

int rms_norm_backward(const void* grad_h, DType h_t, const void* grad_sum, const void* s, DType x_t,
                      const void* weight, DType w_t, const float* rstd, void* grad_x,
                      void* grad_delta, DType delta_t, float* weight_partial, int blocks,
                      int64_t rows, int64_t dim, bool vec4, void* stream) {
  auto pick = [vec4](auto xv, auto dv, auto wv, auto hv) {
    using X = decltype(xv);
    using Dl = decltype(dv);
    using W = decltype(wv);
    using H = decltype(hv);
    return vec4 ? rms_backward_kernel<X, Dl, W, H, 4> : rms_backward_kernel<X, Dl, W, H, 1>;
  };
  return launch_norm_backward(pick, grad_h, h_t, grad_sum, s, x_t, weight, w_t, rstd, grad_x,
                              grad_delta, delta_t, weight_partial, blocks, rows, dim, stream);
}

int rms_norm_backward_cached(const void* grad_h, DType h_t, const void* grad_sum, const void* s,
                             DType x_t, const void* weight, DType w_t, const float* rstd,
                             void* grad_x, void* grad_delta, DType delta_t, float* weight_partial,
                             int blocks, int64_t rows, int64_t dim, void* stream) {
  const int iters = static_cast<int>((dim + 127) / 128);
  if (dim % 4 != 0 || iters < 1 || iters > kMaxNormIters)
    return static_cast<int>(cudaErrorInvalidValue);
  auto pick = [iters](auto xv, auto dv, auto wv, auto hv) {
    using X = decltype(xv);
    using Dl = decltype(dv);
    using W = decltype(wv);
    using H = decltype(hv);
    return kernel_for_iters<kMaxNormIters>(
        iters, [](auto n) { return rms_backward_cached_kernel<X, Dl, W, H, decltype(n)::value>; });
  };
  return launch_norm_backward(pick, grad_h, h_t, grad_sum, s, x_t, weight, w_t, rstd, grad_x,
                              grad_delta, delta_t, weight_partial, blocks, rows, dim, stream);
}

int swiglu_forward(const void* gu, DType t, void* out, int64_t rows, int64_t F, int vec,
                   void* stream) {
  if (rows == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  return with_type(t, [&](auto tv) {
    using T = decltype(tv);
    auto launch = [&](auto kernel, int v) {
      kernel<<<blocks_for(rows * (F / v), kEltThreads), kEltThreads, 0, s>>>(
          static_cast<const T*>(gu), static_cast<T*>(out), rows, F);
      return last_error();
    };
    switch (vec) {
      case 8:
        return launch(swiglu_forward_kernel<T, 8>, 8);
      case 4:
        return launch(swiglu_forward_kernel<T, 4>, 4);
      case 2:
        return launch(swiglu_forward_kernel<T, 2>, 2);
      default:
        return launch(swiglu_forward_kernel<T, 1>, 1);
    }
  });
}

int swiglu_backward(const void* grad_out, const void* gu, DType t, void* grad_gu, int64_t rows,
                    int64_t F, int vec, void* stream) {
  if (rows == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  return with_type(t, [&](auto tv) {
    using T = decltype(tv);
    auto launch = [&](auto kernel, int v) {
      kernel<<<blocks_for(rows * (F / v), kEltThreads), kEltThreads, 0, s>>>(
          static_cast<const T*>(grad_out), static_cast<const T*>(gu), static_cast<T*>(grad_gu),
          rows, F);
      return last_error();
    };
    switch (vec) {
      case 8:
        return launch(swiglu_backward_kernel<T, 8>, 8);
      case 4:
        return launch(swiglu_backward_kernel<T, 4>, 4);
      case 2:
        return launch(swiglu_backward_kernel<T, 2>, 2);
      default:
        return launch(swiglu_backward_kernel<T, 1>, 1);
    }
  });
}

int cross_entropy_rows(void* logits, DType t, const int64_t* targets, const float* inv_count,
                       float* loss_rows, int64_t rows, int64_t V, int64_t ignore_index, bool grad,
                       bool vec, void* stream) {
  if (rows == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  return with_type(t, [&](auto tv) {
    using T = decltype(tv);
    constexpr int kVec = 16 / sizeof(T);
    auto launch = [&](auto kernel) {
      kernel<<<static_cast<unsigned>(rows), kXentThreads, 0, s>>>(
          static_cast<T*>(logits), targets, inv_count, loss_rows, V, ignore_index, grad);
      return last_error();
    };
    return vec ? launch(xent_kernel<T, kVec>) : launch(xent_kernel<T, 1>);
  });
}

int distillation_rows(void* zs, const void* zt, DType t, const int64_t* targets,
                      const float* inv_count, float* ce_rows, float* kd_rows, int64_t rows,
                      int64_t V, int loss, float temperature, float ce_weight, float kd_weight,
                      int64_t ignore_index, bool grad, bool vec, void* stream) {
  if (rows == 0) return 0;
  if (loss < 0 || loss > 3) return static_cast<int>(cudaErrorInvalidValue);
  auto s = static_cast<cudaStream_t>(stream);
  return with_type(t, [&](auto tv) {
    using E = decltype(tv);
    constexpr int kVec = 16 / sizeof(E);
    auto launch = [&](auto kernel) {
      kernel<<<static_cast<unsigned>(rows), kKdThreads, 0, s>>>(
          static_cast<E*>(zs), static_cast<const E*>(zt), targets, inv_count, ce_rows, kd_rows, V,
          ignore_index, 1.f / temperature, ce_weight, kd_weight, grad);
      return last_error();
    };
    auto by_loss = [&](auto vec_tag) {
      constexpr int N = decltype(vec_tag)::value;
      switch (loss) {
        case 0:
          return launch(kd_kernel<E, N, 0>);
        case 1:
          return launch(kd_kernel<E, N, 1>);
        case 2:
          return launch(kd_kernel<E, N, 2>);
        default:
          return launch(kd_kernel<E, N, 3>);
      }
    };
    return vec ? by_loss(std::integral_constant<int, kVec>{})
               : by_loss(std::integral_constant<int, 1>{});
  });
}

namespace {
unsigned rope_threads(int64_t nh, int64_t jv) {
  const int64_t n = nh * jv;
  return static_cast<unsigned>(std::min<int64_t>(kEltThreads, (n + 31) / 32 * 32));
}
}  // namespace

int rope_split_forward(const void* qkv, DType t, const float* cos, const float* sin, void* q,
                       void* k, void* v, int64_t rows, int64_t seq_len, int64_t H, int64_t KV,
                       int64_t hd, int vec, void* stream) {
  if (rows == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const unsigned threads = rope_threads(H + 2 * KV, hd / 2 / vec);
  return with_type(t, [&](auto tv) {
    using T = decltype(tv);
    auto launch = [&](auto kernel) {
      kernel<<<static_cast<unsigned>(rows), threads, 0, s>>>(
          static_cast<const T*>(qkv), cos, sin, static_cast<T*>(q), static_cast<T*>(k),
          static_cast<T*>(v), seq_len, static_cast<int>(H), static_cast<int>(KV),
          static_cast<int>(hd));
      return last_error();
    };
    switch (vec) {
      case 4:
        return launch(rope_forward_rows_kernel<T, 4>);
      case 2:
        return launch(rope_forward_rows_kernel<T, 2>);
      default:
        return launch(rope_forward_rows_kernel<T, 1>);
    }
  });
}

int rope_split_backward(const void* gq, HeadStrides sq, const void* gk, HeadStrides sk,
                        const void* gv, HeadStrides sv, DType t, const float* cos, const float* sin,
                        void* grad_qkv, int64_t rows, int64_t seq_len, int64_t H, int64_t KV,
                        int64_t hd, int vec, void* stream) {
  if (rows == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const unsigned threads = rope_threads(H + 2 * KV, hd / 2 / vec);
  return with_type(t, [&](auto tv) {
    using T = decltype(tv);
    auto launch = [&](auto kernel) {
      kernel<<<static_cast<unsigned>(rows), threads, 0, s>>>(
          static_cast<const T*>(gq), sq, static_cast<const T*>(gk), sk, static_cast<const T*>(gv),
          sv, cos, sin, static_cast<T*>(grad_qkv), seq_len, static_cast<int>(H),
          static_cast<int>(KV), static_cast<int>(hd));
      return last_error();
    };
    switch (vec) {
      case 4:
        return launch(rope_backward_rows_kernel<T, 4>);
      case 2:
        return launch(rope_backward_rows_kernel<T, 2>);
      default:
        return launch(rope_backward_rows_kernel<T, 1>);
    }
  });
}

}  // namespace deepthin::kernels::cuda
