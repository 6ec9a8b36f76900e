#include "train/bench.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <functional>

#include "model/decoder.h"
#include "model/param_count.h"
#include "train/device_info.h"
#include "train/loss.h"
#include "train/optimizer.h"
#include "train/precision.h"

namespace deepthin::train {

namespace {

double median_ms(const c10::Device& d, const BenchOptions& o, const std::function<void()>& f) {
  for (int64_t i = 0; i < o.warmup; ++i) f();
  synchronize(d);
  std::vector<double> ms;
  for (int64_t i = 0; i < o.steps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    synchronize(d);
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

Json bench_step(const config::Config& cfg, const BenchOptions& opts) {
  const auto& tc = cfg.train;
  const c10::Device device = parse_device(tc.device);
  set_current_device(device);
  const Precision precision = resolve_precision(tc.precision, device);
  model::Decoder m(cfg.model);
  m->to(device);
  std::vector<std::pair<std::string, at::Tensor>> named;
  std::vector<at::Tensor> params;
  for (const auto& item : m->named_parameters()) {
    named.emplace_back(item.key(), item.value());
    params.push_back(item.value());
  }
  AdamW opt(named, cfg.optimizer);
  const int64_t B = tc.micro_batch_size, T = tc.seq_len, D = cfg.model.dim;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  auto tokens = at::randint(cfg.model.vocab_size, {B, T + 1}, gen, at::kLong).to(device);
  auto inputs = tokens.narrow(1, 0, T), targets = tokens.narrow(1, 1, T).reshape({-1});
  LmLossOptions lo;
  lo.chunk_rows = tc.loss_chunk_tokens;
  lo.compute_dtype = precision == Precision::bf16 ? at::kBFloat16 : at::kFloat;

  auto forward = [&] {
    AutocastScope ac(device, precision);
    return m->hidden_states(inputs);
  };
  auto zero = [&] {
    for (auto& p : params)
      if (p.grad().defined()) p.mutable_grad().zero_();
  };
  auto fwd_bwd = [&] {
    auto h = forward();
    lm_head_cross_entropy(h.reshape({-1, D}), m->output_weight(), targets, lo).backward();
  };

  Json out = Json::object();
  out["device"] = device_name(device);
  out["precision"] = precision_name(precision);
  out["micro_batch"] = B;
  out["seq_len"] = T;
  out["forward_ms"] = median_ms(device, opts, [&] {
    torch::NoGradGuard ng;
    forward();
  });
  out["forward_backward_ms"] = median_ms(device, opts, [&] {
    fwd_bwd();
    zero();
  });
  {
    auto h = at::randn({B * T, D}, gen).to(device).requires_grad_(true);
    auto w = m->output_weight();
    out["loss_fwd_bwd_ms"] = median_ms(device, opts, [&] {
      lm_head_cross_entropy(h, w, targets, lo).backward();
      h.mutable_grad().reset();
      zero();
    });
  }
  fwd_bwd();  // grads exist for the optimizer timing
  out["optimizer_ms"] = median_ms(device, opts, [&] { opt.step(1e-6); });
  const double step_ms = median_ms(device, opts, [&] {
    fwd_bwd();
    std::vector<at::Tensor> grads;
    for (auto& p : params) grads.push_back(p.grad());
    auto norm = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2)), 2).item<double>();
    (void)norm;
    opt.step(1e-6);
    zero();
  });
  out["step_ms"] = step_ms;
  const double tps = static_cast<double>(B * T) / (step_ms / 1e3);
  out["tokens_per_s"] = tps;
  const double flops = static_cast<double>(model::training_flops_per_token(cfg.model, T));
  const double peak = tc.peak_tflops > 0 ? tc.peak_tflops : known_peak_tflops(device);
  if (peak > 0) {
    out["mfu"] = flops * tps / (peak * 1e12);
    out["speed_of_light_ms"] = flops * static_cast<double>(B * T) / (peak * 1e12) * 1e3;
  }
  out["peak_mem_gb"] = peak_memory_gb(device);
  return out;
}

}  // namespace deepthin::train
