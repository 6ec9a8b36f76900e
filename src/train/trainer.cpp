// The training loop, top to bottom: set up the device, data, model and optimizer; restore a
// checkpoint when resuming; then step, log, evaluate and checkpoint until the budget is spent.
// Detail lives in the helpers above train().
#include "train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <optional>
#include <thread>

#include <signal.h>
#include <unistd.h>

#include "data/loader.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "dist/comm.h"
#include "dist/data_parallel.h"
#include "dist/launch.h"
#include "export/model_dir.h"
#include "model/decoder.h"
#include "model/param_count.h"
#include "train/checkpoint.h"
#include "train/device_info.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/precision.h"
#include "train/schedule.h"
#include "train/step.h"
#include "train/teacher.h"
#include "util/error.h"
#include "util/fault.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/sha256.h"
#include "util/strings.h"

namespace deepthin::train {

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_stop_requested{false};
extern "C" void on_stop_signal(int) {
  g_stop_requested = true;
}

c10::Device pick_device(const std::string& spec, const dist::LaunchEnv& env) {
  // Under torchrun / SLURM each process drives its local GPU.
  auto d = parse_device(spec);
  if (d.is_cuda() && env.launcher != "none" && (spec == "auto" || spec == "cuda"))
    d = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  return d;
}

std::string to_hex(const at::Tensor& bytes) {
  static const char* digits = "0123456789abcdef";
  auto b = bytes.contiguous();
  const uint8_t* p = b.data_ptr<uint8_t>();
  std::string s;
  for (int64_t i = 0; i < b.numel(); ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

at::Tensor from_hex(const std::string& s) {
  auto t = at::empty({static_cast<int64_t>(s.size() / 2)}, at::kByte);
  uint8_t* p = t.data_ptr<uint8_t>();
  auto nib = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (size_t i = 0; i + 1 < s.size(); i += 2)
    p[i / 2] = static_cast<uint8_t>(nib(s[i]) << 4 | nib(s[i + 1]));
  return t;
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  int64_t t = static_cast<int64_t>(s);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(t / 3600), (long long)(t / 60 % 60));
  else
    std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  return buf;
}

// Mean loss over the first eval.batches validation batches; with several ranks, batch i is
// computed by rank i mod world and the sums are all-reduced (the same number at any world size).
double evaluate(model::Decoder& m, const std::shared_ptr<data::TokenDataset>& ds,
                const config::Config& cfg, const c10::Device& device, Precision precision,
                dist::Comm& comm) {
  torch::NoGradGuard no_grad;
  const int64_t T = cfg.train.seq_len;
  const int64_t windows = ds->num_windows(T);
  const int64_t B = std::min(cfg.train.micro_batch_size, windows);
  data::Loader loader(ds, data::LoaderOptions{B, T, 0, 1, 0, /*shuffle=*/false, /*prefetch=*/0});
  const int64_t n = std::max<int64_t>(1, std::min(cfg.eval.batches, windows / B));
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    auto batch = loader.next();
    if (i % comm.size() != comm.rank()) continue;
    total += batch_loss(m, batch.tokens, device, precision, cfg.train.loss_chunk_tokens)
                 .total.item<double>();
  }
  auto sum = at::full({1}, total, at::TensorOptions().dtype(at::kDouble).device(comm.device()));
  comm.allreduce(sum, c10d::ReduceOp::SUM, "validation loss all-reduce");
  return sum.item<double>() / static_cast<double>(n);
}

std::shared_ptr<data::TokenDataset> open_val(const config::DataConfig& d) {
  if (!d.val_path.empty()) return data::TokenDataset::open(d.val_path, "val");
  std::error_code ec;
  if (!fs::is_directory(d.path, ec)) return nullptr;
  const Json m = Json::parse(read_file(fs::path(d.path) / "manifest.json"));
  const Json* v = m.find("splits") ? m.find("splits")->find("val") : nullptr;
  if (!v || v->at("tokens", "manifest").as_int() == 0) return nullptr;
  return data::TokenDataset::open(d.path, "val");
}

}  // namespace

fs::path run_directory(const config::Config& cfg, const fs::path& config_path) {
  std::string name = cfg.run.name.empty() ? config_path.stem().string() : cfg.run.name;
  return fs::path(cfg.run.root) / name;
}

TrainResult train(const config::Config& cfg, const TrainOptions& opts) {
  using Clock = std::chrono::steady_clock;
  const fs::path& run_dir = opts.run_dir;
  const auto& tc = cfg.train;

  // ---- Launch, device, process group, precision, run directory.
  const dist::LaunchEnv env = dist::detect_launch();
  const c10::Device device = pick_device(tc.device, env);
  set_current_device(device);
  if (env.distributed() && device.is_cpu() && !std::getenv("OMP_NUM_THREADS"))
    at::set_num_threads(std::max<int>(
        1, static_cast<int>(std::thread::hardware_concurrency()) / env.local_world_size));
  const Precision precision = resolve_precision(tc.precision, device);
  check_memory_fits(cfg, device, /*training=*/true, env.world_size, "training");
  if (cfg.data.path.empty())
    fail_input("data.path is not set: point it at a prepared directory or shard files");
  if (!opts.resume && !list_checkpoints(run_dir).empty())
    fail_input("run directory " + run_dir.string() +
               " already holds checkpoints; pass --resume to continue it, or set run.name to start "
               "another run");
  auto comm = dist::Comm::create(env, device, cfg.distributed);
  const bool rank0 = comm->rank() == 0;
  const int world = comm->size();
  std::optional<DirLock> lock;  // one writer per run directory
  if (rank0) {
    fs::create_directories(run_dir);
    lock.emplace(run_dir, "run directory");
    log::configure(true, (run_dir / "train.log").string());
    remove_stale_temporaries(run_dir);
  } else {
    log::configure(true, "", log::Level::warn);  // other ranks: warnings and errors only
  }
  if (comm->active()) {
    log::info("distributed: {} over {}", env.describe(), comm->backend_name());
    comm->check_same(
        std::stoull(sha256_hex(config::to_yaml(cfg) + run_dir.string()).substr(0, 16), nullptr, 16),
        "the ranks were started with different configs or run directories; launch "
        "every rank with the same CONFIG, --set options and --resume");
  }

  // ---- Data.
  auto train_ds = data::TokenDataset::open(cfg.data.path, "train");
  auto val_ds = open_val(cfg.data);
  for (const auto* ds : {train_ds.get(), val_ds.get()}) {
    if (!ds) continue;
    if (ds->max_token_id() >= cfg.model.vocab_size)
      fail_input(ds->description() + " holds token id " + std::to_string(ds->max_token_id()) +
                 " but model.vocab_size is " + std::to_string(cfg.model.vocab_size));
    if (!cfg.data.tokenizer.empty()) {
      auto tok = data::Tokenizer::load(cfg.data.tokenizer);
      ds->check_tokenizer(tok.sha256(), tok.path().string());
    }
  }
  const int64_t tokens_per_step =
      tc.micro_batch_size * tc.grad_accum_steps * tc.seq_len * static_cast<int64_t>(world);
  const int64_t total_steps =
      tc.max_steps > 0 ? tc.max_steps : (tc.max_tokens + tokens_per_step - 1) / tokens_per_step;
  if (total_steps <= 0) fail_input("set train.max_steps or train.max_tokens to a positive number");
  data::Loader loader(train_ds, data::LoaderOptions{tc.micro_batch_size, tc.seq_len, comm->rank(),
                                                    world, static_cast<uint64_t>(tc.seed), true,
                                                    static_cast<int>(cfg.data.prefetch)});

  // ---- Model and optimizer: fp32 master weights on the device.
  model::Decoder model(cfg.model);
  model->reset_parameters(static_cast<uint64_t>(tc.seed));
  model->to(device);
  configure_for_training(model, tc);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& item : model->named_parameters()) {
    named.emplace_back(item.key(), item.value());
  }
  std::unique_ptr<dist::DataParallel> dp;
  if (comm->active()) {
    dp = std::make_unique<dist::DataParallel>(comm, named, cfg.distributed.bucket_mb,
                                              cfg.distributed.zero1,
                                              model->gradient_accumulations());
    dp->broadcast_parameters();
    log::info("data parallel: {} gradient buckets of up to {} MB{}", dp->num_buckets(),
              log::fixed(cfg.distributed.bucket_mb, 1),
              dp->zero1() ? ", ZeRO-1 (this rank updates " +
                                group_digits(dp->shard_end() - dp->shard_begin()) + " elements)"
                          : std::string());
  }
  AdamW optimizer = dp ? AdamW(dp->optimizer_slices(), cfg.optimizer) : AdamW(named, cfg.optimizer);

  // ---- Teacher (distillation). With kd.ratio 0 it is checked and let go: plain training.
  std::optional<Teacher> teacher;
  if (!cfg.kd.teacher.empty()) {
    teacher = load_teacher(cfg, device);
    log::info("distillation: teacher {} ({} parameters, {} on {}), {} at temperature {}, ratio {}",
              teacher->dir, group_digits(model::count_params(teacher->model->config()).total),
              teacher->device.is_cuda() ? "bf16" : "fp32", teacher->device.str(),
              config::kKdLosses[static_cast<int>(cfg.kd.loss)], cfg.kd.temperature, cfg.kd.ratio);
    if (cfg.kd.ratio == 0) {
      log::info("kd.ratio is 0: the teacher is not used");
      teacher.reset();
    }
  }

  // ---- Resume: every rank reads the same checkpoint.
  TrainerState state;
  state.loader = loader.state();
  if (opts.resume) {
    if (auto ref = latest_checkpoint(run_dir, opts.resume_fallback)) {
      auto ck = read_checkpoint(ref->dir);
      auto saved = exports::load_model_dir(ref->dir);
      config::Config want, have;
      want.model = cfg.model;
      have.model = saved.config.model;
      if (config::to_yaml(want) != config::to_yaml(have))
        fail_input("checkpoint " + ref->dir.string() +
                   " holds a different model than the config's model section");
      exports::load_weights(model, exports::model_tensors(saved.model, false), ref->dir.string());
      optimizer.load_state(ck.optimizer, ck.state.step, ref->dir.string());
      state = ck.state;
      loader.set_state(state.loader);
      if (!state.cpu_rng.empty()) {
        at::Generator gen = at::detail::getDefaultCPUGenerator();
        gen.set_state(from_hex(state.cpu_rng));
      }
      log::info("resumed from {} (step {}, {} tokens)", ref->dir.string(), state.step,
                group_digits(state.tokens));
    } else {
      log::info("no checkpoint in {}: starting from scratch", run_dir.string());
    }
  }
  std::optional<MetricsLog> metrics;
  if (rank0) {
    write_file_atomic(run_dir / "config.yaml", config::to_yaml(cfg));
    metrics.emplace(run_dir, cfg.log.tensorboard, opts.resume ? state.step : -1);
  }

  const auto counts = model::count_params(cfg.model);
  const double flops_per_token =
      static_cast<double>(model::training_flops_per_token(cfg.model, tc.seq_len));
  const double peak_tflops = tc.peak_tflops > 0 ? tc.peak_tflops : known_peak_tflops(device);
  log::info("model: {} parameters, {} effective layers; {} on {} ({}){}",
            group_digits(counts.total), counts.effective_layers, precision_name(precision),
            device_name(device), device.str(),
            world > 1 ? " × " + std::to_string(world) + " ranks" : std::string());
  log::info("data: {} ({} tokens, {} windows); {} tokens/step, {} steps ({} tokens)",
            train_ds->description(), group_digits(train_ds->total_tokens()),
            group_digits(loader.num_windows()), group_digits(tokens_per_step), total_steps,
            human_count(static_cast<double>(total_steps * tokens_per_step)));

  g_stop_requested = false;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);

  // ---- The loop.
  TrainResult result;
  result.rank = comm->rank();
  result.val_loss = NAN;
  const double elapsed_before = state.elapsed_s;
  const auto t_start = Clock::now();
  auto t_window = Clock::now();
  int64_t window_tokens = 0, window_steps = 0, bad_in_a_row = 0;
  double window_loss = 0, window_ce = 0, window_kd = 0, teacher_ms = NAN;
  reset_peak_memory(device);
  auto elapsed = [&] {
    return elapsed_before + std::chrono::duration<double>(Clock::now() - t_start).count();
  };
  const auto stat_opts = at::TensorOptions().dtype(at::kDouble).device(comm->device());
  const double accum = static_cast<double>(tc.grad_accum_steps);
  auto checkpoint = [&] {
    // Collective under ZeRO-1 (the moments are gathered); rank 0 writes.
    auto opt_state = dp ? dp->gather_optimizer_state(optimizer) : optimizer.state_tensors();
    if (!rank0) return;
    state.loader = loader.state();
    state.elapsed_s =
        elapsed_before + std::chrono::duration<double>(Clock::now() - t_start).count();
    state.cpu_rng = to_hex(at::detail::getDefaultCPUGenerator().get_state());
    auto dir = save_checkpoint(run_dir, model, cfg, opt_state, state, cfg.checkpoint.keep_last);
    log::info("checkpoint {}", dir.string());
  };
  auto run_eval = [&] {
    if (!val_ds) return;
    double v = evaluate(model, val_ds, cfg, device, precision, *comm);
    result.val_loss = v;
    if (!rank0) return;
    Json j = Json::object();
    j["type"] = "eval";
    j["step"] = state.step;
    j["tokens"] = state.tokens;
    j["val_loss"] = v;
    j["val_ppl"] = std::exp(v);
    j["elapsed_s"] = elapsed();
    metrics->write(j);
    log::info("eval step {}: val loss {}, perplexity {}", state.step, log::fixed(v, 4),
              log::fixed(std::exp(v), 2));
  };

  TrainStep step({model, &optimizer, comm.get(), dp.get(), teacher ? &*teacher : nullptr, &cfg.kd,
                  device, precision},
                 tc);
  if (rank0) log::info("training step: {} launch", launch_name(step.launch()));
  while (state.step < total_steps) {
    const double lr = learning_rate(cfg.schedule, cfg.optimizer.lr, state.step, total_steps);
    const bool timed = teacher && (state.step + 1) % cfg.log.every == 0;
    const StepResult r =
        step.run([&] { return loader.next().tokens; }, lr, state.step + 1, g_stop_requested, timed);
    if (timed) teacher_ms = step.teacher_ms();
    const bool stop_signal = r.stop;
    window_ce += r.ce;
    window_kd += r.kd;
    const double grad_norm = r.grad_norm;
    ++state.step;
    state.tokens += tokens_per_step;
    if (!r.applied) {
      ++bad_in_a_row;
      log::warn(
          "step {}: non-finite loss or gradient (loss {}, grad norm {}); step skipped ({} in a "
          "row)",
          state.step, r.loss, grad_norm, bad_in_a_row);
      if (bad_in_a_row >= tc.max_bad_steps) {
        auto last = list_checkpoints(run_dir);
        fail_runtime("training stopped: " + std::to_string(bad_in_a_row) +
                     " non-finite steps in a row at step " + std::to_string(state.step) +
                     "; last good checkpoint: " +
                     (last.empty() ? std::string("none") : last.back().dir.string()) +
                     ". Lower optimizer.lr, raise schedule.warmup_steps or check the data.");
      }
    } else {
      bad_in_a_row = 0;
      window_loss += r.loss;
      result.final_loss = r.loss;
    }
    window_tokens += tokens_per_step;
    ++window_steps;
    if (fault_at("exit_at", state.step)) {  // test hook: this rank dies
      std::fprintf(stderr, "deepthin: fault injection: killing rank %d at step %lld\n",
                   comm->rank(), static_cast<long long>(state.step));
      std::fflush(stderr);
      kill(getpid(), SIGKILL);
    }
    if (fault_at("hang_at", state.step)) {  // test hook: this rank stalls
      std::fprintf(stderr, "deepthin: fault injection: rank %d stalls at step %lld\n", comm->rank(),
                   static_cast<long long>(state.step));
      std::fflush(stderr);
      for (;;) pause();
    }

    const bool last_step = state.step == total_steps;
    if (state.step % cfg.log.every == 0 || last_step) {
      synchronize(device);
      const double dt = std::chrono::duration<double>(Clock::now() - t_window).count();
      const double tps = static_cast<double>(window_tokens) / dt;
      const double mfu =
          peak_tflops > 0 ? flops_per_token * tps / (peak_tflops * 1e12 * world) : NAN;
      auto mem_t = at::full({1}, peak_memory_gb(device), stat_opts);
      comm->allreduce(mem_t, c10d::ReduceOp::MAX, "memory all-reduce");
      const double mem = mem_t.item<double>();
      const double eta =
          static_cast<double>(total_steps - state.step) * dt / static_cast<double>(window_steps);
      if (rank0) {
        Json j = Json::object();
        j["type"] = "train";
        j["step"] = state.step;
        j["tokens"] = state.tokens;
        j["loss"] = window_loss / static_cast<double>(std::max<int64_t>(1, window_steps));
        j["lr"] = lr;
        j["grad_norm"] = grad_norm;
        j["tokens_per_s"] = tps;
        if (world > 1) j["tokens_per_s_per_device"] = tps / world;
        if (std::isfinite(mfu)) j["mfu"] = mfu;
        j["peak_mem_gb"] = mem;
        j["step_time_s"] = dt / static_cast<double>(window_steps);
        j["elapsed_s"] = elapsed();
        if (teacher) {
          j["ce"] = window_ce / static_cast<double>(window_steps);
          j["kd"] = window_kd / static_cast<double>(window_steps);
          if (std::isfinite(teacher_ms)) {
            j["teacher_ms"] = teacher_ms;  // one micro-batch's teacher forward
            j["teacher_share"] = teacher_ms * accum / 1000.0 / (dt / window_steps);
          }
        }
        metrics->write(j);
        log::info(
            "step {}/{} | loss {} | lr {} | gnorm {} | {} tok/s | MFU {} | mem {} GB | ETA {}",
            state.step, total_steps, log::fixed(j["loss"].as_double(), 4), log::sci(lr, 2),
            log::fixed(grad_norm, 3), human_count(tps),
            std::isfinite(mfu) ? log::fixed(100 * mfu, 1) + "%" : std::string("n/a"),
            log::fixed(mem, 2), format_duration(eta));
        if (teacher)
          log::info(
              "  distillation: CE {} | KD {} | teacher forward {} ms per micro-batch ({}% of "
              "the step)",
              log::fixed(j["ce"].as_double(), 4), log::fixed(j["kd"].as_double(), 4),
              log::fixed(teacher_ms, 1),
              log::fixed(100 * teacher_ms * accum / 1000.0 / (dt / window_steps), 1));
      }
      t_window = Clock::now();
      window_tokens = window_steps = 0;
      window_loss = window_ce = window_kd = 0;
    }
    // Evaluation and checkpoints pause the throughput window: tokens/s measures training steps.
    const auto t_pause = Clock::now();
    if (cfg.eval.every > 0 && state.step % cfg.eval.every == 0 && !last_step) run_eval();
    const bool stop_now = stop_signal || (opts.until_step > 0 && state.step >= opts.until_step);
    if ((cfg.checkpoint.every > 0 && state.step % cfg.checkpoint.every == 0) ||
        (last_step && cfg.checkpoint.at_end) || stop_now)
      checkpoint();
    t_window += Clock::now() - t_pause;
    if (stop_now && !last_step) {
      result.interrupted = true;
      log::info("stopping at step {} ({}); continue with --resume {}", state.step,
                stop_signal ? "signal" : "--until-step", run_dir.string());
      break;
    }
  }
  if (!result.interrupted) run_eval();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  result.steps = state.step;
  result.tokens = state.tokens;
  log::flush();
  return result;
}

}  // namespace deepthin::train
