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

config::Config run_config(const SweepOptions& o, const Experiment& e, const RunSpec& r) {
  config::Config c = r.config;
  if (!r.is_teacher && !e.teacher_run.empty() && c.kd.teacher.empty())
    c.kd.teacher = (o.runs_root / e.name / e.teacher_run).string();
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

SweepSummary run_sweep(const Experiment& e, const SweepOptions& o) {
  if (o.parallel < 1) fail_input("--parallel must be at least 1");
  if (o.gpus_per_run < 1) fail_input("--gpus-per-run must be at least 1");
  if (!o.gpus.empty() && o.gpus.size() % o.gpus_per_run != 0)
    fail_input("--gpus lists " + std::to_string(o.gpus.size()) + " GPUs, not a multiple of " +
               "--gpus-per-run " + std::to_string(o.gpus_per_run));
  const fs::path binary = o.binary.empty() ? fs::read_symlink("/proc/self/exe") : o.binary;
  write_manifest(o, e);

  // Slots: GPU groups × parallel, or `parallel` CPU slots.
  std::vector<std::vector<int>> slots;
  if (o.gpus.empty()) {
    for (int i = 0; i < o.parallel; ++i) slots.push_back({});
  } else {
    for (int p = 0; p < o.parallel; ++p)
      for (size_t g = 0; g < o.gpus.size(); g += o.gpus_per_run)
        slots.emplace_back(o.gpus.begin() + g, o.gpus.begin() + g + o.gpus_per_run);
  }
  const int world = o.gpus.empty() ? 1 : o.gpus_per_run;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());

  // Which runs to do; the rest are done already (or filtered out).
  SweepSummary sum;
  std::deque<size_t> todo;
  const size_t total = e.runs.size();
  for (size_t i = 0; i < total; ++i) {
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
      ++sum.skipped;
      continue;
    }
    fs::create_directories(dir);
    write_file_atomic(dir / "run.yaml", yaml);
    todo.push_back(i);
  }
  const size_t to_run = todo.size();
  size_t finished = 0;
  log::info("sweep {}: {} runs, {} done already, {} to run on {}", e.name, total, sum.skipped,
            todo.size(),
            o.gpus.empty() ? std::to_string(slots.size()) + " CPU slot(s)"
                           : std::to_string(slots.size()) + " slot(s) over GPUs " +
                                 join(
                                     [&] {
                                       std::vector<std::string> v;
                                       for (int g : o.gpus) v.push_back(std::to_string(g));
                                       return v;
                                     }(),
                                     ","));

  g_stop = false;
  struct sigaction sa {
  }, old_int{}, old_term{};
  sa.sa_handler = on_sweep_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  // Students wait for a teacher the sweep trains.
  size_t teacher_index = SIZE_MAX;
  for (size_t i = 0; i < e.runs.size(); ++i)
    if (e.runs[i].is_teacher) teacher_index = i;
  bool hold = std::find(todo.begin(), todo.end(), teacher_index) != todo.end();
  if (hold) {
    todo.erase(std::find(todo.begin(), todo.end(), teacher_index));
    todo.push_front(teacher_index);
  }
  std::vector<bool> busy(slots.size(), false);
  std::map<pid_t, size_t> owner;  // pid -> index in active
  std::vector<Active> active;
  bool stop_sent = false;
  size_t started = 0;

  auto finish = [&](Active& a) {
    const auto& r = e.runs[a.run];
    const fs::path dir = run_dir(o, e, r);
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - a.start).count();
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
    busy[a.slot] = false;
    if (a.run == teacher_index) {
      hold = false;
      if (status != "done") {
        log::warn("the teacher run {} did not finish ({}): its {} students are not started", r.name,
                  status, todo.size());
        if (status == "failed")
          sum.failed += static_cast<int>(todo.size());
        else
          sum.interrupted += static_cast<int>(todo.size());
        todo.clear();
      }
    }
    if (status == "done" && !e.eval_tasks.empty() && !g_stop) {
      // Zero-shot evaluation of the finished run, on its own GPUs, into <run>/eval.json.
      std::vector<std::pair<std::string, std::string>> env;
      if (!slots[a.slot].empty()) {
        std::vector<std::string> ids;
        for (int g : slots[a.slot]) ids.push_back(std::to_string(g));
        env.emplace_back("CUDA_VISIBLE_DEVICES", join(ids, ","));
      }
      const pid_t pid = spawn(binary,
                              {"eval", dir.string(), "--tasks", join(e.eval_tasks, ","), "--data",
                               e.eval_data.string()},
                              env, dir / "sweep.log");
      int est = 0;
      while (::waitpid(pid, &est, 0) < 0 && errno == EINTR) {
      }
      if (!WIFEXITED(est) || WEXITSTATUS(est) != 0)
        log::warn("{}: zero-shot evaluation failed (see {})", r.name, (dir / "sweep.log").string());
    }
    if (status == "done") {
      ++sum.done;
      const double v = last_val_loss(dir);
      log::info("[{}/{}] {}: done in {}{}", ++finished, to_run, r.name, duration(wall),
                std::isfinite(v) ? ", val loss " + log::fixed(v, 4) : std::string());
    } else if (status == "failed") {
      ++sum.failed;
      log::warn("[{}/{}] {}: FAILED (exit {}) after {}: {} (log: {})", ++finished, to_run, r.name,
                a.exit_code, duration(wall), last_error(dir / "sweep.log"),
                (dir / "sweep.log").string());
    } else {
      ++sum.interrupted;
      log::info("{}: interrupted after {}; the next sweep resumes it", r.name, duration(wall));
    }
  };

  while (!todo.empty() || !active.empty()) {
    // Fill free slots.
    for (size_t s = 0; s < slots.size() && !todo.empty() && !g_stop; ++s) {
      if (busy[s]) continue;
      if (hold && todo.front() != teacher_index) break;  // the teacher is still training
      const size_t i = todo.front();
      todo.pop_front();
      const auto& r = e.runs[i];
      const fs::path dir = run_dir(o, e, r);
      Active a;
      a.run = i;
      a.slot = s;
      a.start = std::chrono::steady_clock::now();
      std::vector<std::pair<std::string, std::string>> env;
      if (!slots[s].empty()) {
        std::vector<std::string> ids;
        for (int g : slots[s]) ids.push_back(std::to_string(g));
        env.emplace_back("CUDA_VISIBLE_DEVICES", join(ids, ","));
      } else if (!std::getenv("OMP_NUM_THREADS")) {
        env.emplace_back("OMP_NUM_THREADS",
                         std::to_string(std::max<unsigned>(1, cores / slots.size())));
      }
      const std::vector<std::string> args{"train", (dir / "run.yaml").string(), "--resume",
                                          dir.string()};
      if (world > 1) {
        const std::string port = std::to_string(free_tcp_port());
        for (int rank = 0; rank < world; ++rank) {
          auto renv = env;
          for (auto kv : std::vector<std::pair<std::string, std::string>>{
                   {"RANK", std::to_string(rank)},
                   {"WORLD_SIZE", std::to_string(world)},
                   {"LOCAL_RANK", std::to_string(rank)},
                   {"LOCAL_WORLD_SIZE", std::to_string(world)},
                   {"MASTER_ADDR", "127.0.0.1"},
                   {"MASTER_PORT", port}})
            renv.push_back(kv);
          a.pids.push_back(spawn(binary, args, renv, dir / "sweep.log"));
        }
      } else {
        a.pids.push_back(spawn(binary, args, env, dir / "sweep.log"));
      }
      busy[s] = true;
      ++started;
      log::info(
          "[{}/{}] {}: started{} (log: {})", started, to_run, r.name,
          slots[s].empty() ? std::string(" on the CPU")
                           : " on GPU " +
                                 [&] {
                                   std::vector<std::string> v;
                                   for (int g : slots[s]) v.push_back(std::to_string(g));
                                   return join(v, ",");
                                 }(),
          (dir / "sweep.log").string());
      active.push_back(a);
      for (pid_t p : active.back().pids) owner[p] = active.size() - 1;
    }
    if (active.empty()) break;
    if (g_stop && !stop_sent) {
      stop_sent = true;
      log::info("stopping the sweep: asking {} run(s) to checkpoint and stop", active.size());
      for (auto& a : active) {
        a.signalled = true;
        for (pid_t p : a.pids) ::kill(p, SIGTERM);
      }
    }
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      fail_runtime(std::string("waitpid: ") + std::strerror(errno));
    }
    auto it = owner.find(pid);
    if (it == owner.end()) continue;
    Active& a = active[it->second];
    owner.erase(it);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0 && a.exit_code == 0) {
      a.exit_code = code;
      // One rank of a multi-GPU run failed: stop its others.
      for (pid_t p : a.pids)
        if (p != pid && owner.count(p)) ::kill(p, SIGTERM);
    }
    a.pids.erase(std::find(a.pids.begin(), a.pids.end(), pid));
    if (a.pids.empty()) {
      finish(a);
      // Compact: rebuild the owner map for the remaining active runs.
      const size_t idx = &a - active.data();
      active.erase(active.begin() + static_cast<std::ptrdiff_t>(idx));
      owner.clear();
      for (size_t k = 0; k < active.size(); ++k)
        for (pid_t p : active[k].pids) owner[p] = k;
    }
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (g_stop) sum.interrupted += static_cast<int>(todo.size());
  log::info("sweep {}: {} done, {} skipped (done before), {} failed, {} interrupted", e.name,
            sum.done, sum.skipped, sum.failed, sum.interrupted);
  return sum;
}

}  // namespace deepthin::sweep
