#include "sweep/report.h"

#include "config/eval_tasks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "config/config.h"
#include "model/param_count.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json_io.h"
#include "util/log.h"
#include "util/strings.h"

namespace deepthin::sweep {

namespace fs = std::filesystem;

namespace {

// Drawn by matplotlib (Agg, no display): the plotting library of the field's papers, already on
// every machine that runs PyTorch, and deterministic PNGs. Reads results.csv, sweep.json and each
// run's metrics.jsonl.
const char* kPlotScript = R"PY(
import csv, json, math, os, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

d = sys.argv[1]
rows = [r for r in csv.DictReader(open(os.path.join(d, "results.csv"))) if r["val_loss"] not in ("", "nan")]
if not rows:
    sys.exit("no finished runs with a validation loss to plot")
man = {}
if os.path.exists(os.path.join(d, "sweep.json")):
    man = json.load(open(os.path.join(d, "sweep.json")))
points = []
for r in rows:
    if r["point"] not in points:
        points.append(r["point"])
by_point = {p: [r for r in rows if r["point"] == p] for p in points}
name = man.get("experiment", os.path.basename(os.path.abspath(d)))

def num(s):
    try:
        return float(s)
    except ValueError:
        return None

axis_keys = man.get("axis_keys", [])
xs, xlabel, ticks = None, "", None
if man.get("budget"):
    xs = [float(by_point[p][0]["n_layers"]) for p in points]
    xlabel = "layers (width and FFN from the parameter budget)"
    ticks = [f'{by_point[p][0]["n_layers"]}L/{by_point[p][0]["dim"]}' for p in points]
elif len(axis_keys) == 1 and all(num(by_point[p][0].get("axis:" + axis_keys[0], "")) is not None for p in points):
    xs = [num(by_point[p][0]["axis:" + axis_keys[0]]) for p in points]
    xlabel = axis_keys[0]
fig, ax = plt.subplots(figsize=(7, 4.2))
pos = xs if xs is not None else list(range(len(points)))
means = [sum(float(r["val_loss"]) for r in by_point[p]) / len(by_point[p]) for p in points]
lo = [m - min(float(r["val_loss"]) for r in by_point[p]) for p, m in zip(points, means)]
hi = [max(float(r["val_loss"]) for r in by_point[p]) - m for p, m in zip(points, means)]
ax.errorbar(pos, means, yerr=[lo, hi], fmt="o-", capsize=4, color="tab:blue", label="mean (bars: seed min-max)")
for x, p in zip(pos, points):
    ys = [float(r["val_loss"]) for r in by_point[p]]
    ax.scatter([x] * len(ys), ys, s=12, color="tab:gray", zorder=3)
if xs is None:
    ax.set_xticks(pos)
    ax.set_xticklabels(points, rotation=20, ha="right")
    ax.set_xlabel("configuration")
else:
    ax.set_xlabel(xlabel)
    if ticks:
        for x, t, m in zip(pos, ticks, means):
            ax.annotate(t, (x, m), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
ax.set_ylabel("final validation loss (nats/token)")
ax.set_title(f"{name}: validation loss")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
out1 = os.path.join(d, "val_loss.png")
fig.savefig(out1, dpi=130)

fig, ax = plt.subplots(figsize=(7, 4.2))
colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
styles = ["-", "--", ":", "-."]
seeds = sorted({r["seed"] for r in rows})
for i, p in enumerate(points):
    for r in by_point[p]:
        tr, ev = [], []
        for line in open(os.path.join(d, r["run"], "metrics.jsonl")):
            j = json.loads(line)
            if j["type"] == "train":
                tr.append(j)
            elif j["type"] == "eval" and "val_loss" in j:
                ev.append(j)
        c = colors[i % len(colors)]
        ls = styles[seeds.index(r["seed"]) % len(styles)]
        ax.plot([j["tokens"] / 1e6 for j in tr], [j["loss"] for j in tr], ls, color=c, lw=1,
                label=p if r is by_point[p][0] else None)
        ax.plot([j["tokens"] / 1e6 for j in ev], [j["val_loss"] for j in ev], "o", color=c, ms=3)
ax.set_xlabel("tokens (millions)")
ax.set_ylabel("loss (lines: train, dots: validation)")
ax.set_title(f"{name}: loss curves" + (" (line style: seed)" if len(seeds) > 1 else ""))
lows = [float(r["val_loss"]) for r in rows]
ax.set_ylim(min(lows) - 0.3, max(lows) + 2.0)
ax.grid(alpha=0.3)
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
out2 = os.path.join(d, "loss_curves.png")
fig.savefig(out2, dpi=130)
print(out1)
print(out2)
)PY";

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string fmt(double v, int decimals) {
  if (!std::isfinite(v)) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string dur(double s) {
  if (!std::isfinite(s)) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  return buf;
}

struct Row {
  std::string run, point, status = "not started";
  int64_t seed = 0;
  std::map<std::string, std::string> axes;
  bool have_config = false;
  config::Config cfg;
  int64_t params = 0, effective_layers = 0, tokens = 0;
  double train_loss = NAN, val_loss = NAN, tps = NAN, wall = NAN;
  struct Eval {
    int64_t step;
    double val_loss, elapsed;
  };
  std::vector<Eval> evals;
  Json zero_shot;  // eval.json's "tasks" ({task: {acc, acc_norm, ...}, average: {...}}), or null
};

void read_metrics(const fs::path& dir, Row& r) {
  std::ifstream in(dir / "metrics.jsonl");
  std::string line;
  std::vector<double> tps;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    Json j;
    try {
      j = json::parse(line);
    } catch (const std::exception&) {
      continue;  // a line cut by a crash
    }
    const std::string type = json::as_string(json::at(j, "type", "metrics"));
    if (type == "train") {
      r.tokens = json::as_int(json::at(j, "tokens", "metrics"));
      r.train_loss = json::as_double(json::at(j, "loss", "metrics"));
      tps.push_back(json::as_double(json::at(j, "tokens_per_s", "metrics")));
    } else if (type == "eval") {
      r.val_loss = json::as_double(json::at(j, "val_loss", "metrics"));
      r.evals.push_back({json::as_int(json::at(j, "step", "metrics")), r.val_loss,
                         json::find(j, "elapsed_s")
                             ? json::as_double(json::at(j, "elapsed_s", "metrics"))
                             : NAN});
    }
  }
  // The first window holds start-up (allocation, kernel selection): leave it out when possible.
  if (tps.size() > 1) tps.erase(tps.begin());
  if (!tps.empty()) {
    double s = 0;
    for (double x : tps) s += x;
    r.tps = s / static_cast<double>(tps.size());
  }
}

// What the report is drawn from: the sweep's manifest (when there is one) and its runs.
struct Sweep {
  Json man;  // sweep.json, or null for a directory of runs without one
  std::vector<Row> rows;
  std::vector<std::string> axis_keys;
  std::string name, description;
  std::vector<std::string> zs_tasks;  // the tasks any run was evaluated on, in the known order
  std::vector<std::string> points;    // in the order of their first run
};

// The runs: sweep.json's list, else every subdirectory with a metrics.jsonl.
Sweep list_runs(const fs::path& d) {
  std::error_code ec;
  Sweep sw;
  sw.name = d.filename().string();
  if (fs::exists(d / "sweep.json", ec)) {
    sw.man = json::parse(read_file(d / "sweep.json"));
    const Json& man = sw.man;
    sw.name = json::as_string(json::at(man, "experiment", "sweep.json"));
    if (json::find(man, "description"))
      sw.description = json::as_string(json::at(man, "description", "sweep.json"));
    for (const auto& k : json::as_array(json::at(man, "axis_keys", "sweep.json")))
      sw.axis_keys.push_back(json::as_string(k));
    for (const auto& x : json::as_array(json::at(man, "runs", "sweep.json"))) {
      Row r;
      r.run = json::as_string(json::at(x, "name", "sweep.json"));
      r.point = json::as_string(json::at(x, "point", "sweep.json"));
      r.seed = json::as_int(json::at(x, "seed", "sweep.json"));
      for (const auto& [k, v] : json::as_object(json::at(x, "axes", "sweep.json")).items())
        r.axes[k] = json::as_string(v);
      sw.rows.push_back(r);
    }
  } else {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(d))
      if (fs::exists(entry.path() / "metrics.jsonl", ec)) names.push_back(entry.path().filename());
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
      Row r;
      r.run = r.point = n;
      sw.rows.push_back(r);
    }
  }
  if (sw.rows.empty()) fail_input("report: no runs in " + d.string());
  return sw;
}

// One run's files: its config, metrics, zero-shot results and sweep status, where present.
void read_run(const fs::path& dir, bool have_manifest, Row& r) {
  std::error_code ec;
  if (fs::exists(dir / "config.yaml", ec)) {
    r.cfg = config::load_config(dir / "config.yaml");
    r.have_config = true;
    const auto counts = model::count_params(r.cfg.model);
    r.params = counts.total;
    r.effective_layers = counts.effective_layers;
    if (!have_manifest) r.seed = r.cfg.train.seed;
    r.status = "running";
  }
  if (fs::exists(dir / "metrics.jsonl", ec)) read_metrics(dir, r);
  if (fs::exists(dir / "eval.json", ec)) {
    try {
      const Json j = json::parse(read_file(dir / "eval.json"), (dir / "eval.json").string());
      if (const Json* t = json::find(j, "tasks")) r.zero_shot = *t;
    } catch (const Error&) {
      log::warn("report: {} is unreadable; its zero-shot results are left out",
                (dir / "eval.json").string());
    }
  }
  if (fs::exists(dir / "sweep_status.json", ec)) {
    Json st = json::parse(read_file(dir / "sweep_status.json"));
    if (json::find(st, "status")) r.status = json::as_string(json::at(st, "status", "status"));
    if (json::find(st, "wall_s")) r.wall = json::as_double(json::at(st, "wall_s", "status"));
  }
}

// A run's zero-shot metric for a task (or "average"), NaN when it has none.
double zs(const Row& r, const std::string& task, const char* metric) {
  const Json* t = r.zero_shot.is_object() ? json::find(r.zero_shot, task) : nullptr;
  const Json* v = t ? json::find(*t, metric) : nullptr;
  return v && v->is_number() ? json::as_double(*v) : NAN;
}

// The zero-shot tasks any run was evaluated on, and the points in the order of their first run.
void index_runs(Sweep& sw) {
  for (const auto& t : config::eval_task_names())
    for (const auto& r : sw.rows)
      if (r.zero_shot.is_object() && json::find(r.zero_shot, t)) {
        sw.zs_tasks.push_back(t);
        break;
      }
  for (const auto& r : sw.rows)
    if (std::find(sw.points.begin(), sw.points.end(), r.point) == sw.points.end())
      sw.points.push_back(r.point);
}

// results.csv's header line.
void csv_header(const Sweep& sw, std::ostringstream& csv) {
  csv << "run,point,seed,status,n_layers,dim,n_heads,n_kv_heads,ffn_type,ffn_hidden,"
         "tie_embeddings,sharing,repeats,params,effective_layers,tokens,train_loss,val_loss,"
         "val_ppl,tokens_per_s,wall_s";
  for (const auto& k : sw.axis_keys) csv << "," << csv_field("axis:" + k);
  // Zero-shot columns, when any run was evaluated: the averages, then each task's acc / acc_norm.
  if (!sw.zs_tasks.empty()) {
    csv << ",zs_avg_acc,zs_avg_acc_norm";
    for (const auto& t : sw.zs_tasks) csv << ",zs_" << t << "_acc,zs_" << t << "_acc_norm";
  }
  csv << "\n";
}

// One run's line of results.csv.
void csv_row(const Sweep& sw, const Row& r, std::ostringstream& csv) {
  const auto& m = r.cfg.model;
  csv << csv_field(r.run) << "," << csv_field(r.point) << "," << r.seed << "," << r.status;
  if (r.have_config)
    csv << "," << m.n_layers << "," << m.dim << "," << m.n_heads << "," << m.n_kv_heads << ","
        << config::kFfnTypes[static_cast<int>(m.ffn.type)] << "," << m.ffn.hidden_dim << ","
        << (m.tie_embeddings ? "true" : "false") << ","
        << config::kSharingSchemes[static_cast<int>(m.layer_sharing.scheme)] << ","
        << m.layer_sharing.repeats << "," << r.params << "," << r.effective_layers;
  else
    csv << ",,,,,,,,,,,";
  csv << "," << r.tokens << "," << fmt(r.train_loss, 5) << "," << fmt(r.val_loss, 5) << ","
      << fmt(std::exp(r.val_loss), 3) << "," << fmt(r.tps, 0) << "," << fmt(r.wall, 1);
  for (const auto& k : sw.axis_keys) {
    auto it = r.axes.find(k);
    csv << "," << csv_field(it == r.axes.end() ? "" : it->second);
  }
  if (!sw.zs_tasks.empty()) {
    csv << "," << fmt(zs(r, "average", "acc"), 4) << "," << fmt(zs(r, "average", "acc_norm"), 4);
    for (const auto& t : sw.zs_tasks)
      csv << "," << fmt(zs(r, t, "acc"), 4) << "," << fmt(zs(r, t, "acc_norm"), 4);
  }
  csv << "\n";
}

// results.csv: one row per run.
void write_csv(const fs::path& d, const Sweep& sw) {
  std::ostringstream csv;
  csv_header(sw, csv);
  for (const auto& r : sw.rows) csv_row(sw, r, csv);
  write_file_atomic(d / "results.csv", csv.str());
}

// A point's runs: the first (one with a config if any), and the finished ones' numbers.
struct Agg {
  const Row* first = nullptr;
  std::vector<double> val;
  double tps = 0, wall = 0;
  int n = 0, finished = 0;
};

std::map<std::string, Agg> aggregate(const Sweep& sw) {
  std::map<std::string, Agg> agg;
  for (const auto& r : sw.rows) {
    Agg& a = agg[r.point];
    ++a.n;
    if (!a.first || (!a.first->have_config && r.have_config)) a.first = &r;
    if (r.status == "done" || (!sw.man.is_object() && std::isfinite(r.val_loss))) {
      if (std::isfinite(r.val_loss)) a.val.push_back(r.val_loss);
      if (std::isfinite(r.tps)) a.tps += r.tps;
      if (std::isfinite(r.wall)) a.wall += r.wall;
      ++a.finished;
    }
  }
  return agg;
}

// The point with the lowest mean validation loss (best = INFINITY when none has one).
struct Best {
  double loss = INFINITY;
  std::string point;
};

Best best_point(const Sweep& sw, std::map<std::string, Agg>& agg) {
  Best best;
  for (const auto& p : sw.points) {
    const Agg& a = agg[p];
    if (a.val.empty()) continue;
    double mean = 0;
    for (double v : a.val) mean += v;
    mean /= static_cast<double>(a.val.size());
    if (mean < best.loss) {
      best.loss = mean;
      best.point = p;
    }
  }
  return best;
}

// One point's row of the table: shape, size, the seeds' mean loss and spread, speed. Returns the
// spread (NaN without a finished run).
double md_point_row(const std::string& p, const Agg& a, const Best& best, std::ostringstream& md) {
  const Row& f = *a.first;
  const auto& m = f.cfg.model;
  double mean = NAN, spread = NAN;
  if (!a.val.empty()) {
    mean = 0;
    for (double v : a.val) mean += v;
    mean /= static_cast<double>(a.val.size());
    spread = *std::max_element(a.val.begin(), a.val.end()) -
             *std::min_element(a.val.begin(), a.val.end());
  }
  md << "| " << p << " | ";
  if (f.have_config) {
    md << m.n_layers << " × " << m.dim
       << (m.layer_sharing.repeats > 1
               ? " (" +
                     std::string(
                         config::kSharingSchemes[static_cast<int>(m.layer_sharing.scheme)]) +
                     " ×" + std::to_string(m.layer_sharing.repeats) + ")"
               : std::string())
       << " | " << m.n_heads << " / " << m.n_kv_heads << " | "
       << config::kFfnTypes[static_cast<int>(m.ffn.type)] << " " << m.ffn.hidden_dim << " | "
       << human_count(static_cast<double>(f.params)) << (m.tie_embeddings ? "" : " (untied)")
       << " | " << f.effective_layers << " | " << human_count(static_cast<double>(f.tokens))
       << " | ";
  } else {
    md << " |  |  |  |  |  | ";
  }
  const double n = std::max(1, a.finished);
  md << fmt(mean, 4) << " | " << (a.val.size() > 1 ? fmt(spread, 4) : std::string("—")) << " | "
     << (std::isfinite(mean)
             ? (p == best.point ? std::string("best") : "+" + fmt(mean - best.loss, 4))
             : std::string())
     << " | " << fmt(std::exp(mean), 2) << " | "
     << (a.finished ? human_count(a.tps / n) : std::string()) << " | "
     << (a.finished ? dur(a.wall / n) : std::string()) << " | " << a.finished << "/" << a.n
     << " |\n";
  return spread;
}

// results.md's main table: one row per point, seeds averaged, then the best point.
void md_points(const Sweep& sw, std::map<std::string, Agg>& agg, ReportResult& res,
               std::ostringstream& md) {
  const Best best = best_point(sw, agg);
  md << "# " << sw.name << "\n\n";
  if (!sw.description.empty()) md << sw.description << "\n\n";
  md << "| point | layers × dim | heads / kv | FFN | params | eff. layers | tokens | val loss "
        "(mean) | seed spread | Δ vs best | ppl | tokens/s | wall | seeds done |\n";
  md << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  double max_spread = 0;
  for (const auto& p : sw.points) {
    const Agg& a = agg[p];
    ++res.points;
    const double spread = md_point_row(p, a, best, md);
    if (!a.val.empty()) max_spread = std::max(max_spread, spread);
  }
  if (std::isfinite(best.loss)) {
    md << "\nBest: **" << best.point << "** (validation loss " << fmt(best.loss, 4) << "). ";
    if (max_spread > 0)
      md << "The largest seed spread (max − min over seeds) of any point is " << fmt(max_spread, 4)
         << ": differences smaller than that are within seed noise.";
    md << "\n";
  }
}

// Zero-shot accuracy per point (seeds averaged), when runs were evaluated.
void md_zero_shot(const Sweep& sw, std::ostringstream& md) {
  if (sw.zs_tasks.empty()) return;
  md << "\n## Zero-shot accuracy (acc_norm; seeds averaged)\n\n| point | average | acc (average) "
        "|";
  for (const auto& t : sw.zs_tasks) md << " " << t << " |";
  md << "\n|---|---|---|";
  for (size_t i = 0; i < sw.zs_tasks.size(); ++i) md << "---|";
  md << "\n";
  for (const auto& p : sw.points) {
    auto mean_of = [&](const std::string& task, const char* metric) {
      double sum = 0;
      int n = 0;
      for (const auto& r : sw.rows)
        if (r.point == p && std::isfinite(zs(r, task, metric))) {
          sum += zs(r, task, metric);
          ++n;
        }
      return n ? sum / n : NAN;
    };
    md << "| " << p << " | " << fmt(mean_of("average", "acc_norm"), 4) << " | "
       << fmt(mean_of("average", "acc"), 4) << " |";
    for (const auto& t : sw.zs_tasks) md << " " << fmt(mean_of(t, "acc_norm"), 4) << " |";
    md << "\n";
  }
}

// One student with a teacher against the plain run of the same seed and steps, and the longest.
void md_distillation_row(const Row* k, const std::vector<const Row*>& plain_rows,
                         std::ostringstream& md) {
  const int64_t steps = k->evals.back().step;
  const Row *same = nullptr, *longer = nullptr;
  for (const Row* p : plain_rows) {
    if (p->seed != k->seed) continue;
    const int64_t ps = p->evals.back().step;
    if (ps == steps) same = p;
    if (ps > steps && (!longer || ps > longer->evals.back().step)) longer = p;
  }
  md << "| " << k->seed << " | " << steps << ", " << dur(k->evals.back().elapsed) << " | "
     << fmt(k->evals.back().val_loss, 4) << " | ";
  if (same)
    md << dur(same->evals.back().elapsed) << " | " << fmt(same->evals.back().val_loss, 4);
  else
    md << " | ";
  md << " | ";
  if (longer)
    md << longer->evals.back().step << ", " << dur(longer->evals.back().elapsed) << " | "
       << fmt(longer->evals.back().val_loss, 4);
  else
    md << " | ";
  md << " | "
     << (same ? fmt(k->evals.back().elapsed / same->evals.back().elapsed, 2) + "×" : std::string())
     << " |\n";
}

// Distillation: each student with a teacher against the students without one (same seed), at
// equal steps and at equal wall-clock time.
void md_distillation(const Sweep& sw, std::ostringstream& md) {
  std::vector<const Row*> kd_rows, plain_rows;
  for (const auto& r : sw.rows) {
    if (!r.have_config || r.status != "done" || r.evals.empty()) continue;
    const bool has_teacher = !r.cfg.kd.teacher.empty() || !r.cfg.kd.cache.empty();
    if (has_teacher && r.cfg.kd.ratio > 0)
      kd_rows.push_back(&r);
    else if (has_teacher || r.point != "teacher")
      plain_rows.push_back(&r);
  }
  if (kd_rows.empty() || plain_rows.empty()) return;
  md << "\n## Distillation: with and without the teacher\n\n"
     << "| seed | with KD: steps, time | val loss | without KD, same steps: time | val loss | "
        "without KD, longer: steps, time | val loss | KD slowdown per step |\n"
     << "|---|---|---|---|---|---|---|---|\n";
  for (const Row* k : kd_rows) md_distillation_row(k, plain_rows, md);
  md << "\nThe paper (LLaMA-v2 7B teacher; 125M and 350M students): distillation was 2.6–3.2× "
        "slower and gained nothing (43.9 vs 43.8 and 49.1 vs 48.8 average accuracy).\n";
}

// Plots: the plot script run by the given Python; the PNGs it names, or why there are none.
void draw_plots(const ReportOptions& o, ReportResult& res) {
  if (o.python.empty()) {
    res.plot_error = "no Python given";
    return;
  }
  std::error_code ec;
  const fs::path script =
      fs::temp_directory_path() / ("deepthin-plot-" + std::to_string(::getpid()) + ".py");
  write_file_atomic(script, kPlotScript);
  const std::string cmd = o.python + " " + script.string() + " " + o.dir.string() + " 2>&1";
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int rc = ::pclose(p);
    if (rc == 0) {
      for (const auto& line : split(out, '\n'))
        if (!line.empty() && line.size() > 4 && line.substr(line.size() - 4) == ".png")
          res.plots.push_back(line);
    } else {
      res.plot_error = out.empty() ? "the plot script failed" : out;
    }
  } else {
    res.plot_error = "cannot run " + o.python;
  }
  fs::remove(script, ec);
}

}  // namespace

ReportResult write_report(const ReportOptions& o) {
  std::error_code ec;
  if (!fs::is_directory(o.dir, ec))
    fail_input("report: " + o.dir.string() + " is not a directory (expected runs/<experiment>)");
  ReportResult res;
  Sweep sw = list_runs(o.dir);
  for (auto& r : sw.rows) {
    read_run(o.dir / r.run, sw.man.is_object(), r);
    ++res.runs;
  }
  index_runs(sw);
  write_csv(o.dir, sw);

  // results.md: one row per point, seeds averaged; zero-shot accuracy; distillation.
  auto agg = aggregate(sw);
  std::ostringstream md;
  md_points(sw, agg, res, md);
  md_zero_shot(sw, md);
  md_distillation(sw, md);
  res.markdown = md.str();
  write_file_atomic(o.dir / "results.md", res.markdown);

  draw_plots(o, res);
  return res;
}

}  // namespace deepthin::sweep
