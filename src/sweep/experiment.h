// Experiments: a YAML file that expands into training runs.
//
//   name: depth_vs_width_125m            # optional; default the file name
//   description: …                       # optional, shown by --dry-run
//   base: ../configs/pretrain/mobilellm-125m.yaml   # the config every run starts from
//   set: {train.max_steps: 120000}       # overrides for every run (dotted keys or nested maps)
//   seeds: [1, 2]                        # every point runs once per seed (train.seed)
//   budget:                              # derive the shapes: a width and FFN per depth
//     params: 125e6
//     depths: [4, 12, 18, 24, 30, 42, 62]
//     head_dim: 64                       # widths are multiples of it
//     ffn_ratio: 3.0                     # the FFN width the solver aims for, × dim
//     kv_group: 1                        # query heads per key/value head
//     ffn_multiple: 16                   # FFN widths are multiples of it
//     tolerance: 0.02                    # |params − target| / target allowed
//   zip:                                 # lists of equal length, taken together
//     names: [unshared, shared, shared-32L]   # optional labels for the points
//     model.tie_embeddings: [false, true, true]
//     model.n_layers: [30, 30, 32]
//   grid:                                # every combination
//     model.ffn.type: [swiglu, relu]
//   teacher:                             # distillation: a teacher run trained first …
//     name: teacher
//     set: {model.dim: 384, train.max_steps: 2000}
//     # … or an existing one: path: runs/other/teacher
//     cache_k: 16                        # optional, a trained teacher only: one teacher pass
//
// With a teacher, every other run's kd.teacher points at it (kd.ratio decides whether a run uses
// it), and no student starts before the teacher has finished. With cache_k, the sweep then writes
// the teacher's top-k cache once (`deepthin kd cache`, into <experiment>/<teacher>_topk<k>) and
// every student with kd.ratio > 0 distills from it (kd.cache; forward_kl) instead of running the
// teacher; the students must share their data and train.seq_len.
//
// The points are budget shapes × zip entries × grid combinations; each runs once per seed. A run is
// named after its point ("L30-d512", "shared-32L", "type-relu", joined by '_') plus "_s<seed>".
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"

namespace deepthin::sweep {

struct Budget {
  double params = 0;
  std::vector<int64_t> depths;
  int64_t head_dim = 64;
  double ffn_ratio = 8.0 / 3.0;
  int64_t kv_group = 1;
  int64_t ffn_multiple = 16;
  double tolerance = 0.02;
};

struct Shape {
  int64_t n_layers = 0, dim = 0, n_heads = 0, n_kv_heads = 0, ffn_hidden = 0;
  int64_t params = 0;
};

// For each depth: the width (a multiple of head_dim, kv_group dividing its heads) whose FFN,
// sized to land on the budget, is nearest ffn_ratio × width; then that FFN rounded to ffn_multiple.
// Everything else (vocabulary, tying, FFN type, sharing) comes from `base`. Input error when no
// shape is within the tolerance.
std::vector<Shape> solve_budget(const config::ModelConfig& base, const Budget& b);

struct RunSpec {
  std::string name;   // point + "_s<seed>"
  std::string point;  // the swept values, without the seed
  int64_t seed = 0;
  std::vector<std::pair<std::string, std::string>> overrides;  // key, YAML value (for display)
  std::map<std::string, std::string> axes;                     // swept key -> value
  bool is_teacher = false;
  config::Config config;  // resolved (run.root/run.name set by the runner)
};

struct Experiment {
  std::string name;
  std::string description;
  std::filesystem::path file, base;
  std::vector<std::string> axis_keys;  // in order: budget (n_layers, dim), zip keys, grid keys
  bool has_budget = false;
  std::string teacher_run;      // the teacher trained by the sweep (a run name), or empty
  std::string teacher_path;     // an existing teacher, or empty
  int64_t teacher_cache_k = 0;  // > 0: the students distill from the teacher's top-k cache
  // eval: {tasks: [...], data: DIR}: zero-shot evaluation of every finished run (deepthin eval),
  // written to <run>/eval.json, which `deepthin report` reads. Empty tasks: none.
  std::vector<std::string> eval_tasks;
  std::filesystem::path eval_data;
  std::vector<RunSpec> runs;
};

// Reads and expands an experiment; `extra_sets` ("key=value", from the command line) apply to
// every run after the experiment's own. Every run's config is validated; errors name the
// experiment file and the run.
Experiment load_experiment(const std::filesystem::path& file,
                           const std::vector<std::string>& extra_sets = {});

// Tokens a run trains on with `world` ranks.
int64_t run_tokens(const config::Config& c, int world);

}  // namespace deepthin::sweep
