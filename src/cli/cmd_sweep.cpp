// deepthin sweep EXPERIMENT [--dry-run [--json]] [--gpus 0,1,…] [--gpus-per-run K] [--parallel N]
//                           [--runs-root DIR] [--only TEXT] [--set KEY=VALUE]…
#include <cstdint>
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "model/param_count.h"
#include "sweep/experiment.h"
#include "sweep/report.h"
#include "sweep/runner.h"
#include "util/error.h"
#include "util/json_io.h"
#include "util/strings.h"

namespace deepthin::cli {

namespace {

std::vector<int> parse_gpus(const std::string& s) {
  std::vector<int> out;
  for (const auto& part : split(s, ',')) {
    if (part.empty()) continue;
    try {
      size_t used = 0;
      int g = std::stoi(part, &used);
      if (used != part.size() || g < 0) throw std::invalid_argument("");
      out.push_back(g);
    } catch (const std::exception&) {
      fail_input("--gpus: '" + part + "' is not a GPU index (expected a list like 0,1,2)");
    }
  }
  if (out.empty()) fail_input("--gpus: no GPU listed");
  return out;
}

// The runs a dry run lists: a text table, the same as JSON, and the parameter range.
struct DryRunList {
  Json list = Json::array();
  int64_t lo = INT64_MAX, hi = 0;
  std::vector<std::vector<std::string>> table{
      {"run", "layers", "dim", "heads/kv", "ffn", "params", "eff. layers", "tokens", "overrides"}};
};

// One run's row of the table and its JSON entry.
void list_run(const sweep::RunSpec& r, int world, DryRunList& d) {
  const auto& m = r.config.model;
  const auto counts = model::count_params(m);
  d.lo = std::min(d.lo, counts.total);
  d.hi = std::max(d.hi, counts.total);
  const int64_t tokens = sweep::run_tokens(r.config, world);
  std::vector<std::string> ov;
  for (const auto& [k, v] : r.overrides) ov.push_back(k + "=" + v);
  ov.push_back("train.seed=" + std::to_string(r.seed));
  d.table.push_back({r.name, std::to_string(m.n_layers), std::to_string(m.dim),
                     std::to_string(m.n_heads) + "/" + std::to_string(m.n_kv_heads),
                     std::string(config::kFfnTypes[static_cast<int>(m.ffn.type)]) + " " +
                         std::to_string(m.ffn.hidden_dim),
                     group_digits(counts.total), std::to_string(counts.effective_layers),
                     human_count(static_cast<double>(tokens)), join(ov, " ")});
  Json j = Json::object();
  j["name"] = r.name;
  j["point"] = r.point;
  j["seed"] = r.seed;
  j["n_layers"] = m.n_layers;
  j["dim"] = m.dim;
  j["n_heads"] = m.n_heads;
  j["n_kv_heads"] = m.n_kv_heads;
  j["ffn_type"] = std::string(config::kFfnTypes[static_cast<int>(m.ffn.type)]);
  j["ffn_hidden"] = m.ffn.hidden_dim;
  j["params"] = counts.total;
  j["effective_layers"] = counts.effective_layers;
  j["tokens"] = tokens;
  Json ovj = Json::object();
  for (const auto& [k, v] : r.overrides) ovj[k] = v;
  j["overrides"] = ovj;
  d.list.push_back(j);
}

// The table with its columns aligned, and the parameter range.
void print_dry_run(const sweep::Experiment& e, const DryRunList& d) {
  const auto& table = d.table;
  std::printf("experiment %s (%s): %zu runs\n", e.name.c_str(), e.file.string().c_str(),
              json::as_array(d.list).size());
  if (!e.description.empty()) std::printf("%s\n", e.description.c_str());
  std::vector<size_t> width(table[0].size(), 0);
  for (const auto& row : table)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  for (const auto& row : table) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      std::string cell = row[c];
      if (c + 1 < row.size()) cell += std::string(width[c] - row[c].size() + 2, ' ');
      line += cell;
    }
    std::printf("%s\n", line.c_str());
  }
  if (d.hi > 0)
    std::printf("parameters: %s to %s (largest / smallest − 1 = %.2f%%)\n",
                group_digits(d.lo).c_str(), group_digits(d.hi).c_str(),
                100.0 * (static_cast<double>(d.hi) / static_cast<double>(d.lo) - 1.0));
}

// --dry-run: the runs (those --only keeps) as a table, or as JSON with --json; nothing trains.
int dry_run(const Args& args, const sweep::Experiment& e, const sweep::SweepOptions& o) {
  const int world = o.gpus.empty() ? 1 : o.gpus_per_run;
  DryRunList d;
  for (const auto& r : e.runs) {
    if (!o.only.empty() && r.name.find(o.only) == std::string::npos) continue;
    list_run(r, world, d);
  }
  if (args.has("json")) {
    std::printf("%s\n", json::dump(d.list, 2).c_str());
    return 0;
  }
  print_dry_run(e, d);
  return 0;
}

}  // namespace

int run_sweep(const Argv& argv) {
  Args args("sweep",
            "deepthin sweep EXPERIMENT [--dry-run [--json]] [--gpus 0,1,...] [--gpus-per-run K] "
            "[--parallel N] [--runs-root DIR] [--only TEXT] [--set KEY=VALUE]...",
            "Expand an experiment (experiments/*.yaml: a base config, axes, seeds, an optional "
            "parameter budget) into runs and train them, each in <runs-root>/<experiment>/<run>/. "
            "Finished runs are skipped, interrupted ones resume, failed ones are recorded and the "
            "sweep goes on. Then: deepthin report <runs-root>/<experiment>.",
            {"EXPERIMENT"},
            {set_option(),
             {"dry-run", "", "List the runs (shape, parameters, tokens, overrides); train nothing"},
             {"json", "", "With --dry-run: the runs as a JSON list"},
             {"gpus", "LIST", "GPU indices to use, e.g. 0,1,2,3 (default: the CPU)"},
             {"gpus-per-run", "K", "GPUs per run (data parallel inside the run; default 1)"},
             {"parallel", "N", "Runs at once on each GPU group, or on the CPU (default 1)"},
             {"runs-root", "DIR", "Where sweeps live (default runs)"},
             {"only", "TEXT", "Only runs whose name contains TEXT"}});
  if (!args.parse(argv)) return 0;
  sweep::SweepOptions o;
  o.runs_root = args.get("runs-root", "runs");
  if (args.has("gpus")) o.gpus = parse_gpus(args.get("gpus"));
  o.gpus_per_run = static_cast<int>(args.get_int("gpus-per-run", 1, 1, 1024));
  o.parallel = static_cast<int>(args.get_int("parallel", 1, 1, 1024));
  o.only = args.get("only");
  auto e = sweep::load_experiment(args.positional(0), args.all("set"));

  if (args.has("dry-run")) return dry_run(args, e, o);
  if (args.has("json")) fail_input("--json goes with --dry-run");
  auto sum = sweep::run_sweep(e, o);
  std::printf(
      "{\"experiment\":\"%s\",\"done\":%d,\"skipped\":%d,\"failed\":%d,\"interrupted\":%d}\n",
      e.name.c_str(), sum.done, sum.skipped, sum.failed, sum.interrupted);
  if (sum.failed > 0) return 1;
  if (sum.interrupted > 0) return 130;
  return 0;
}

int run_report(const Argv& argv) {
  Args args(
      "report", "deepthin report RUNS_DIR [--python PY]",
      "Summarise a sweep (runs/<experiment>): results.csv (one row per run), results.md (one "
      "row per point: seeds averaged, their spread), and val_loss.png / loss_curves.png "
      "drawn with matplotlib.",
      {"RUNS_DIR"},
      {{"python", "PY",
        "Python with matplotlib for the plots (default $DEEPTHIN_PYTHON, else the build's)"}});
  if (!args.parse(argv)) return 0;
  sweep::ReportOptions o;
  o.dir = args.positional(0);
  const char* env = std::getenv("DEEPTHIN_PYTHON");
  o.python = args.get("python", env ? env : DEEPTHIN_DEFAULT_PYTHON);
  auto r = sweep::write_report(o);
  std::printf("%s\n", r.markdown.c_str());
  std::printf("wrote %s, %s", (o.dir / "results.csv").string().c_str(),
              (o.dir / "results.md").string().c_str());
  for (const auto& p : r.plots) std::printf(", %s", p.string().c_str());
  std::printf("\n");
  if (r.plots.empty())
    std::fprintf(stderr,
                 "deepthin: warning: no plots (%s); install matplotlib for %s, or pass --python\n",
                 r.plot_error.c_str(), o.python.c_str());
  return 0;
}

}  // namespace deepthin::cli
