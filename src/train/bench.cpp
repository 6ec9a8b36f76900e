// deepthin bench: times the training step that train runs (train/step.h) on random tokens, after
// warm-up steps, with the launch mode, memory and, when asked, a per-kernel-family profile.
#include "train/bench.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <optional>

#include "dist/comm.h"
#include "model/decoder.h"
#include "model/param_count.h"
#include "train/device_info.h"
#include "train/kd.h"
#include "train/loss.h"
#include "train/optimizer.h"
#include "train/precision.h"
#include "train/step.h"
#include "train/teacher.h"

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

// A kernel's family, from its (demangled) name.
std::string kernel_family(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(), ::tolower);
  auto has = [&](std::initializer_list<const char*> keys) {
    for (const char* k : keys)
      if (name.find(k) != std::string::npos) return true;
    return false;
  };
  if (has({"deepthin"})) {
    if (has({"rms_"})) return "deepthin RMSNorm (+ residual add)";
    if (has({"rope"})) return "deepthin RoPE + q|k|v split";
    if (has({"swiglu"})) return "deepthin SwiGLU";
    if (has({"xent"})) return "deepthin LM-head cross-entropy";
    return "deepthin other";
  }
  if (has({"flash", "fmha", "cudnn", "attention", "sdpa"})) return "attention (SDPA)";
  if (has({"gemm", "cutlass", "nvjet", "xmma", "cublas", "gemv", "splitk"})) return "GEMM";
  if (has({"adam"})) return "AdamW";
  if (has({"embedding", "indexing", "index_", "scatter", "gather", "sort", "radix"}))
    return "embedding / indexing";
  if (has({"reduce", "norm"})) return "reductions (norms, sums)";
  if (has({"memset", "fill"})) return "memset / fill";
  if (has({"memcpy", "copy", "cat", "unrolled_elementwise", "vectorized_elementwise",
           "elementwise"}))
    return "ATen elementwise / casts / copies";
  return "other";
}

// GPU time per step by kernel family over `steps` runs of f, from the Kineto profiler.
Json profile_families(const std::function<void()>& f, const c10::Device& device, int64_t steps) {
  namespace prof = torch::autograd::profiler;
  using torch::profiler::impl::ActivityType;
  using torch::profiler::impl::ProfilerConfig;
  using torch::profiler::impl::ProfilerState;
  Json out = Json::object();
  try {
    ProfilerConfig config(ProfilerState::KINETO);
    const std::set<ActivityType> acts{ActivityType::CPU, ActivityType::CUDA};
    prof::prepareProfiler(config, acts);
    prof::enableProfiler(config, acts);
    for (int64_t i = 0; i < steps; ++i) f();
    synchronize(device);
    auto result = prof::disableProfiler();
    std::map<std::string, std::pair<double, int64_t>> fam;  // ms, kernel count
    std::map<std::string, double> by_name;
    double total = 0;
    for (const auto& e : result->events()) {
      if (e.deviceType() != c10::DeviceType::CUDA) continue;
      const double ms = static_cast<double>(e.durationNs()) / 1e6;
      auto& slot = fam[kernel_family(e.name())];
      slot.first += ms;
      slot.second += 1;
      by_name[e.name().substr(0, 120)] += ms;
      total += ms;
    }
    std::vector<std::pair<std::string, std::pair<double, int64_t>>> rows(fam.begin(), fam.end());
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
    Json list = Json::array();
    for (const auto& [name, v] : rows) {
      Json r = Json::object();
      r["family"] = name;
      r["ms_per_step"] = v.first / static_cast<double>(steps);
      r["share"] = total > 0 ? v.first / total : 0.0;
      r["kernels_per_step"] = static_cast<double>(v.second) / static_cast<double>(steps);
      list.push_back(r);
    }
    std::vector<std::pair<std::string, double>> names(by_name.begin(), by_name.end());
    std::sort(names.begin(), names.end(),
              [](const auto& a, const auto& b) { return a.second > b.second; });
    Json top = Json::array();
    for (size_t i = 0; i < names.size() && i < 12; ++i) {
      Json r = Json::object();
      r["kernel"] = names[i].first;
      r["ms_per_step"] = names[i].second / static_cast<double>(steps);
      top.push_back(r);
    }
    out["top_kernels"] = top;
    out["gpu_ms_per_step"] = total / static_cast<double>(steps);
    out["families"] = list;
  } catch (const std::exception& e) {
    out["error"] = std::string("profiler unavailable: ") + e.what();
  }
  return out;
}

// Distillation's own parts: the teacher's forward alone (no grad, the student's precision) and the
// KD loss's forward and backward on the student's head, with the teacher's hidden states of the
// same tokens.
void bench_kd_parts(Json& out, Teacher& teacher, model::Decoder& m, const config::Config& cfg,
                    const at::Tensor& tokens, Precision precision, const c10::Device& device,
                    const BenchOptions& opts) {
  const int64_t T = cfg.train.seq_len;
  auto input = tokens.narrow(1, 0, T).to(teacher.device);
  at::Tensor th;
  out["teacher"] = teacher.dir;
  out["teacher_forward_ms"] = median_ms(teacher.device, opts, [&] {
    torch::NoGradGuard ng;
    AutocastScope ac(teacher.device, precision);
    th = teacher.model->hidden_states(input);
  });
  th = th.reshape({-1, th.size(-1)}).to(device);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto h = at::randn({th.size(0), cfg.model.dim}, gen).to(device).requires_grad_(true);
  auto w = m->output_weight();
  auto wt = teacher.model->output_weight().detach().to(device);
  auto targets = tokens.narrow(1, 1, T).reshape({-1});
  const KdLossOptions ko =
      kd_loss_options(cfg.kd, cfg.train.loss_chunk_tokens,
                      precision == Precision::bf16 ? at::kBFloat16 : at::kFloat, device);
  out["kd_loss_fwd_bwd_ms"] = median_ms(device, opts, [&] {
    distillation_loss(h, w, th, wt, targets, ko).total.backward();
    h.mutable_grad().reset();
    if (w.grad().defined()) w.mutable_grad().reset();
  });
}

// Each part of the step on its own: forward, forward and backward, the fused loss, distillation's
// parts with a teacher, and the optimizer.
void bench_parts(Json& out, model::Decoder& m, AdamW& opt, const TrainStep& step, Teacher* teacher,
                 const config::Config& cfg, const at::Tensor& tokens, Precision precision,
                 const c10::Device& device, const BenchOptions& opts) {
  const auto& tc = cfg.train;
  const int64_t B = tc.micro_batch_size, T = tc.seq_len, D = cfg.model.dim;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  auto zero = [&] {
    for (auto& p : step.params())
      if (p.grad().defined()) p.mutable_grad().zero_();
  };
  out["forward_ms"] = median_ms(device, opts, [&] {
    torch::NoGradGuard ng;
    AutocastScope ac(device, precision);
    m->hidden_states(tokens.narrow(1, 0, T));
  });
  out["forward_backward_ms"] = median_ms(device, opts, [&] {
    batch_loss(m, tokens, device, precision, tc.loss_chunk_tokens).total.backward();
    zero();
  });
  {
    auto h = at::randn({B * T, D}, gen).to(device).requires_grad_(true);
    auto w = m->output_weight();
    auto targets = tokens.narrow(1, 1, T).reshape({-1});
    LmLossOptions lo;
    lo.chunk_rows = tc.loss_chunk_tokens;
    lo.compute_dtype = precision == Precision::bf16 ? at::kBFloat16 : at::kFloat;
    out["loss_fwd_bwd_ms"] = median_ms(device, opts, [&] {
      lm_head_cross_entropy(h, w, targets, lo).backward();
      h.mutable_grad().reset();
      zero();
    });
  }
  if (teacher) bench_kd_parts(out, *teacher, m, cfg, tokens, precision, device, opts);
  batch_loss(m, tokens, device, precision, tc.loss_chunk_tokens).total.backward();
  out["optimizer_ms"] = median_ms(device, opts, [&] { opt.step(1e-6); });
  zero();
}

}  // namespace

Json bench_step(const config::Config& cfg, const BenchOptions& opts) {
  const auto& tc = cfg.train;
  const c10::Device device = parse_device(tc.device);
  set_current_device(device);
  const Precision precision = resolve_precision(tc.precision, device);
  check_memory_fits(cfg, device, /*training=*/true, 1, "the benchmarked training step");
  model::Decoder m(cfg.model);
  m->to(device);
  configure_for_training(m, tc);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& item : m->named_parameters()) named.emplace_back(item.key(), item.value());
  AdamW opt(named, cfg.optimizer);
  dist::Comm comm;                 // a world of one
  std::optional<Teacher> teacher;  // kd.teacher: the step distills, and its parts are timed
  if (!cfg.kd.teacher.empty() && cfg.kd.ratio > 0) teacher = load_teacher(cfg, device);
  TrainStep step(
      {m, &opt, &comm, nullptr, teacher ? &*teacher : nullptr, &cfg.kd, device, precision}, tc);
  const int64_t B = tc.micro_batch_size, T = tc.seq_len;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  auto tokens = at::randint(cfg.model.vocab_size, {B, T + 1}, gen, at::kLong).to(device);
  auto batch = [&] { return tokens; };

  Json out = Json::object();
  out["device"] = device_name(device);
  out["precision"] = precision_name(precision);
  out["kernels"] = config::kKernelChoices[static_cast<int>(tc.kernels)];
  out["activation_checkpointing"] =
      config::kRecomputeChoices[static_cast<int>(tc.activation_checkpointing)];
  out["launch"] = launch_name(step.launch());
  out["micro_batch"] = B;
  out["seq_len"] = T;
  if (!opts.step_only)
    bench_parts(out, m, opt, step, teacher ? &*teacher : nullptr, cfg, tokens, precision, device,
                opts);
  synchronize(device);
  reset_peak_memory(device);
  const double step_ms =
      median_ms(device, opts, [&] { step.run(batch, 1e-6, 1, /*stop_requested=*/false); });
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
  if (opts.profile_steps > 0 && device.is_cuda())
    out["profile"] =
        profile_families([&] { step.run(batch, 1e-6, 1, false); }, device, opts.profile_steps);
  return out;
}

}  // namespace deepthin::train
