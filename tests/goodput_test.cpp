// Goodput: asynchronous checkpoints (the same files as synchronous ones, failures stop the run),
// the goodput record, and zero-shot tasks scored while training equal to `deepthin eval` on the
// checkpoint of the same step. CPU, a tiny model, through the CLI.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>

#include "data/prepare.h"
#include "data/tokenizer.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "util/json_io.h"

namespace fs = std::filesystem;
using namespace deepthin;
using namespace deepthin::test;

namespace {

class GoodputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* words[] = {"deep",  "thin",  "models", "share",  "layers", "and",
                           "train", "fast",  "on",     "phones", "the",    "a",
                           "small", "which", "is",     "learned"};
    std::string text;
    uint32_t x = 3;
    for (int d = 0; d < 200; ++d) {
      std::string doc;
      for (int k = 0; k < 60; ++k)
        doc += std::string(words[((x = x * 1664525u + 1013904223u) >> 27) % 16]) + " ";
      Json j = Json::object();
      j["text"] = doc;
      text += json::dump(j) + "\n";
    }
    write_text(root() / "corpus.jsonl", text);
    data::TokenizerTrainOptions t;
    t.inputs = {(root() / "corpus.jsonl").string()};
    t.vocab_size = 300;
    t.out_dir = root() / "tok";
    data::train_tokenizer(t);
    data::PrepareOptions p;
    p.tokenizer = (root() / "tok" / "tokenizer.model").string();
    p.inputs = t.inputs;
    p.format = data::InputFormat::jsonl;
    p.out = root() / "data";
    p.val_fraction = 0.1;
    data::prepare_dataset(p);
    // Two tasks in lm-eval's field layouts, 10 items each.
    std::string arc, piqa;
    for (int i = 0; i < 10; ++i) {
      Json a = Json::object();
      a["question"] = std::string("Which ") + words[i] + " models train?";
      a["choices"] = Json{{"text", {"deep thin ones", "the small phones", words[(i + 3) % 16]}},
                          {"label", {"A", "B", "C"}}};
      a["answerKey"] = std::string(1, static_cast<char>('A' + i % 3));
      arc += json::dump(a) + "\n";
      Json q = Json::object();
      q["goal"] = std::string("train ") + words[i];
      q["sol1"] = "share layers and train fast";
      q["sol2"] = std::string("a ") + words[(i + 5) % 16] + " on phones";
      q["label"] = i % 2;
      piqa += json::dump(q) + "\n";
    }
    write_text(root() / "tasks" / "arc_easy.jsonl", arc);
    write_text(root() / "tasks" / "piqa.jsonl", piqa);
    write_text(root() / "cfg.yaml",
               "run: {root: " + (root() / "runs").string() +
                   "}\nmodel: {vocab_size: 300, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, "
                   "max_seq_len: 64}\ndata: {path: " +
                   (root() / "data").string() +
                   ", tokenizer: " + (root() / "tok" / "tokenizer.model").string() +
                   "}\ntrain: {micro_batch_size: 4, seq_len: 32, max_steps: 10, device: cpu}\n"
                   "optimizer: {lr: 1.0e-2}\nschedule: {warmup_steps: 2}\n"
                   "eval: {every: 5, batches: 2, tasks: [arc_easy, piqa], tasks_every: 5, "
                   "tasks_data: " +
                   (root() / "tasks").string() +
                   "}\n"
                   "checkpoint: {every: 5, keep_last: 5}\nlog: {every: 1, tensorboard: false}\n");
  }
  const fs::path& root() const { return tmp_.path(); }
  CliResult train(const std::string& name, const std::string& extra = "",
                  const std::string& env = "") {
    const std::string args =
        "train " + (root() / "cfg.yaml").string() + " --set run.name=" + name + " " + extra;
    return env.empty() ? run_cli(args) : run_cli_with_env(env, args);
  }
  std::vector<Json> records(const std::string& run, const std::string& type) const {
    std::ifstream in(root() / "runs" / run / "metrics.jsonl");
    std::vector<Json> out;
    std::string line;
    while (std::getline(in, line)) {
      Json j = json::parse(line);
      if (j["type"] == type) out.push_back(j);
    }
    return out;
  }
  fs::path checkpoint(const std::string& run, int step) const {
    return root() / "runs" / run / "checkpoints" / ("step_" + std::to_string(step));
  }
  TempDir tmp_;
};

}  // namespace

TEST_F(GoodputTest, AsynchronousCheckpointsHoldWhatSynchronousOnesHold) {
  ASSERT_EQ(train("async").status, 0);
  ASSERT_EQ(train("sync", "--set checkpoint.async=false").status, 0);

  for (int step : {5, 10}) {
    // (deepthin.yaml differs by the run's name and checkpoint.async, and the CPU generator's state
    // by process: LibTorch seeds it per process, and a resume restores it.)
    for (const char* f :
         {"model.safetensors", "optimizer.safetensors", "config.json", "tokenizer.model"})
      EXPECT_TRUE(read_text(checkpoint("async", step) / f) ==
                  read_text(checkpoint("sync", step) / f))
          << f << " at step " << step;
    Json a = json::parse(read_text(checkpoint("async", step) / "trainer_state.json"));
    Json s = json::parse(read_text(checkpoint("sync", step) / "trainer_state.json"));
    for (const char* k : {"step", "tokens", "loader"}) EXPECT_EQ(a[k], s[k]) << k;
  }
  // The goodput record: the share of the wall clock that went to steps, and where the rest went.
  const auto g = records("async", "goodput");
  ASSERT_EQ(g.size(), 1u);
  EXPECT_GT(g[0]["goodput"].get<double>(), 0.0);
  EXPECT_LE(g[0]["goodput"].get<double>(), 1.0);
  EXPECT_EQ(g[0]["checkpoints"].get<int64_t>(), 2);
  EXPECT_GT(g[0]["eval_s"].get<double>(), 0.0);
  EXPECT_NE(read_text(root() / "runs" / "async" / "train.log").find("goodput "), std::string::npos);
}

// Snapshots reuse one block of host memory: the second copy lands where the first did and holds
// the new values; another layout gets its own block; dtypes convert as asked.
TEST(HostStaging, ReusesItsMemoryAndCopiesExactly) {
  train::HostStaging st;
  storage::TensorList a = {{"w", at::arange(12, at::kFloat).view({3, 4})},
                           {"b", at::arange(5, at::kDouble)}};
  storage::TensorList o = {{"m", at::full({7}, 2.5, at::kFloat)}};
  auto first = st.copy({&a, &o}, {std::nullopt, std::nullopt});
  ASSERT_EQ(first.size(), 2u);
  EXPECT_TRUE(at::equal(first[0][0].second, a[0].second));
  EXPECT_EQ(first[0][1].second.scalar_type(), at::kDouble);
  EXPECT_TRUE(at::equal(first[1][0].second, o[0].second));
  EXPECT_EQ(st.bytes(), 64 + 64 + 64);  // each tensor 64-byte aligned: 48, 40 and 28 bytes
  const void* where = first[0][0].second.data_ptr();
  a[0].second.mul_(-3);
  o[0].second.fill_(-1);
  auto second = st.copy({&a, &o}, {std::nullopt, std::nullopt});
  EXPECT_EQ(second[0][0].second.data_ptr(), where);
  EXPECT_EQ(second[0][0].second[2][3].item<float>(), -33.0f);
  EXPECT_EQ(second[1][0].second[6].item<float>(), -1.0f);
  // Converted to float on the way; a new layout, a new block.
  auto third = st.copy({&a}, {at::kFloat});
  EXPECT_EQ(third[0][1].second.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(third[0][1].second, at::arange(5, at::kFloat)));
  EXPECT_EQ(st.bytes(), 64 + 64);
}

TEST_F(GoodputTest, AFailedBackgroundWriteStopsTheRunWithItsError) {
  auto r = train("fail", "--set checkpoint.every=2", "DEEPTHIN_FAULT=fail_in_checkpoint:4");
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("the checkpoint write failed"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(checkpoint("fail", 2)));
  EXPECT_FALSE(fs::exists(checkpoint("fail", 4)));  // nothing that looks complete
  for (const auto& e : fs::directory_iterator(root() / "runs" / "fail" / "checkpoints"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  // It stopped at the step boundary after the failure, not at the end of the run.
  const auto t = records("fail", "train");
  ASSERT_FALSE(t.empty());
  EXPECT_LT(t.back()["step"].get<int64_t>(), 10);
}

TEST_F(GoodputTest, TasksScoredWhileTrainingEqualDeepthinEvalOnTheCheckpoint) {
  ASSERT_EQ(train("tasks").status, 0);
  const auto rec = records("tasks", "tasks");
  ASSERT_EQ(rec.size(), 2u);  // step 5 and the end (step 10)
  for (const auto& r : rec) {
    const int step = static_cast<int>(r["step"].get<int64_t>());
    const fs::path out = root() / ("eval_" + std::to_string(step) + ".json");
    auto e =
        run_cli("eval " + checkpoint("tasks", step).string() + " --tasks arc_easy,piqa --data " +
                (root() / "tasks").string() + " --device cpu --json " + out.string());
    ASSERT_EQ(e.status, 0) << e.err;
    const Json want = json::parse(read_text(out))["tasks"];
    for (const char* task : {"arc_easy", "piqa"}) {
      EXPECT_EQ(r[std::string("acc/") + task].get<double>(), want[task]["acc"].get<double>())
          << task << " at step " << step;
      EXPECT_EQ(r[std::string("acc_norm/") + task].get<double>(),
                want[task]["acc_norm"].get<double>())
          << task << " at step " << step;
    }
  }
}
