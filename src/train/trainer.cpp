// The training loop, as the recipe reads: set up the run (train/run.h), then step (train/step.h),
// log the metrics window, evaluate and checkpoint until the budget is spent or a stop is asked for.
// The parts it calls own the detail; this file owns the loop and the order of things in a step.
#include "train/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>

#include <signal.h>
#include <unistd.h>

#include "model/param_count.h"
#include "train/device_info.h"
#include "train/evaluation.h"
#include "train/run.h"
#include "train/schedule.h"
#include "train/step.h"
#include "util/error.h"
#include "util/fault.h"
#include "util/log.h"
#include "util/paths.h"
#include "util/strings.h"

namespace deepthin::train {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::atomic<bool> g_stop_requested{false};

extern "C" void on_stop_signal(int) {
  g_stop_requested = true;
}

// While alive, SIGINT and SIGTERM ask the loop to stop at the next step with a checkpoint.
struct StopSignals {
  StopSignals() {
    g_stop_requested = false;
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
  }
  ~StopSignals() {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
  }
};

// Wall time of the run, resumed runs included.
struct RunClock {
  double before = 0;
  Clock::time_point start = Clock::now();
  double operator()() const {
    return before + std::chrono::duration<double>(Clock::now() - start).count();
  }
};

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

// Collective under ZeRO-1 (the moments are gathered); rank 0 writes.
void save_run_checkpoint(Run& r, const RunClock& elapsed) {
  const AdamW& opt = *r.optimizer;
  auto opt_state = r.dp && r.dp->zero1()
                       ? r.dp->gather_moments(opt.exp_avg_flat(), opt.exp_avg_sq_flat())
                       : opt.state_tensors();
  if (!r.rank0()) return;
  r.state.loader = r.loader->state();
  r.state.elapsed_s = elapsed();
  capture_cpu_rng(r.state);
  synchronize(
      r.device);  // the steps still queued on the GPU are training time, not the checkpoint's
  const auto t = Clock::now();
  CheckpointWriter& w = *r.checkpoints;
  const double previous = w.wait();  // the staging memory is free again (a failed write rethrown)
  const auto t_snap = Clock::now();
  auto snap = snapshot_checkpoint(r.model, *r.cfg, opt_state, r.state, &w.staging());
  const double snapshot = seconds_since(t_snap);
  w.submit(std::move(snap));
  const double waited = seconds_since(t);
  r.goodput.checkpoint_s += waited;
  if (w.async())
    log::info("checkpoint step {}: training waited {} s (snapshot {} s, previous write {} s)",
              r.state.step, log::fixed(waited, 3), log::fixed(snapshot, 3),
              log::fixed(previous, 3));
  ++r.goodput.checkpoints;
}

// Validation loss: of the one source, or of each source with validation data and their
// weight-averaged mix.
void evaluate_run(Run& r, TrainResult& result, const RunClock& elapsed) {
  Json per_source = Json::object();
  double v = 0, weights = 0;
  for (const auto& s : r.sources) {
    if (!s.val) continue;
    const double l = validation_loss(r.model, s.val, *r.cfg, r.device, r.precision, *r.comm);
    v += s.weight * l;
    weights += s.weight;
    if (!s.name.empty()) per_source[s.name] = l;
  }
  if (weights == 0) return;
  v /= weights;
  result.val_loss = v;
  if (!r.rank0()) return;
  Json j = Json::object();
  j["type"] = "eval";
  j["step"] = r.state.step;
  j["tokens"] = r.state.tokens;
  j["val_loss"] = v;
  for (const auto& [name, l] : per_source.items()) {
    j["val_loss/" + name] = l;
    log::info("eval step {}: source {}: val loss {}", r.state.step, name,
              log::fixed(l.get<double>(), 4));
  }
  j["val_ppl"] = std::exp(v);
  j["elapsed_s"] = elapsed();
  r.metrics->write(j);
  log::info("eval step {}: val loss {}, perplexity {}", r.state.step, log::fixed(v, 4),
            log::fixed(std::exp(v), 2));
}

// Counts the step; a non-finite one is warned about, and train.max_bad_steps of them in a row end
// the run naming the last good checkpoint.
void account_step(Run& r, const StepResult& s, int64_t& bad_in_a_row, TrainResult& result) {
  ++r.state.step;
  r.state.tokens += r.tokens_per_step;
  if (s.applied) {
    bad_in_a_row = 0;
    result.final_loss = s.loss;
    return;
  }
  ++bad_in_a_row;
  log::warn(
      "step {}: non-finite loss or gradient (loss {}, grad norm {}); step skipped ({} in a "
      "row)",
      r.state.step, s.loss, s.grad_norm, bad_in_a_row);
  if (bad_in_a_row >= r.cfg->train.max_bad_steps) {
    // The newest checkpoint may still be written in the background: finish it before naming one.
    if (r.checkpoints) {
      try {
        r.checkpoints->wait();
      } catch (const std::exception& e) {
        log::warn("the checkpoint being written failed: {}", e.what());
      }
    }
    auto last = list_checkpoints(r.dir);
    fail_runtime("training stopped: " + std::to_string(bad_in_a_row) +
                 " non-finite steps in a row at step " + std::to_string(r.state.step) +
                 "; last good checkpoint: " +
                 (last.empty() ? std::string("none") : last.back().dir.string()) +
                 ". Lower optimizer.lr, raise schedule.warmup_steps or check the data.");
  }
}

// Test hooks (DEEPTHIN_FAULT): this rank dies, or stalls, after the given step.
void fault_hooks(const Run& r) {
  if (fault_at("exit_at", r.state.step)) {
    std::fprintf(stderr, "deepthin: fault injection: killing rank %d at step %lld\n",
                 r.comm->rank(), static_cast<long long>(r.state.step));
    std::fflush(stderr);
    kill(getpid(), SIGKILL);
  }
  if (fault_at("hang_at", r.state.step)) {
    std::fprintf(stderr, "deepthin: fault injection: rank %d stalls at step %lld\n", r.comm->rank(),
                 static_cast<long long>(r.state.step));
    std::fflush(stderr);
    for (;;) pause();
  }
}

struct StepInfo {
  double lr = 0, grad_norm = NAN, teacher_ms = NAN;
  double flops_per_token = 0, peak_tflops = 0;  // fixed for the run: for MFU
};

// Tokens read from each source so far, all ranks: the loader's per-source positions.
std::vector<std::pair<std::string, int64_t>> tokens_by_source(const Run& r) {
  std::vector<std::pair<std::string, int64_t>> out;
  const auto st = r.loader->state();
  for (size_t s = 0; s < st.sources.size(); ++s)
    out.emplace_back(st.sources[s].name, st.sources[s].position * r.cfg->train.seq_len);
  return out;
}

// The micro-batch's tokens; the log says when a source of the mixture begins another epoch.
StepBatch next_tokens(Run& r) {
  const auto t = Clock::now();
  data::Batch b = r.loader->next();
  StepBatch out(b.tokens);
  if (r.kd_cache) {
    auto rows = r.kd_cache->rows(b.sources, b.window_ids);
    out.teacher_ids = rows.ids;
    out.teacher_logp = rows.logp;
  }
  r.goodput.data_wait_s += seconds_since(t);
  if (r.rank0())
    for (const auto& [s, epoch] : b.epochs_begun)
      log::info("data: source {} ran out and begins epoch {} (its windows reshuffled)",
                r.sources[s].name.empty() ? std::string("data.path") : r.sources[s].name,
                epoch + 1);
  return out;
}

// One log line and one metrics.jsonl record for the window, then a fresh window.
void log_window(Run& r, MetricsWindow& w, const StepInfo& info, const RunClock& elapsed) {
  const config::Config& cfg = *r.cfg;
  synchronize(r.device);
  const double dt = w.seconds(), step_s = dt / static_cast<double>(w.steps());
  const double tps = static_cast<double>(w.tokens()) / dt;
  const double mfu = info.peak_tflops > 0
                         ? info.flops_per_token * tps / (info.peak_tflops * 1e12 * r.world())
                         : NAN;
  auto mem_t = at::full({1}, peak_memory_gb(r.device),
                        at::TensorOptions().dtype(at::kDouble).device(r.comm->device()));
  r.comm->allreduce(mem_t, c10d::ReduceOp::MAX, "memory all-reduce");
  const double mem = mem_t.item<double>();
  const double eta = static_cast<double>(r.total_steps - r.state.step) * step_s;
  const double teacher_share = info.teacher_ms * cfg.train.grad_accum_steps / 1000.0 / step_s;
  if (r.rank0()) {
    Json j = Json::object();
    j["type"] = "train";
    j["step"] = r.state.step;
    j["tokens"] = r.state.tokens;
    j["loss"] = w.loss();
    j["lr"] = info.lr;
    j["grad_norm"] = info.grad_norm;
    j["tokens_per_s"] = tps;
    if (r.world() > 1) j["tokens_per_s_per_device"] = tps / r.world();
    if (std::isfinite(mfu)) j["mfu"] = mfu;
    if (r.sources.size() > 1)
      for (const auto& [name, tokens] : tokens_by_source(r)) j["tokens/" + name] = tokens;
    j["peak_mem_gb"] = mem;
    j["step_time_s"] = step_s;
    j["elapsed_s"] = elapsed();
    if (r.distilling()) {
      j["ce"] = w.ce();
      j["kd"] = w.kd();
      if (std::isfinite(info.teacher_ms)) {
        j["teacher_ms"] = info.teacher_ms;  // one micro-batch's teacher forward
        j["teacher_share"] = teacher_share;
      }
    }
    r.metrics->write(j);
    log::info("step {}/{} | loss {} | lr {} | gnorm {} | {} tok/s | MFU {} | mem {} GB | ETA {}",
              r.state.step, r.total_steps, log::fixed(w.loss(), 4), log::sci(info.lr, 2),
              log::fixed(info.grad_norm, 3), human_count(tps),
              std::isfinite(mfu) ? log::fixed(100 * mfu, 1) + "%" : std::string("n/a"),
              log::fixed(mem, 2), format_duration(eta));
    if (r.kd_cache)
      log::info("  distillation: CE {} | KD {} (from the top-k cache)", log::fixed(w.ce(), 4),
                log::fixed(w.kd(), 4));
    if (r.teacher)
      log::info(
          "  distillation: CE {} | KD {} | teacher forward {} ms per micro-batch ({}% of "
          "the step)",
          log::fixed(w.ce(), 4), log::fixed(w.kd(), 4), log::fixed(info.teacher_ms, 1),
          log::fixed(100 * teacher_share, 1));
  }
  w.reset();
}

// eval.tasks on the live model (rank 0; the other ranks wait at their next collective): the
// accuracies into metrics.jsonl and TensorBoard, and the log.
void evaluate_tasks(Run& r, const TrainOptions& opts, const RunClock& elapsed) {
  if (!opts.evaluate_tasks || !r.rank0()) return;
  const Json scores = opts.evaluate_tasks(r.model);
  Json j = Json::object();
  j["type"] = "tasks";
  j["step"] = r.state.step;
  j["tokens"] = r.state.tokens;
  std::string line;
  for (const auto& [task, s] : scores.items()) {
    j["acc/" + task] = s["acc"];
    j["acc_norm/" + task] = s["acc_norm"];
    line += " | " + task + " " + log::fixed(s["acc_norm"].get<double>(), 4);
  }
  j["elapsed_s"] = elapsed();
  r.metrics->write(j);
  log::info("tasks step {} (acc_norm){}", r.state.step, line);
}

// Validation, zero-shot tasks and checkpoints due after this step; their time is counted apart.
void between_steps(Run& r, const TrainOptions& opts, TrainResult& result, const RunClock& elapsed,
                   bool last_step, bool stop_now) {
  const config::Config& cfg = *r.cfg;
  const int64_t step = r.state.step;
  const auto t = Clock::now();
  if (cfg.eval.every > 0 && step % cfg.eval.every == 0 && !last_step)
    evaluate_run(r, result, elapsed);
  if (cfg.eval.tasks_every > 0 && step % cfg.eval.tasks_every == 0 && !last_step)
    evaluate_tasks(r, opts, elapsed);
  r.goodput.eval_s += seconds_since(t);
  if ((cfg.checkpoint.every > 0 && step % cfg.checkpoint.every == 0) ||
      (last_step && cfg.checkpoint.at_end) || stop_now)
    save_run_checkpoint(r, elapsed);
}

// The goodput line: the share of the wall clock since the first step that went to training
// steps, and where the rest went.
void report_goodput(Run& r, double loop_s, TrainResult& result) {
  const auto& g = r.goodput;
  const double lost = g.checkpoint_s + g.eval_s + g.data_wait_s + g.capture_s;
  result.goodput = loop_s > 0 ? (loop_s - lost) / loop_s : NAN;
  if (!r.rank0()) return;
  Json j = Json::object();
  j["type"] = "goodput";
  j["step"] = r.state.step;
  j["goodput"] = result.goodput;
  j["wall_s"] = loop_s;
  j["startup_s"] = g.startup_s;
  j["checkpoint_s"] = g.checkpoint_s;
  j["checkpoints"] = g.checkpoints;
  j["eval_s"] = g.eval_s;
  j["data_wait_s"] = g.data_wait_s;
  j["capture_s"] = g.capture_s;
  if (g.host_gaps > 0) j["host_gap_ms_per_step"] = 1e3 * g.host_gap_s / g.host_gaps;
  r.metrics->write(j);
  log::info(
      "goodput {}: {} s from the first step, of which checkpoints {} s ({} × {} s{}), "
      "evaluation {} s, waiting for data {} s",
      log::fixed(result.goodput, 4), log::fixed(loop_s, 1), log::fixed(g.checkpoint_s, 2),
      g.checkpoints,
      log::fixed(g.checkpoints ? g.checkpoint_s / static_cast<double>(g.checkpoints) : 0.0, 3),
      r.cfg->checkpoint.async ? ", written in the background" : "", log::fixed(g.eval_s, 2),
      log::fixed(g.data_wait_s, 2));
  log::info("goodput: start-up {} s before the first step; CUDA graph capture {} s",
            log::fixed(g.startup_s, 1), log::fixed(g.capture_s, 2));
  if (g.host_gaps > 0)
    log::info(
        "goodput: between a step's end and the next launch the host took {} ms a step (the "
        "device idles meanwhile; waiting for data included)",
        log::fixed(1e3 * g.host_gap_s / g.host_gaps, 3));
}

}  // namespace

fs::path run_directory(const config::Config& cfg, const fs::path& config_path) {
  std::string name = cfg.run.name.empty() ? config_path.stem().string() : cfg.run.name;
  check_path_component(name, cfg.run.name.empty()
                                 ? "the run name taken from the config file's name " +
                                       config_path.string() + " (set run.name)"
                                 : std::string("run.name"));
  return fs::path(cfg.run.root) / name;
}

TrainResult train(const config::Config& cfg, const TrainOptions& opts) {
  const auto t_enter = Clock::now();
  auto run = setup_run(cfg, opts);
  Run& r = *run;
  StopSignals signals;
  TrainResult result;
  result.rank = r.comm->rank();
  result.val_loss = NAN;
  const RunClock elapsed{r.state.elapsed_s};
  MetricsWindow window;
  StepInfo info;
  info.flops_per_token =
      static_cast<double>(model::training_flops_per_token(cfg.model, cfg.train.seq_len));
  info.peak_tflops =
      cfg.train.peak_tflops > 0 ? cfg.train.peak_tflops : known_peak_tflops(r.device);
  int64_t bad_in_a_row = 0;
  reset_peak_memory(r.device);
  TrainStep step(
      {r.model, r.optimizer.get(), r.comm.get(), r.dp.get(), r.teacher ? &*r.teacher : nullptr,
       &cfg.kd, r.device, r.precision, r.kd_cache != nullptr},
      cfg.train);
  if (r.rank0()) log::info("training step: {} launch", launch_name(step.launch()));
  r.goodput.startup_s = seconds_since(t_enter);
  const auto t_loop = Clock::now();
  while (r.state.step < r.total_steps) {
    if (r.checkpoints) r.checkpoints->check();  // a failed background write stops the run here
    info.lr = learning_rate(cfg.schedule, cfg.optimizer.lr, r.state.step, r.total_steps);
    const bool timed = r.teacher && (r.state.step + 1) % cfg.log.every == 0;
    const StepResult s = step.run([&] { return next_tokens(r); }, info.lr, r.state.step + 1,
                                  g_stop_requested, timed);
    if (timed) info.teacher_ms = step.teacher_ms();
    info.grad_norm = s.grad_norm;
    account_step(r, s, bad_in_a_row, result);
    window.add(r.tokens_per_step, s.applied, s.loss, s.ce, s.kd);
    fault_hooks(r);
    const bool last_step = r.state.step == r.total_steps;
    if (r.state.step % cfg.log.every == 0 || last_step) log_window(r, window, info, elapsed);
    // Evaluation and checkpoints pause the throughput window.
    const auto t_pause = Clock::now();
    const bool stop_now = s.stop || (opts.until_step > 0 && r.state.step >= opts.until_step);
    between_steps(r, opts, result, elapsed, last_step, stop_now);
    window.exclude(Clock::now() - t_pause);
    if (stop_now && !last_step) {
      result.interrupted = true;
      log::info("stopping at step {} ({}); continue with --resume {}", r.state.step,
                s.stop ? "signal" : "--until-step", r.dir.string());
      break;
    }
  }
  r.goodput.capture_s = step.capture_s();
  r.goodput.host_gap_s = step.host_gap_s();
  r.goodput.host_gaps = step.host_gaps();
  const auto t_end = Clock::now();
  if (!result.interrupted) {
    evaluate_run(r, result, elapsed);
    evaluate_tasks(r, opts, elapsed);
  }
  r.goodput.eval_s += seconds_since(t_end);
  // The last checkpoint was being written in the background meanwhile; the run ends when it is
  // complete.
  if (r.checkpoints) r.goodput.checkpoint_s += r.checkpoints->wait();
  report_goodput(r, seconds_since(t_loop), result);
  result.steps = r.state.step;
  result.tokens = r.state.tokens;
  result.tokens_by_source = tokens_by_source(r);
  log::flush();
  return result;
}

}  // namespace deepthin::train
