#include "sweep/experiment.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>

#include "config/eval_tasks.h"
#include "config/tree.h"
#include "model/param_count.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/paths.h"
#include "util/strings.h"

namespace deepthin::sweep {

namespace fs = std::filesystem;
using config::Node;

namespace {

// Runs one experiment may expand to (grids are counted before they are built).
constexpr size_t kMaxRuns = 10000;

std::string percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * fraction);
  return buf;
}

std::string where(const Node& n) {
  return n.source.str();
}

// A node as inline YAML, for `--set key=<this>`.
std::string inline_yaml(const Node& n) {
  switch (n.kind) {
    case Node::Kind::null:
      return "null";
    case Node::Kind::scalar: {
      if (!n.quoted) return n.scalar;
      std::string q = "'";
      for (char c : n.scalar) q += c == '\'' ? std::string("''") : std::string(1, c);
      return q + "'";
    }
    case Node::Kind::sequence: {
      std::vector<std::string> parts;
      for (const auto& i : n.items) parts.push_back(inline_yaml(i));
      return "[" + join(parts, ", ") + "]";
    }
    case Node::Kind::map: {
      std::vector<std::string> parts;
      for (const auto& [k, v] : n.entries) parts.push_back(k + ": " + inline_yaml(v));
      return "{" + join(parts, ", ") + "}";
    }
  }
  return "";
}

// Dotted keys from a possibly nested map: {train: {max_steps: 5}} and {train.max_steps: 5} both
// give ("train.max_steps", 5).
void flatten(const Node& m, const std::string& prefix,
             std::vector<std::pair<std::string, const Node*>>& out) {
  for (const auto& [k, v] : m.entries) {
    std::string key = prefix.empty() ? k : prefix + "." + k;
    if (v.kind == Node::Kind::map && !v.entries.empty())
      flatten(v, key, out);
    else
      out.emplace_back(key, &v);
  }
}

const Node& need(const Node& m, const std::string& key, const std::string& what) {
  const Node* n = m.find(key);
  if (!n) fail_input(where(m) + ": " + what + " needs '" + key + "'");
  return *n;
}

double as_number(const Node& n, const std::string& key) {
  if (n.kind != Node::Kind::scalar || n.quoted)
    fail_input(where(n) + ": '" + key + "' must be a number, got " + n.describe());
  try {
    size_t used = 0;
    double v = std::stod(n.scalar, &used);
    if (used != n.scalar.size() || !std::isfinite(v)) throw std::invalid_argument("");
    return v;
  } catch (const std::exception&) {
    fail_input(where(n) + ": '" + key + "' must be a number, got " + n.describe());
  }
}

int64_t as_int(const Node& n, const std::string& key, int64_t lo) {
  double v = as_number(n, key);
  // 2^62 bounds every count an experiment can mean and keeps the conversion exact and defined.
  if (v != std::floor(v) || v < static_cast<double>(lo) || v > 0x1p62)
    fail_input(where(n) + ": '" + key + "' must be an integer from " + std::to_string(lo) +
               " to 2^62, got " + n.scalar);
  return static_cast<int64_t>(v);
}

const Node& as_list(const Node& n, const std::string& key) {
  if (n.kind != Node::Kind::sequence || n.items.empty())
    fail_input(where(n) + ": '" + key + "' must be a non-empty list, got " + n.describe());
  return n;
}

void check_keys(const Node& m, std::initializer_list<const char*> allowed,
                const std::string& what) {
  std::vector<std::string> names(allowed.begin(), allowed.end());
  for (const auto& [k, v] : m.entries) {
    if (std::find(names.begin(), names.end(), k) != names.end()) continue;
    std::string msg = where(v) + ": unknown key '" + k + "' in " + what;
    if (auto near = nearest(k, names)) msg += "; did you mean '" + *near + "'?";
    fail_input(msg + " (allowed: " + join(names, ", ") + ")");
  }
}

// The last component of a dotted key, for run names: "model.ffn.type" -> "type".
std::string leaf(const std::string& key) {
  auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

std::string name_part(const std::string& key, const std::string& value) {
  std::string v;
  for (char c : value)
    v += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') ? c : '_';
  return leaf(key) + "-" + v;
}

struct Point {
  std::string name;
  std::vector<std::pair<std::string, std::string>> overrides;
  std::map<std::string, std::string> axes;
};

std::vector<Point> cross(const std::vector<Point>& a, const std::vector<Point>& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  std::vector<Point> out;
  for (const auto& x : a)
    for (const auto& y : b) {
      Point p = x;
      p.name += "_" + y.name;
      p.overrides.insert(p.overrides.end(), y.overrides.begin(), y.overrides.end());
      p.axes.insert(y.axes.begin(), y.axes.end());
      out.push_back(p);
    }
  return out;
}

}  // namespace

std::vector<Shape> solve_budget(const config::ModelConfig& base, const Budget& b) {
  std::vector<Shape> out;
  auto params_of = [&](int64_t layers, int64_t dim, int64_t heads, int64_t kv, int64_t ffn) {
    config::ModelConfig m = base;
    m.n_layers = layers;
    m.dim = dim;
    m.n_heads = heads;
    m.n_kv_heads = kv;
    m.head_dim = b.head_dim;
    m.ffn.hidden_dim = ffn;
    return model::count_params(m).total;
  };
  for (int64_t depth : b.depths) {
    double best_score = INFINITY;
    Shape best;
    for (int64_t heads = 1; heads * b.head_dim <= 16384; ++heads) {
      if (heads % b.kv_group != 0) continue;
      const int64_t dim = heads * b.head_dim, kv = heads / b.kv_group;
      // Parameters are linear in the FFN width: solve for the width that lands on the budget.
      const double p1 = static_cast<double>(params_of(depth, dim, heads, kv, b.ffn_multiple));
      const double p2 = static_cast<double>(params_of(depth, dim, heads, kv, 2 * b.ffn_multiple));
      const double slope = (p2 - p1) / static_cast<double>(b.ffn_multiple);
      const double ffn = static_cast<double>(b.ffn_multiple) + (b.params - p1) / slope;
      if (ffn < static_cast<double>(b.ffn_multiple)) break;  // wider only gets further away
      const double score = std::abs(std::log(ffn / static_cast<double>(dim) / b.ffn_ratio));
      if (score < best_score) {
        best_score = score;
        const int64_t f = std::max<int64_t>(
            b.ffn_multiple,
            static_cast<int64_t>(std::llround(ffn / b.ffn_multiple)) * b.ffn_multiple);
        best = Shape{depth, dim, heads, kv, f, params_of(depth, dim, heads, kv, f)};
      }
    }
    if (best.dim == 0 ||
        std::abs(static_cast<double>(best.params) - b.params) / b.params > b.tolerance)
      fail_input("budget: no shape with " + std::to_string(depth) + " layers lands within " +
                 percent(b.tolerance) + " of " + human_count(b.params) + " parameters (head_dim " +
                 std::to_string(b.head_dim) + ", kv_group " + std::to_string(b.kv_group) + ")" +
                 (best.dim ? "; closest: dim " + std::to_string(best.dim) + ", FFN " +
                                 std::to_string(best.ffn_hidden) + ", " +
                                 group_digits(best.params) + " parameters"
                           : std::string()));
    out.push_back(best);
  }
  return out;
}

int64_t run_tokens(const config::Config& c, int world) {
  return c.train.max_steps * c.train.micro_batch_size * c.train.grad_accum_steps * c.train.seq_len *
         world;
}

namespace {

// The experiment file as a YAML mapping of the known keys.
Node read_root(const fs::path& file) {
  std::error_code ec;
  if (!fs::exists(file, ec)) fail_input("experiment file " + file.string() + " not found");
  Node root = config::parse_yaml(read_file(file, "experiment file", 4u << 20), file.string());
  if (root.kind != Node::Kind::map)
    fail_input(file.string() + ": an experiment must be a mapping, got " + root.describe());
  check_keys(
      root,
      {"name", "description", "base", "set", "seeds", "budget", "zip", "grid", "teacher", "eval"},
      "an experiment");
  return root;
}

// name (default: the file's stem), description, and the base config, relative to the file.
void read_header(const Node& root, const fs::path& file, Experiment& e) {
  std::error_code ec;
  e.name = root.find("name") ? root.find("name")->scalar : file.stem().string();
  check_path_component(e.name, root.find("name") ? where(*root.find("name")) + ": name"
                                                 : file.string() +
                                                       ": the experiment name taken "
                                                       "from the file name (set name:)");
  if (const Node* d = root.find("description")) e.description = d->scalar;
  const Node& base = need(root, "base", "an experiment");
  if (base.kind != Node::Kind::scalar || base.scalar.empty())
    fail_input(where(base) + ": 'base' must be the path of a config file");
  e.base = file.parent_path() / base.scalar;
  if (!fs::exists(e.base, ec))
    fail_input(where(base) + ": base config " + e.base.string() + " not found");
}

// The overrides every run gets: the experiment's set: block, then --set.
std::vector<std::string> common_sets(const Node& root, const std::vector<std::string>& extra_sets) {
  std::vector<std::string> common;
  if (const Node* s = root.find("set")) {
    if (s->kind != Node::Kind::map) fail_input(where(*s) + ": 'set' must be a mapping of keys");
    std::vector<std::pair<std::string, const Node*>> flat;
    flatten(*s, "", flat);
    for (const auto& [k, v] : flat) common.push_back(k + "=" + inline_yaml(*v));
  }
  common.insert(common.end(), extra_sets.begin(), extra_sets.end());
  return common;
}

// seeds:, else the base config's seed.
std::vector<int64_t> read_seeds(const Node& root, const config::Config& base_cfg) {
  std::vector<int64_t> seeds{base_cfg.train.seed};
  if (const Node* s = root.find("seeds")) {
    seeds.clear();
    for (const auto& i : as_list(*s, "seeds").items) seeds.push_back(as_int(i, "seeds", 0));
    if (std::set<int64_t>(seeds.begin(), seeds.end()).size() != seeds.size())
      fail_input(where(*s) + ": 'seeds' repeats a seed");
  }
  return seeds;
}

// budget: the shapes the solver finds, one point per depth.
std::vector<Point> budget_points(const Node& bn, const config::Config& base_cfg, Experiment& e) {
  if (bn.kind != Node::Kind::map) fail_input(where(bn) + ": 'budget' must be a mapping");
  check_keys(bn,
             {"params", "depths", "head_dim", "ffn_ratio", "kv_group", "ffn_multiple", "tolerance"},
             "budget");
  Budget b;
  b.params = as_number(need(bn, "params", "budget"), "params");
  for (const auto& d : as_list(need(bn, "depths", "budget"), "depths").items)
    b.depths.push_back(as_int(d, "depths", 1));
  if (const Node* n = bn.find("head_dim")) b.head_dim = as_int(*n, "head_dim", 2);
  if (const Node* n = bn.find("ffn_ratio")) b.ffn_ratio = as_number(*n, "ffn_ratio");
  if (const Node* n = bn.find("kv_group")) b.kv_group = as_int(*n, "kv_group", 1);
  if (const Node* n = bn.find("ffn_multiple")) b.ffn_multiple = as_int(*n, "ffn_multiple", 1);
  if (const Node* n = bn.find("tolerance")) b.tolerance = as_number(*n, "tolerance");
  // Bounds that keep every shape the solver tries inside the model's own limits and its
  // arithmetic exact (fuzzing found params: 16e25 overflowing the FFN width).
  if (!(b.params > 0 && b.params <= 1e13) || !(b.ffn_ratio > 0 && b.ffn_ratio <= 1000) ||
      b.head_dim % 2 != 0 || b.head_dim > 16384 || b.kv_group > 4096 ||
      b.ffn_multiple > (int64_t{1} << 20) || !(b.tolerance >= 0 && b.tolerance <= 1))
    fail_input(where(bn) +
               ": budget needs 0 < params <= 1e13, 0 < ffn_ratio <= 1000, an even head_dim up "
               "to 16384, kv_group up to 4096, ffn_multiple up to 2^20 and tolerance in [0, 1]");
  for (int64_t d : b.depths)
    if (d > 4096)
      fail_input(where(bn) + ": budget depths must be at most 4096, got " + std::to_string(d));
  e.has_budget = true;
  e.axis_keys = {"model.n_layers", "model.dim"};
  std::vector<Point> points;
  for (const auto& s : solve_budget(base_cfg.model, b)) {
    Point p;
    p.name = "L" + std::to_string(s.n_layers) + "-d" + std::to_string(s.dim);
    p.overrides = {{"model.n_layers", std::to_string(s.n_layers)},
                   {"model.dim", std::to_string(s.dim)},
                   {"model.n_heads", std::to_string(s.n_heads)},
                   {"model.n_kv_heads", std::to_string(s.n_kv_heads)},
                   {"model.head_dim", std::to_string(b.head_dim)},
                   {"model.ffn.hidden_dim", std::to_string(s.ffn_hidden)}};
    p.axes = {{"model.n_layers", std::to_string(s.n_layers)}, {"model.dim", std::to_string(s.dim)}};
    points.push_back(p);
  }
  return points;
}

// zip: keys whose lists of equal length give one point per position, optionally named.
std::vector<Point> zip_points(const Node& z, Experiment& e) {
  if (z.kind != Node::Kind::map || z.entries.empty())
    fail_input(where(z) + ": 'zip' must map keys to lists of equal length");
  std::vector<std::string> names;
  std::vector<std::pair<std::string, const Node*>> cols;
  for (const auto& [k, v] : z.entries) {
    as_list(v, k);
    if (k == "names") {
      for (const auto& i : v.items) {
        check_path_component(i.scalar, where(i) + ": zip names");
        names.push_back(i.scalar);
      }
      continue;
    }
    cols.emplace_back(k, &v);
    e.axis_keys.push_back(k);
  }
  if (cols.empty()) fail_input(where(z) + ": 'zip' has no keys besides names");
  const size_t n = cols.front().second->items.size();
  for (const auto& [k, v] : cols)
    if (v->items.size() != n)
      fail_input(where(*v) + ": zip lists must have equal lengths: '" + k + "' has " +
                 std::to_string(v->items.size()) + ", '" + cols.front().first + "' has " +
                 std::to_string(n));
  if (!names.empty() && names.size() != n)
    fail_input(where(*z.find("names")) + ": zip 'names' has " + std::to_string(names.size()) +
               " entries for " + std::to_string(n) + " points");
  std::vector<Point> zp;
  for (size_t i = 0; i < n; ++i) {
    Point p;
    std::vector<std::string> parts;
    for (const auto& [k, v] : cols) {
      const std::string val = inline_yaml(v->items[i]);
      p.overrides.emplace_back(k, val);
      p.axes[k] = v->items[i].scalar.empty() ? val : v->items[i].scalar;
      parts.push_back(name_part(k, p.axes[k]));
    }
    p.name = names.empty() ? join(parts, "_") : names[i];
    zp.push_back(p);
  }
  return zp;
}

// grid: each key crosses the points with its values, within the limit on runs.
void cross_grid(const Node& g, const std::vector<int64_t>& seeds, Experiment& e,
                std::vector<Point>& points) {
  if (g.kind != Node::Kind::map || g.entries.empty())
    fail_input(where(g) + ": 'grid' must map keys to lists of values");
  for (const auto& [k, v] : g.entries) {
    as_list(v, k);
    e.axis_keys.push_back(k);
    std::vector<Point> axis;
    for (const auto& item : v.items) {
      Point p;
      const std::string val = inline_yaml(item);
      p.overrides.emplace_back(k, val);
      p.axes[k] = item.scalar.empty() ? val : item.scalar;
      p.name = name_part(k, p.axes[k]);
      axis.push_back(p);
    }
    // The runs this grid would expand to, counted before they are built.
    size_t runs = 0;
    const bool overflow =
        __builtin_mul_overflow(std::max<size_t>(1, points.size()), axis.size(), &runs) ||
        __builtin_mul_overflow(runs, seeds.size(), &runs);
    if (overflow || runs > kMaxRuns)
      fail_input(where(v) + ": grid key '" + k + "' brings the experiment to " +
                 (overflow ? std::string("more than 2^64") : std::to_string(runs)) +
                 " runs; at most " + std::to_string(kMaxRuns) + " are allowed in one experiment");
    points = cross(points, axis);
  }
}

// Zero-shot evaluation after training: eval: {tasks, data}.
void read_eval(const Node& ev, Experiment& e) {
  if (ev.kind != Node::Kind::map) fail_input(where(ev) + ": 'eval' must be a mapping");
  check_keys(ev, {"tasks", "data"}, "eval");
  const Node& tasks = need(ev, "tasks", "eval");
  const Node& data = need(ev, "data", "eval");
  std::vector<std::string> names;
  if (tasks.kind == Node::Kind::scalar && tasks.scalar == "all") {
    names = config::eval_task_names();
  } else if (tasks.kind == Node::Kind::sequence) {
    for (const auto& t : tasks.items) {
      const auto& known = config::eval_task_names();
      if (t.kind != Node::Kind::scalar ||
          std::find(known.begin(), known.end(), t.scalar) == known.end())
        fail_input(where(t) + ": unknown task '" + t.scalar + "' (known: " + join(known, ", ") +
                   ")");
      names.push_back(t.scalar);
    }
  } else {
    fail_input(where(tasks) + ": 'tasks' must be a list of task names, or all");
  }
  if (names.empty()) fail_input(where(tasks) + ": 'tasks' is empty");
  if (data.kind != Node::Kind::scalar || data.scalar.empty())
    fail_input(where(data) + ": 'data' must be the directory of the task files");
  e.eval_tasks = names;
  e.eval_data =
      fs::path(data.scalar).is_absolute() ? fs::path(data.scalar) : fs::absolute(data.scalar);
}

// The teacher: trained first (a run of its own) or named by path (which every run then gets).
void read_teacher(const Node& t, const fs::path& file, const std::vector<int64_t>& seeds,
                  Experiment& e, std::vector<std::string>& common) {
  if (t.kind != Node::Kind::map) fail_input(where(t) + ": 'teacher' must be a mapping");
  check_keys(t, {"name", "set", "path", "cache_k"}, "teacher");
  if (const Node* path = t.find("path")) {
    if (t.find("set")) fail_input(where(t) + ": a teacher has either 'path' or 'set', not both");
    if (const Node* k = t.find("cache_k"))
      fail_input(where(*k) + ": teacher 'cache_k' needs a teacher the sweep trains (name, set)");
    e.teacher_path = path->scalar;
    common.push_back("kd.teacher=" + path->scalar);
    return;
  }
  RunSpec r;
  r.name = r.point = t.find("name") ? t.find("name")->scalar : "teacher";
  check_path_component(r.name, where(t.find("name") ? *t.find("name") : t) + ": teacher name");
  r.seed = seeds.front();
  r.is_teacher = true;
  std::vector<std::string> sets = common;
  if (const Node* ts = t.find("set")) {
    if (ts->kind != Node::Kind::map) fail_input(where(*ts) + ": teacher 'set' must be a mapping");
    std::vector<std::pair<std::string, const Node*>> flat;
    flatten(*ts, "", flat);
    for (const auto& [k, v] : flat) {
      r.overrides.emplace_back(k, inline_yaml(*v));
      sets.push_back(k + "=" + inline_yaml(*v));
    }
  }
  if (const Node* k = t.find("cache_k")) {
    int64_t v = 0;
    try {
      size_t used = 0;
      v = std::stoll(k->scalar, &used);
      if (used != k->scalar.size()) v = 0;
    } catch (const std::exception&) {
    }
    if (v <= 0)
      fail_input(where(*k) +
                 ": teacher 'cache_k' must be a positive integer (tokens kept per "
                 "position); got '" +
                 k->scalar + "'");
    e.teacher_cache_k = v;
  }
  sets.push_back("train.seed=" + std::to_string(r.seed));
  sets.push_back("kd.teacher=''");
  sets.push_back("kd.cache=''");
  try {
    r.config = config::load_config(e.base, sets);
  } catch (const Error& err) {
    throw Error(err.kind(), file.string() + ": the teacher: " + err.what());
  }
  e.teacher_run = r.name;
  e.runs.push_back(std::move(r));
}

// One run per point and seed, each with its config loaded (and so checked).
void expand_runs(const fs::path& file, const std::vector<Point>& points,
                 const std::vector<int64_t>& seeds, const std::vector<std::string>& common,
                 Experiment& e) {
  std::set<std::string> seen;
  for (const auto& p : points) {
    if (!seen.insert(p.name).second)
      fail_input(file.string() + ": two points are both named '" + p.name +
                 "'; give zip 'names' that differ");
    for (int64_t seed : seeds) {
      RunSpec r;
      r.point = p.name;
      r.seed = seed;
      r.name = p.name + "_s" + std::to_string(seed);
      check_path_component(r.name, file.string() + ": the run name of point '" +
                                       p.name.substr(0, 80) + "' (give zip names)");
      r.overrides = p.overrides;
      r.axes = p.axes;
      std::vector<std::string> sets = common;
      for (const auto& [k, v] : p.overrides) sets.push_back(k + "=" + v);
      sets.push_back("train.seed=" + std::to_string(seed));
      try {
        r.config = config::load_config(e.base, sets);
      } catch (const Error& err) {
        throw Error(err.kind(), file.string() + ": run '" + r.name + "': " + err.what());
      }
      e.runs.push_back(std::move(r));
    }
  }
}

}  // namespace

Experiment load_experiment(const fs::path& file, const std::vector<std::string>& extra_sets) {
  Experiment e;
  e.file = file;
  const Node root = read_root(file);
  read_header(root, file, e);
  std::vector<std::string> common = common_sets(root, extra_sets);
  const config::Config base_cfg = config::load_config(e.base, common);
  const std::vector<int64_t> seeds = read_seeds(root, base_cfg);

  // The points: the budget's shapes, crossed with zip's, crossed with each grid key's values.
  std::vector<Point> points;
  if (const Node* bn = root.find("budget")) points = budget_points(*bn, base_cfg, e);
  if (const Node* z = root.find("zip")) points = cross(points, zip_points(*z, e));
  if (const Node* g = root.find("grid")) cross_grid(*g, seeds, e, points);
  if (points.empty()) points.push_back(Point{"base", {}, {}});

  if (const Node* ev = root.find("eval")) read_eval(*ev, e);
  if (const Node* t = root.find("teacher")) read_teacher(*t, file, seeds, e, common);
  expand_runs(file, points, seeds, common, e);
  if (e.teacher_cache_k > 0)
    for (const auto& r : e.runs)
      if (!r.is_teacher && r.config.kd.ratio > 0 &&
          r.config.kd.loss != config::KdLossType::forward_kl)
        fail_input(file.string() + ": run " + r.name + " distills with kd.loss " +
                   std::string(config::kKdLosses[static_cast<int>(r.config.kd.loss)]) +
                   ", but the teacher's cache_k makes its students distill from a top-k cache, "
                   "from which forward_kl alone can be computed");
  return e;
}

}  // namespace deepthin::sweep
