#include "sweep/runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <thread>

#include "util/error.h"
#include "util/fs.h"
#include "util/json_io.h"
#include "util/log.h"
#include "util/net.h"
#include "util/strings.h"

namespace deepthin::sweep {

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_sweep_signal(int) {
  g_stop = true;
}

std::string duration(double s) {
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600),
                  static_cast<int>(s / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  return buf;
}

Json read_status(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir / "sweep_status.json", ec)) return Json::object();
  try {
    return json::parse(read_file(dir / "sweep_status.json"));
  } catch (const std::exception&) {
    return Json::object();
  }
}

// The last validation loss in a run's metrics, or NaN.
double last_val_loss(const fs::path& dir) {
  std::ifstream in(dir / "metrics.jsonl");
  std::string line;
  double v = NAN;
  while (std::getline(in, line)) {
    if (line.find("\"eval\"") == std::string::npos) continue;
    try {
      v = json::as_double(json::at(json::parse(line), "val_loss", "metrics"));
    } catch (const std::exception&) {
    }
  }
  return v;
}

// The last line of a log that looks like an error, for the failure summary.
std::string last_error(const fs::path& log) {
  std::ifstream in(log);
  std::string line, err, last;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    last = line;
    if (line.find("error") != std::string::npos || line.find("Error") != std::string::npos)
      err = line;
  }
  return err.empty() ? last : err;
}

struct Active {
  size_t run = 0;
  size_t slot = 0;
  std::vector<pid_t> pids;
  int exit_code = 0;
  bool signalled = false;
  std::chrono::steady_clock::time_point start;
};

pid_t spawn(const fs::path& binary, const std::vector<std::string>& args,
            const std::vector<std::pair<std::string, std::string>>& env, const fs::path& log) {
  pid_t pid = ::fork();
  if (pid < 0) fail_runtime(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    ::setpgid(0, 0);  // its own group: a Ctrl-C reaches the sweep, which passes it on once
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    std::vector<char*> argv;
    std::string b = binary.string();
    argv.push_back(b.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(b.c_str(), argv.data());
    std::fprintf(stderr, "deepthin sweep: cannot execute %s: %s\n", b.c_str(),
                 std::strerror(errno));
    ::_exit(127);
  }
  return pid;
}

}  // namespace

fs::path run_dir(const SweepOptions& o, const Experiment& e, const RunSpec& r) {
  return o.runs_root / e.name / r.name;
}

fs::path teacher_cache_dir(const SweepOptions& o, const Experiment& e) {
  return o.runs_root / e.name / (e.teacher_run + "_topk" + std::to_string(e.teacher_cache_k));
}

config::Config run_config(const SweepOptions& o, const Experiment& e, const RunSpec& r) {
  config::Config c = r.config;
  if (!r.is_teacher && !e.teacher_run.empty() && c.kd.teacher.empty())
    c.kd.teacher = (o.runs_root / e.name / e.teacher_run).string();
  if (!r.is_teacher && e.teacher_cache_k > 0 && c.kd.cache.empty() && c.kd.ratio > 0)
    c.kd.cache = teacher_cache_dir(o, e).string();
  c.run.root = (o.runs_root / e.name).string();
  c.run.name = r.name;
  return c;
}

void write_manifest(const SweepOptions& o, const Experiment& e) {
  Json j = Json::object();
  j["experiment"] = e.name;
  j["file"] = e.file.string();
  j["description"] = e.description;
  j["budget"] = e.has_budget;
  j["teacher"] = e.teacher_run.empty() ? e.teacher_path : e.teacher_run;
  Json axes = Json::array();
  for (const auto& k : e.axis_keys) axes.push_back(k);
  j["axis_keys"] = axes;
  Json runs = Json::array();
  for (const auto& r : e.runs) {
    Json x = Json::object();
    x["name"] = r.name;
    x["point"] = r.point;
    x["seed"] = r.seed;
    x["teacher"] = r.is_teacher;
    Json ax = Json::object();
    for (const auto& [k, v] : r.axes) ax[k] = v;
    x["axes"] = ax;
    Json ov = Json::object();
    for (const auto& [k, v] : r.overrides) ov[k] = v;
    x["overrides"] = ov;
    runs.push_back(x);
  }
  j["runs"] = runs;
  fs::create_directories(o.runs_root / e.name);
  write_file_atomic(o.runs_root / e.name / "sweep.json", json::dump(j, 2) + "\n");
}

namespace {

// "0,1,2" for a list of GPUs.
std::string gpu_list(const std::vector<int>& gpus) {
  std::vector<std::string> v;
  for (int g : gpus) v.push_back(std::to_string(g));
  return join(v, ",");
}

// A sweep under way: its slots, the runs still to start, those running, and the counts so far.
struct SweepState {
  SweepState(const Experiment& experiment, const SweepOptions& options)
      : e(experiment), o(options) {}

  const Experiment& e;
  const SweepOptions& o;
  fs::path binary;
  std::vector<std::vector<int>> slots;  // the GPUs of each slot (none: a CPU slot)
  int world = 1;
  unsigned cores = 1;
  SweepSummary sum;
  std::deque<size_t> todo;
  size_t to_run = 0, finished = 0, started = 0;
  size_t teacher_index = SIZE_MAX;
  bool hold = false;  // students wait for a teacher the sweep trains
  std::vector<bool> busy;
  std::map<pid_t, size_t> owner;  // pid -> index in active
  std::vector<Active> active;
  bool stop_sent = false;
};

void check_options(const SweepOptions& o) {
  if (o.parallel < 1) fail_input("--parallel must be at least 1");
  if (o.gpus_per_run < 1) fail_input("--gpus-per-run must be at least 1");
  if (!o.gpus.empty() && o.gpus.size() % o.gpus_per_run != 0)
    fail_input("--gpus lists " + std::to_string(o.gpus.size()) + " GPUs, not a multiple of " +
               "--gpus-per-run " + std::to_string(o.gpus_per_run));
}

// Slots: GPU groups × parallel, or `parallel` CPU slots.
std::vector<std::vector<int>> make_slots(const SweepOptions& o) {
  std::vector<std::vector<int>> slots;
  if (o.gpus.empty()) {
    for (int i = 0; i < o.parallel; ++i) slots.push_back({});
  } else {
    for (int p = 0; p < o.parallel; ++p)
      for (size_t g = 0; g < o.gpus.size(); g += o.gpus_per_run)
        slots.emplace_back(o.gpus.begin() + g, o.gpus.begin() + g + o.gpus_per_run);
  }
  return slots;
}

// Which runs to do; the rest are done already (or filtered out). Each run to do gets its
// run.yaml; an existing run with another config is an error.
void plan_runs(SweepState& st) {
  const auto& e = st.e;
  const auto& o = st.o;
  for (size_t i = 0; i < e.runs.size(); ++i) {
    const auto& r = e.runs[i];
    if (!o.only.empty() && r.name.find(o.only) == std::string::npos) continue;
    const fs::path dir = run_dir(o, e, r);
    const std::string yaml = config::to_yaml(run_config(o, e, r));
    std::error_code ec;
    if (fs::exists(dir / "run.yaml", ec) && read_file(dir / "run.yaml") != yaml)
      fail_input("run " + dir.string() + " exists with a different config (the experiment " +
                 "changed?); delete the run directory or rename the experiment");
    if (json::find(read_status(dir), "status") &&
        json::as_string(json::at(read_status(dir), "status", "status")) == "done") {
      ++st.sum.skipped;
      continue;
    }
    fs::create_directories(dir);
    write_file_atomic(dir / "run.yaml", yaml);
    st.todo.push_back(i);
  }
  st.to_run = st.todo.size();
  log::info("sweep {}: {} runs, {} done already, {} to run on {}", e.name, e.runs.size(),
            st.sum.skipped, st.todo.size(),
            o.gpus.empty()
                ? std::to_string(st.slots.size()) + " CPU slot(s)"
                : std::to_string(st.slots.size()) + " slot(s) over GPUs " + gpu_list(o.gpus));
}

// Students wait for a teacher the sweep trains: it goes first, and holds the queue.
void teacher_first(SweepState& st) {
  for (size_t i = 0; i < st.e.runs.size(); ++i)
    if (st.e.runs[i].is_teacher) st.teacher_index = i;
  auto& todo = st.todo;
  st.hold = std::find(todo.begin(), todo.end(), st.teacher_index) != todo.end();
  if (st.hold) {
    todo.erase(std::find(todo.begin(), todo.end(), st.teacher_index));
    todo.push_front(st.teacher_index);
  }
}

// The environment of a slot's processes: its GPUs, or a share of the CPU's threads.
std::vector<std::pair<std::string, std::string>> slot_env(const SweepState& st, size_t s) {
  std::vector<std::pair<std::string, std::string>> env;
  if (!st.slots[s].empty()) {
    env.emplace_back("CUDA_VISIBLE_DEVICES", gpu_list(st.slots[s]));
  } else if (!std::getenv("OMP_NUM_THREADS")) {
    env.emplace_back("OMP_NUM_THREADS",
                     std::to_string(std::max<unsigned>(1, st.cores / st.slots.size())));
  }
  return env;
}

// Starts the next run on slot s: one process, or one per rank on a free port.
void start_run(SweepState& st, size_t s) {
  const size_t i = st.todo.front();
  st.todo.pop_front();
  const auto& r = st.e.runs[i];
  const fs::path dir = run_dir(st.o, st.e, r);
  Active a;
  a.run = i;
  a.slot = s;
  a.start = std::chrono::steady_clock::now();
  const auto env = slot_env(st, s);
  const std::vector<std::string> args{"train", (dir / "run.yaml").string(), "--resume",
                                      dir.string()};
  if (st.world > 1) {
    const std::string port = std::to_string(free_tcp_port());
    for (int rank = 0; rank < st.world; ++rank) {
      auto renv = env;
      for (auto kv : std::vector<std::pair<std::string, std::string>>{
               {"RANK", std::to_string(rank)},
               {"WORLD_SIZE", std::to_string(st.world)},
               {"LOCAL_RANK", std::to_string(rank)},
               {"LOCAL_WORLD_SIZE", std::to_string(st.world)},
               {"MASTER_ADDR", "127.0.0.1"},
               {"MASTER_PORT", port}})
        renv.push_back(kv);
      a.pids.push_back(spawn(st.binary, args, renv, dir / "sweep.log"));
    }
  } else {
    a.pids.push_back(spawn(st.binary, args, env, dir / "sweep.log"));
  }
  st.busy[s] = true;
  ++st.started;
  log::info("[{}/{}] {}: started{} (log: {})", st.started, st.to_run, r.name,
            st.slots[s].empty() ? std::string(" on the CPU") : " on GPU " + gpu_list(st.slots[s]),
            (dir / "sweep.log").string());
  st.active.push_back(a);
  for (pid_t p : st.active.back().pids) st.owner[p] = st.active.size() - 1;
}

// Fill free slots (none while the teacher is still training).
void fill_slots(SweepState& st) {
  for (size_t s = 0; s < st.slots.size() && !st.todo.empty() && !g_stop; ++s) {
    if (st.busy[s]) continue;
    if (st.hold && st.todo.front() != st.teacher_index) break;  // the teacher is still training
    start_run(st, s);
  }
}

// A finished run's sweep_status.json (status, exit code, wall time over attempts); its status.
std::string record_status(const Active& a, const fs::path& dir, double wall) {
  Json st = read_status(dir);
  if (!st.is_object()) st = Json::object();
  const double before =
      json::find(st, "wall_s") ? json::as_double(json::at(st, "wall_s", "s")) : 0.0;
  const int64_t attempts =
      json::find(st, "attempts") ? json::as_int(json::at(st, "attempts", "s")) : 0;
  std::string status = a.exit_code == 0 ? (a.signalled ? "interrupted" : "done") : "failed";
  if (a.signalled && a.exit_code != 0) status = "interrupted";
  st["status"] = status;
  st["exit_code"] = a.exit_code;
  st["wall_s"] = before + wall;
  st["attempts"] = attempts + 1;
  write_file_atomic(dir / "sweep_status.json", json::dump(st, 2) + "\n");
  return status;
}

// With the teacher's cache_k: its top-k cache, written once (kept when a sweep resumes) over the
// data of the first student still to run, on the teacher's slot. "done" or "failed".
std::string write_teacher_cache(const SweepState& st, const Active& a) {
  const fs::path cache = teacher_cache_dir(st.o, st.e);
  std::error_code ec;
  if (st.e.teacher_cache_k <= 0 || st.todo.empty() || fs::exists(cache / "kd_cache.json", ec))
    return "done";
  const fs::path student = run_dir(st.o, st.e, st.e.runs[st.todo.front()]) / "run.yaml";
  const fs::path log_file = st.o.runs_root / st.e.name / (cache.filename().string() + ".log");
  log::info("writing the teacher's top-{} cache {} (log: {})", st.e.teacher_cache_k, cache.string(),
            log_file.string());
  std::vector<std::pair<std::string, std::string>> env;
  if (!st.slots[a.slot].empty())
    env.emplace_back("CUDA_VISIBLE_DEVICES", gpu_list(st.slots[a.slot]));
  const pid_t pid = spawn(st.binary,
                          {"kd", "cache", student.string(), "--k",
                           std::to_string(st.e.teacher_cache_k), "--out", cache.string()},
                          env, log_file);
  int est = 0;
  while (::waitpid(pid, &est, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(est) && WEXITSTATUS(est) == 0) return "done";
  log::warn("the teacher's top-k cache could not be written (see {})", log_file.string());
  return "failed";
}

// The teacher finished: the students may start, unless it did not finish (or its cache could not
// be written), when none does.
void release_students(SweepState& st, const Active& a, const RunSpec& r, std::string status) {
  st.hold = false;
  if (status == "done") status = write_teacher_cache(st, a);
  if (status == "done") return;
  log::warn("the teacher run {} did not finish ({}): its {} students are not started", r.name,
            status, st.todo.size());
  if (status == "failed")
    st.sum.failed += static_cast<int>(st.todo.size());
  else
    st.sum.interrupted += static_cast<int>(st.todo.size());
  st.todo.clear();
}

// Zero-shot evaluation of the finished run, on its own GPUs, into <run>/eval.json.
void evaluate_run(const SweepState& st, const Active& a, const RunSpec& r, const fs::path& dir) {
  std::vector<std::pair<std::string, std::string>> env;
  if (!st.slots[a.slot].empty())
    env.emplace_back("CUDA_VISIBLE_DEVICES", gpu_list(st.slots[a.slot]));
  const pid_t pid = spawn(st.binary,
                          {"eval", dir.string(), "--tasks", join(st.e.eval_tasks, ","), "--data",
                           st.e.eval_data.string()},
                          env, dir / "sweep.log");
  int est = 0;
  while (::waitpid(pid, &est, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(est) || WEXITSTATUS(est) != 0)
    log::warn("{}: zero-shot evaluation failed (see {})", r.name, (dir / "sweep.log").string());
}

// A run whose processes have all exited: its status recorded, evaluated if done, counted.
void finish(SweepState& st, Active& a) {
  const auto& r = st.e.runs[a.run];
  const fs::path dir = run_dir(st.o, st.e, r);
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - a.start).count();
  const std::string status = record_status(a, dir, wall);
  st.busy[a.slot] = false;
  if (a.run == st.teacher_index) release_students(st, a, r, status);
  if (status == "done" && !st.e.eval_tasks.empty() && !g_stop) evaluate_run(st, a, r, dir);
  if (status == "done") {
    ++st.sum.done;
    const double v = last_val_loss(dir);
    log::info("[{}/{}] {}: done in {}{}", ++st.finished, st.to_run, r.name, duration(wall),
              std::isfinite(v) ? ", val loss " + log::fixed(v, 4) : std::string());
  } else if (status == "failed") {
    ++st.sum.failed;
    log::warn("[{}/{}] {}: FAILED (exit {}) after {}: {} (log: {})", ++st.finished, st.to_run,
              r.name, a.exit_code, duration(wall), last_error(dir / "sweep.log"),
              (dir / "sweep.log").string());
  } else {
    ++st.sum.interrupted;
    log::info("{}: interrupted after {}; the next sweep resumes it", r.name, duration(wall));
  }
}

// Ctrl-C or SIGTERM: every running run is asked, once, to checkpoint and stop.
void stop_runs(SweepState& st) {
  st.stop_sent = true;
  log::info("stopping the sweep: asking {} run(s) to checkpoint and stop", st.active.size());
  for (auto& a : st.active) {
    a.signalled = true;
    for (pid_t p : a.pids) ::kill(p, SIGTERM);
  }
}

// Waits for one process to exit; a run whose last process exited is finished and dropped.
void reap_one(SweepState& st) {
  int status = 0;
  pid_t pid = ::waitpid(-1, &status, 0);
  if (pid < 0) {
    if (errno == EINTR) return;
    fail_runtime(std::string("waitpid: ") + std::strerror(errno));
  }
  auto it = st.owner.find(pid);
  if (it == st.owner.end()) return;
  Active& a = st.active[it->second];
  st.owner.erase(it);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (code != 0 && a.exit_code == 0) {
    a.exit_code = code;
    // One rank of a multi-GPU run failed: stop its others.
    for (pid_t p : a.pids)
      if (p != pid && st.owner.count(p)) ::kill(p, SIGTERM);
  }
  a.pids.erase(std::find(a.pids.begin(), a.pids.end(), pid));
  if (a.pids.empty()) {
    finish(st, a);
    // Compact: rebuild the owner map for the remaining active runs.
    const size_t idx = &a - st.active.data();
    st.active.erase(st.active.begin() + static_cast<std::ptrdiff_t>(idx));
    st.owner.clear();
    for (size_t k = 0; k < st.active.size(); ++k)
      for (pid_t p : st.active[k].pids) st.owner[p] = k;
  }
}

}  // namespace

SweepSummary run_sweep(const Experiment& e, const SweepOptions& o) {
  check_options(o);
  SweepState st(e, o);
  st.binary = o.binary.empty() ? fs::read_symlink("/proc/self/exe") : o.binary;
  write_manifest(o, e);
  st.slots = make_slots(o);
  st.world = o.gpus.empty() ? 1 : o.gpus_per_run;
  st.cores = std::max(1u, std::thread::hardware_concurrency());
  plan_runs(st);

  g_stop = false;
  struct sigaction sa {
  }, old_int{}, old_term{};
  sa.sa_handler = on_sweep_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  teacher_first(st);
  st.busy.assign(st.slots.size(), false);
  while (!st.todo.empty() || !st.active.empty()) {
    fill_slots(st);
    if (st.active.empty()) break;
    if (g_stop && !st.stop_sent) stop_runs(st);
    reap_one(st);
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (g_stop) st.sum.interrupted += static_cast<int>(st.todo.size());
  log::info("sweep {}: {} done, {} skipped (done before), {} failed, {} interrupted", e.name,
            st.sum.done, st.sum.skipped, st.sum.failed, st.sum.interrupted);
  return st.sum;
}

}  // namespace deepthin::sweep
