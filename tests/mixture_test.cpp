// Weighted mixtures of data sources (data/mixture.h, data.sources): proportions over a real run,
// the logged per-source counts against what the loader served, exact resumes (also onto another
// world size), and changed weights refused unless asked for.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>
#include <map>

#include "data/loader.h"
#include "test_util.h"
#include "util/json_io.h"

namespace fs = std::filesystem;
using namespace deepthin;
using namespace deepthin::test;

namespace {

class MixtureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Three sources of different sizes: a runs through several epochs, c through less than one.
    const int docs[] = {30, 60, 400};
    for (int i = 0; i < 3; ++i)
      paths_.push_back(write_token_dataset(tmp_.path() / names_[i], 256, docs[i], 11u + i));
  }
  std::string config(const std::vector<double>& weights, int steps) const {
    std::string s = "run: {root: " + (tmp_.path() / "runs").string() +
                    "}\nmodel: {vocab_size: 256, dim: 16, n_layers: 1, n_heads: 2, n_kv_heads: 1, "
                    "max_seq_len: 8, ffn: {hidden_dim: 32}}\ndata:\n  sources:\n";
    for (size_t i = 0; i < weights.size(); ++i)
      s += "    - {name: " + names_[i] + ", path: " + paths_[i].string() +
           ", weight: " + std::to_string(weights[i]) + "}\n";
    s += "train: {micro_batch_size: 2, seq_len: 8, max_steps: " + std::to_string(steps) +
         ", device: cpu, seed: 3}\nschedule: {warmup_steps: 1}\neval: {every: 0, batches: 1}\n"
         "checkpoint: {every: 0, keep_last: 2}\nlog: {every: 250, tensorboard: false}\n";
    return s;
  }
  std::vector<data::LoaderSource> sources(const std::vector<double>& weights) const {
    std::vector<data::LoaderSource> out;
    for (size_t i = 0; i < weights.size(); ++i)
      out.push_back({names_[i], weights[i], data::TokenDataset::open(paths_[i].string(), "train")});
    return out;
  }
  // The last record of a type in a run's metrics.jsonl.
  Json last_record(const std::string& run, const std::string& type) const {
    std::ifstream in(tmp_.path() / "runs" / run / "metrics.jsonl");
    std::string line;
    Json last;
    while (std::getline(in, line)) {
      Json j = json::parse(line);
      if (j["type"] == type) last = j;
    }
    return last;
  }

  TempDir tmp_;
  std::vector<std::string> names_ = {"a", "b", "c"};
  std::vector<fs::path> paths_;
};

}  // namespace

TEST_F(MixtureTest, ThreeSourcesFollowTheirWeightsAndTheLogSaysWhatWasServed) {
  const std::vector<double> w = {0.5, 0.3, 0.2};
  write_text(tmp_.path() / "mix.yaml", config(w, 2000));
  auto r = run_cli("train " + (tmp_.path() / "mix.yaml").string());
  ASSERT_EQ(r.status, 0) << r.err;
  const Json rec = last_record("mix", "train");
  ASSERT_EQ(rec["step"].get<int64_t>(), 2000);
  // What the loader serves for the same sources, seed and batch: counted window by window.
  data::Loader loader(sources(w), data::LoaderOptions{2, 8, 0, 1, 3, true, 0});
  std::map<int, int64_t> served;
  for (int step = 0; step < 2000; ++step)
    for (int s : loader.next().sources) served[s] += 8;
  const double total = 2000.0 * 2 * 8;
  const Json summary = json::parse(r.out);
  for (int s = 0; s < 3; ++s) {
    const int64_t logged = rec["tokens/" + names_[s]].get<int64_t>();
    EXPECT_EQ(logged, served[s]) << names_[s];
    EXPECT_EQ(summary["tokens_by_source"][names_[s]].get<int64_t>(), served[s]) << names_[s];
    EXPECT_NEAR(static_cast<double>(logged) / total, w[s], 0.01 * w[s]) << names_[s];
  }
  // Validation loss per source (each source's val split) and mixed: their weight-average.
  const Json ev = last_record("mix", "eval");
  double mixed = 0;
  for (int s = 0; s < 3; ++s) {
    ASSERT_TRUE(ev.contains("val_loss/" + names_[s])) << ev.dump();
    mixed += w[s] * ev["val_loss/" + names_[s]].get<double>();
  }
  EXPECT_NEAR(ev["val_loss"].get<double>(), mixed, 1e-9);
  EXPECT_NE(ev["val_loss/a"].get<double>(), ev["val_loss/c"].get<double>());
  // Source a (30 documents) ran out several times and the log said so.
  const std::string log = read_text(tmp_.path() / "runs" / "mix" / "train.log");
  EXPECT_NE(log.find("data: source a ran out and begins epoch 2"), std::string::npos);
  EXPECT_EQ(log.find("data: source c ran out"), std::string::npos);
  // The dry run prints the same proportions, and how many epochs of each source the run reads.
  auto dry = run_cli("train " + (tmp_.path() / "mix.yaml").string() + " --dry-run");
  ASSERT_EQ(dry.status, 0) << dry.err;
  EXPECT_NE(dry.out.find("50.00%"), std::string::npos) << dry.out;
  EXPECT_NE(dry.out.find("30.00%"), std::string::npos) << dry.out;
  EXPECT_NE(dry.out.find("20.00%"), std::string::npos) << dry.out;
}

TEST_F(MixtureTest, ResumeAtAnotherWorldSizeServesTheSameWindows) {
  const std::vector<double> w = {0.5, 0.3, 0.2};
  const int64_t B = 3;
  // Uninterrupted, one rank: the mixed stream's (source, window) sequence.
  data::Loader one(sources(w), data::LoaderOptions{B, 8, 0, 1, 7, true, 2});
  std::vector<std::pair<int, int64_t>> want;
  for (int i = 0; i < 300; ++i) {
    auto b = one.next();
    for (int64_t j = 0; j < B; ++j) want.emplace_back(b.sources[j], b.window_ids[j]);
  }
  // Two ranks for 50 steps, the state saved as a checkpoint saves it, then one rank.
  std::vector<std::pair<int, int64_t>> got;
  Json saved;
  {
    data::Loader r0(sources(w), data::LoaderOptions{B, 8, 0, 2, 7, true, 2});
    data::Loader r1(sources(w), data::LoaderOptions{B, 8, 1, 2, 7, true, 2});
    for (int step = 0; step < 50; ++step)
      for (auto* l : {&r0, &r1}) {
        auto b = l->next();
        for (int64_t j = 0; j < B; ++j) got.emplace_back(b.sources[j], b.window_ids[j]);
      }
    saved = json::parse(json::dump(r0.state().to_json()));
    EXPECT_EQ(saved.dump(), r1.state().to_json().dump());
  }
  data::Loader after(sources(w), data::LoaderOptions{B, 8, 0, 1, 7, true, 2});
  after.next();  // prefetching had begun before the restore
  after.set_state(data::LoaderState::from_json(saved, "state"));
  while (got.size() < want.size()) {
    auto b = after.next();
    for (int64_t j = 0; j < B; ++j) got.emplace_back(b.sources[j], b.window_ids[j]);
  }
  EXPECT_TRUE(got == want);
}

TEST_F(MixtureTest, KilledAndResumedRunEqualsAnUninterruptedOne) {
  const std::vector<double> w = {0.5, 0.3, 0.2};
  std::string cfg = config(w, 40);
  cfg.replace(cfg.find("every: 0, keep_last"), 8, "every: 40");
  write_text(tmp_.path() / "whole.yaml", cfg);
  write_text(tmp_.path() / "parts.yaml", cfg);
  ASSERT_EQ(run_cli("train " + (tmp_.path() / "whole.yaml").string()).status, 0);
  auto first = run_cli("train " + (tmp_.path() / "parts.yaml").string() + " --until-step 17");
  ASSERT_EQ(first.status, 0) << first.err;
  auto rest = run_cli("train --resume " + (tmp_.path() / "runs" / "parts").string());
  ASSERT_EQ(rest.status, 0) << rest.err;
  const auto ck = [&](const std::string& run) {
    return read_text(tmp_.path() / "runs" / run / "checkpoints" / "step_40" / "model.safetensors");
  };
  EXPECT_TRUE(ck("whole") == ck("parts")) << "the resumed run's weights differ";
  EXPECT_EQ(last_record("whole", "train")["tokens/b"], last_record("parts", "train")["tokens/b"]);
}

TEST_F(MixtureTest, ChangedWeightsAreRefusedUnlessAllowed) {
  write_text(tmp_.path() / "m.yaml", config({0.5, 0.3, 0.2}, 30));
  ASSERT_EQ(run_cli("train " + (tmp_.path() / "m.yaml").string() + " --until-step 10").status, 0);
  write_text(tmp_.path() / "m2.yaml", config({0.5, 0.1, 0.4}, 30));
  const std::string run = (tmp_.path() / "runs" / "m").string();
  auto refused = run_cli("train " + (tmp_.path() / "m2.yaml").string() + " --resume " + run);
  EXPECT_EQ(refused.status, 2);
  EXPECT_NE(refused.err.find("source 'b' had weight 0.3"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("data.allow_mixture_change"), std::string::npos) << refused.err;
  auto allowed = run_cli("train " + (tmp_.path() / "m2.yaml").string() + " --resume " + run +
                         " --set data.allow_mixture_change=true");
  ASSERT_EQ(allowed.status, 0) << allowed.err;
  const std::string log = read_text(tmp_.path() / "runs" / "m" / "train.log");
  EXPECT_NE(log.find("source 'b' continues at window"), std::string::npos);
}
