// Sweeps: experiment expansion, the parameter-budget solver, the runner (skip, resume, failures,
// parallel runs) and the report, on tiny models on the CPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "data/prepare.h"
#include "model/param_count.h"
#include "sweep/experiment.h"
#include "test_util.h"
#include "util/error.h"
#include "util/json_io.h"
#include "util/strings.h"

using namespace deepthin;
using namespace deepthin::test;

namespace {

TEST(SweepBudget, DepthVsWidth125mIsThePapersFamily) {
  auto e = sweep::load_experiment(source_dir() / "experiments" / "depth_vs_width_125m.yaml");
  const std::vector<std::pair<int64_t, int64_t>> paper{{4, 1280}, {12, 768}, {18, 640}, {24, 576},
                                                       {30, 512}, {42, 448}, {62, 384}};
  ASSERT_EQ(e.runs.size(), paper.size());
  int64_t lo = INT64_MAX, hi = 0;
  for (size_t i = 0; i < paper.size(); ++i) {
    const auto& m = e.runs[i].config.model;
    EXPECT_EQ(m.n_layers, paper[i].first);
    EXPECT_EQ(m.dim, paper[i].second);
    EXPECT_EQ(m.n_heads * 64, m.dim);
    const int64_t p = model::count_params(m).total;
    EXPECT_NEAR(static_cast<double>(p), 125e6, 0.02 * 125e6) << e.runs[i].name;
    lo = std::min(lo, p);
    hi = std::max(hi, p);
  }
  EXPECT_LT(static_cast<double>(hi) / static_cast<double>(lo) - 1.0, 0.02);
  EXPECT_EQ(e.runs[0].name, "L4-d1280_s1234");
  EXPECT_TRUE(e.has_budget);
}

TEST(SweepBudget, SolverHonoursKvGroupAndTolerance) {
  config::ModelConfig base;  // MobileLLM-125M's shape
  sweep::Budget b;
  b.params = 30e6;
  b.depths = {6, 20};
  b.head_dim = 32;
  b.kv_group = 4;
  b.ffn_ratio = 2.5;
  auto shapes = sweep::solve_budget(base, b);
  ASSERT_EQ(shapes.size(), 2u);
  for (const auto& s : shapes) {
    EXPECT_EQ(s.dim % 32, 0);
    EXPECT_EQ(s.n_heads % 4, 0);
    EXPECT_EQ(s.n_kv_heads * 4, s.n_heads);
    EXPECT_EQ(s.ffn_hidden % 16, 0);
    EXPECT_LE(std::abs(static_cast<double>(s.params) - 30e6), 0.02 * 30e6);
    config::ModelConfig m = base;
    m.n_layers = s.n_layers;
    m.dim = s.dim;
    m.n_heads = s.n_heads;
    m.n_kv_heads = s.n_kv_heads;
    m.head_dim = 32;
    m.ffn.hidden_dim = s.ffn_hidden;
    EXPECT_EQ(model::count_params(m).total, s.params);
  }
  EXPECT_GT(shapes[0].dim, shapes[1].dim);  // deeper is thinner
  // A budget below the embedding alone has no shape.
  b.params = 1e6;
  try {
    sweep::solve_budget(base, b);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), 2);
    EXPECT_NE(std::string(e.what()).find("no shape with 6 layers"), std::string::npos) << e.what();
  }
}

class SweepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_token_dataset(tmp_.path(), 128, 80, 3);
    write_text(tmp_ / "base.yaml", R"(
model: {vocab_size: 128, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, max_seq_len: 32}
data: {path: )" + (tmp_ / "data").string() +
                                       R"(}
train: {micro_batch_size: 2, seq_len: 16, max_steps: 4, device: cpu}
optimizer: {lr: 1.0e-2}
schedule: {warmup_steps: 1}
eval: {every: 0, batches: 2}
checkpoint: {every: 2, keep_last: 5, async: false}
log: {every: 1}
)");
    // (Synchronous checkpoints: the failure test kills every run at step 3 and expects the step-2
    // checkpoint, which an asynchronous write could still have in flight at that moment.)
    write_text(tmp_ / "exp.yaml", R"(
description: "three tiny points"
base: base.yaml
set: {train: {micro_batch_size: 2}}
zip:
  names: [ffn-swiglu, ffn-relu, shared]
  model.ffn.type: [swiglu, relu, swiglu]
  model.layer_sharing: [{scheme: none, repeats: 1}, {scheme: none, repeats: 1}, {scheme: immediate, repeats: 2}]
)");
  }
  CliResult sweep(const std::string& args, const std::string& env = "") {
    return run_cli_with_env(env, "sweep " + (tmp_ / "exp.yaml").string() + " --runs-root " +
                                     (tmp_ / "runs").string() + " " + args);
  }
  fs::path run(const std::string& name) { return tmp_ / "runs" / "exp" / name; }
  std::string status(const std::string& name) {
    return json::as_string(
        json::at(json::parse(read_text(run(name) / "sweep_status.json")), "status", "t"));
  }
  TempDir tmp_;
};

TEST_F(SweepTest, ExpansionGridZipSeedsAndOverrides) {
  write_text(tmp_ / "grid.yaml", R"(
base: base.yaml
seeds: [7, 8]
zip:
  model.n_layers: [1, 2, 3]
grid:
  model.ffn.type: [swiglu, gelu]
  optimizer.lr: [1.0e-3, 2.0e-3]
)");
  auto e = sweep::load_experiment(tmp_ / "grid.yaml");
  ASSERT_EQ(e.runs.size(), 3u * 2 * 2 * 2);
  std::set<std::string> names;
  for (const auto& r : e.runs) names.insert(r.name);
  EXPECT_EQ(names.size(), e.runs.size());
  EXPECT_EQ(e.runs[0].name, "n_layers-1_type-swiglu_lr-1.0e-3_s7");
  EXPECT_EQ(e.runs[1].name, "n_layers-1_type-swiglu_lr-1.0e-3_s8");
  const auto& last = e.runs.back();
  EXPECT_EQ(last.config.model.n_layers, 3);
  EXPECT_EQ(last.config.model.ffn.type, config::FfnType::gelu);
  EXPECT_DOUBLE_EQ(last.config.optimizer.lr, 2e-3);
  EXPECT_EQ(last.config.train.seed, 8);
  EXPECT_EQ(e.axis_keys,
            (std::vector<std::string>{"model.n_layers", "model.ffn.type", "optimizer.lr"}));
  // The dry run as JSON.
  auto r = run_cli("sweep " + (tmp_ / "grid.yaml").string() + " --dry-run --json");
  ASSERT_EQ(r.status, 0) << r.err;
  auto list = json::parse(r.out);
  ASSERT_EQ(json::as_array(list).size(), 24u);
  const auto& j = json::as_array(list)[23];
  EXPECT_EQ(json::as_int(json::at(j, "n_layers", "t")), 3);
  EXPECT_EQ(json::as_int(json::at(j, "dim", "t")), 32);
  EXPECT_EQ(json::as_int(json::at(j, "params", "t")), model::count_params(last.config.model).total);
  EXPECT_EQ(json::as_int(json::at(j, "tokens", "t")), 4 * 2 * 16);
  auto table = run_cli("sweep " + (tmp_ / "grid.yaml").string() + " --dry-run");
  EXPECT_NE(table.out.find("optimizer.lr=2.0e-3"), std::string::npos) << table.out;
}

TEST_F(SweepTest, BadExperimentsSayWhereAndWhat) {
  auto expect_error = [&](const std::string& yaml, const std::string& what) {
    write_text(tmp_ / "bad.yaml", yaml);
    auto r = run_cli("sweep " + (tmp_ / "bad.yaml").string() + " --dry-run");
    EXPECT_EQ(r.status, 2) << yaml;
    EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
  };
  expect_error("base: base.yaml\nzip: {model.n_layers: [1, 2], model.dim: [32]}\n", "bad.yaml:2:");
  expect_error("base: base.yaml\nzip: {model.n_layers: [1, 2], model.dim: [32]}\n",
               "zip lists must have equal lengths");
  expect_error("base: base.yaml\ngird: {model.dim: [32]}\n", "did you mean 'grid'?");
  expect_error("base: missing.yaml\n", "base config");
  expect_error("base: base.yaml\nzip: {model.n_heads: [4, 3]}\n", "run 'n_heads-3_s1234'");
  expect_error("base: base.yaml\nzip: {names: [a, a], model.dim: [32, 64]}\n",
               "two points are both named 'a'");
  expect_error("base: base.yaml\nbudget: {params: 1e3, depths: [2]}\n", "no shape with 2 layers");
  expect_error("base: base.yaml\neval: {tasks: [piqa, mmlu], data: d}\n", "unknown task 'mmlu'");
  expect_error("base: base.yaml\neval: {tasks: all}\n", "'data'");
  expect_error("base: base.yaml\neval: {tasks: [piqa], data: d, shots: 5}\n",
               "unknown key 'shots'");
  // Found by fuzzing (tests/fuzz/regressions/fuzz_experiment): a count beyond int64 was converted
  // with undefined behaviour.
  expect_error("base: base.yaml\nseeds: [1, 8888888888888888888882]\n", "to 2^62");
  expect_error("base: base.yaml\nseeds: [.inf]\n", "must be");
  // Also by fuzzing: a budget of 16e25 parameters overflowed the solver's FFN width.
  expect_error("base: base.yaml\nbudget: {params: 16e25, depths: [4, 12]}\n", "params <= 1e13");
  expect_error("base: base.yaml\nbudget: {params: nan, depths: [4]}\n", "'params' must be a number, got 'nan'");
  expect_error("base: base.yaml\nbudget: {params: 1e6, depths: [5000]}\n", "at most 4096");
}

TEST_F(SweepTest, FailuresAreRecordedThenResumedThenSkippedAndReported) {
  // 1. Every run dies at step 3 (after the step-2 checkpoint): all recorded as failed, exit 1.
  auto first = sweep("", "DEEPTHIN_FAULT=exit_at:3");
  EXPECT_EQ(first.status, 1) << first.err;
  for (const char* n : {"ffn-swiglu_s1234", "ffn-relu_s1234", "shared_s1234"}) {
    EXPECT_EQ(status(n), "failed") << n;
    EXPECT_TRUE(fs::exists(run(n) / "checkpoints" / "step_2")) << n;
  }
  EXPECT_NE(first.err.find("FAILED (exit 137)"), std::string::npos) << first.err;
  EXPECT_NE(first.out.find("\"failed\":3"), std::string::npos) << first.out;
  // 2. Again, two at a time: each resumes from step 2 and finishes.
  auto second = sweep("--parallel 2");
  ASSERT_EQ(second.status, 0) << second.err;
  EXPECT_NE(second.out.find("\"done\":3"), std::string::npos) << second.out;
  for (const char* n : {"ffn-swiglu_s1234", "ffn-relu_s1234", "shared_s1234"}) {
    EXPECT_EQ(status(n), "done");
    EXPECT_NE(read_text(run(n) / "train.log").find("resumed from"), std::string::npos) << n;
  }
  // The resumed run ends bit for bit where an uninterrupted training of the same config ends.
  auto straight = run_cli("train " + (run("ffn-relu_s1234") / "run.yaml").string() +
                          " --set run.root=" + (tmp_ / "straight").string());
  ASSERT_EQ(straight.status, 0) << straight.err;
  EXPECT_EQ(read_text(run("ffn-relu_s1234") / "checkpoints/step_4/model.safetensors"),
            read_text(tmp_ / "straight/ffn-relu_s1234/checkpoints/step_4/model.safetensors"));
  // 3. Once more: nothing to do.
  auto third = sweep("");
  ASSERT_EQ(third.status, 0) << third.err;
  EXPECT_NE(third.out.find("\"done\":0,\"skipped\":3"), std::string::npos) << third.out;
  // A changed experiment does not silently reuse the old runs.
  auto changed = sweep("--set optimizer.lr=0.5");
  EXPECT_EQ(changed.status, 2);
  EXPECT_NE(changed.err.find("exists with a different config"), std::string::npos) << changed.err;

  // 4. The report.
  auto rep = run_cli("report " + (tmp_ / "runs" / "exp").string());
  ASSERT_EQ(rep.status, 0) << rep.err;
  auto csv = split(read_text(tmp_ / "runs/exp/results.csv"), '\n');
  ASSERT_GE(csv.size(), 4u);
  EXPECT_EQ(csv[0].substr(0, 22), "run,point,seed,status,");
  // The validation loss in the table is the run's last eval line.
  double val = NAN;
  for (const auto& line : split(read_text(run("shared_s1234") / "metrics.jsonl"), '\n'))
    if (line.find("\"eval\"") != std::string::npos)
      val = json::as_double(json::at(json::parse(line), "val_loss", "t"));
  bool found = false;
  for (const auto& line : csv) {
    if (line.rfind("shared_s1234,", 0) != 0) continue;
    found = true;
    auto cells = split(line, ',');
    EXPECT_EQ(cells[3], "done");
    EXPECT_EQ(cells[11], "immediate");
    EXPECT_EQ(cells[14], "4");  // effective layers
    EXPECT_NEAR(std::stod(cells[17]), val, 1e-5);
  }
  EXPECT_TRUE(found);
  auto md = read_text(tmp_ / "runs/exp/results.md");
  EXPECT_NE(md.find("| ffn-relu | 2 × 32"), std::string::npos) << md;
  EXPECT_NE(md.find("Best: **"), std::string::npos) << md;
  EXPECT_EQ(md.find("Zero-shot"), std::string::npos);  // no run was evaluated
  // Runs evaluated by `deepthin eval` (eval.json): zero-shot columns and a table per point.
  write_text(
      run("shared_s1234") / "eval.json",
      R"({"tasks": {"piqa": {"acc": 0.625, "acc_norm": 0.5, "n": 8}, "boolq": {"acc": 0.25, "acc_norm": 0.75, "n": 8},)"
      R"( "average": {"acc": 0.4375, "acc_norm": 0.625}}})");
  ASSERT_EQ(run_cli("report " + (tmp_ / "runs" / "exp").string()).status, 0);
  csv = split(read_text(tmp_ / "runs/exp/results.csv"), '\n');
  EXPECT_NE(csv[0].find(",zs_avg_acc,zs_avg_acc_norm,zs_boolq_acc,zs_boolq_acc_norm,zs_piqa_acc,"
                        "zs_piqa_acc_norm"),
            std::string::npos)
      << csv[0];
  for (const auto& line : csv) {
    if (line.rfind("shared_s1234,", 0) == 0) {
      EXPECT_NE(line.find(",0.4375,0.6250,0.2500,0.7500,0.6250,0.5000"), std::string::npos) << line;
    }
  }
  md = read_text(tmp_ / "runs/exp/results.md");
  EXPECT_NE(md.find("## Zero-shot accuracy"), std::string::npos) << md;
  EXPECT_NE(md.find("| shared | 0.6250 | 0.4375 | 0.7500 | 0.5000 |"), std::string::npos) << md;
  const bool have_matplotlib =
      std::system((std::string(DEEPTHIN_PYTHON) + " -c 'import matplotlib' 2>/dev/null").c_str()) ==
      0;
  if (have_matplotlib) {
    for (const char* png : {"val_loss.png", "loss_curves.png"}) {
      auto bytes = read_text(tmp_ / "runs/exp" / png);
      ASSERT_GT(bytes.size(), 1000u) << png;
      EXPECT_EQ(bytes.substr(1, 3), "PNG") << png;
    }
  } else {
    EXPECT_NE(rep.err.find("no plots"), std::string::npos);
  }
}

}  // namespace
