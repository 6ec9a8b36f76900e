// The trainer end to end through the CLI, on a tiny model and a generated corpus (CPU, fp32).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <sstream>

#include "config/config.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "eval/generate.h"
#include "model/decoder.h"
#include "test_util.h"
#include "util/json_io.h"

using namespace deepthin;
using namespace deepthin::test;

namespace {

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string text;
    uint32_t x = 11;
    const char* words[] = {"deep", "thin",   "models", "share",   "layers", "and",   "train",
                           "fast", "on",     "phones", "the",     "a",      "small", "vocabulary",
                           "of",   "tokens", "is",     "learned", "."};
    for (int d = 0; d < 300; ++d) {
      std::string doc;
      for (int k = 0; k < 80; ++k)
        doc +=
            std::string(words[(x = x * 1664525u + 1013904223u) >> 28 ? (x >> 27) % 19 : 0]) + " ";
      Json j = Json::object();
      j["text"] = doc;
      text += json::dump(j) + "\n";
    }
    write_text(tmp_ / "corpus.jsonl", text);
    data::TokenizerTrainOptions t;
    t.inputs = {(tmp_ / "corpus.jsonl").string()};
    t.vocab_size = 300;
    t.out_dir = tmp_ / "tok";
    data::train_tokenizer(t);
    data::PrepareOptions p;
    p.tokenizer = (tmp_ / "tok" / "tokenizer.model").string();
    p.inputs = t.inputs;
    p.format = data::InputFormat::jsonl;
    p.out = tmp_ / "data";
    p.val_fraction = 0.1;
    data::prepare_dataset(p);
    write_text(tmp_ / "cfg.yaml",
               R"(
run: {root: )" + (tmp_ / "runs").string() +
                   R"(}
model: {vocab_size: 300, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, max_seq_len: 64,
        layer_sharing: {scheme: immediate, repeats: 2}}
data: {path: )" + (tmp_ / "data").string() +
                   ", tokenizer: " + (tmp_ / "tok" / "tokenizer.model").string() + R"(}
train: {micro_batch_size: 4, grad_accum_steps: 2, seq_len: 32, max_steps: 8, device: cpu}
optimizer: {lr: 1.0e-2}
schedule: {warmup_steps: 2}
eval: {every: 4, batches: 2}
checkpoint: {every: 2, keep_last: 10}
log: {every: 1}
)");
  }

  CliResult train(const std::string& name, const std::string& extra = "",
                  const std::string& env = "") {
    return run_cli_env(
        env, "train " + (tmp_ / "cfg.yaml").string() + " --set run.name=" + name + " " + extra);
  }
  CliResult run_cli_env(const std::string& env, const std::string& args) {
    if (env.empty()) return run_cli(args);
    return run_cli_with_env(env, args);
  }
  fs::path run(const std::string& name) { return tmp_ / "runs" / name; }

  // Train losses by step from metrics.jsonl, as written (exact decimal text).
  std::map<int64_t, std::string> losses(const std::string& name) {
    std::map<int64_t, std::string> out;
    std::istringstream in(read_text(run(name) / "metrics.jsonl"));
    std::string line;
    while (std::getline(in, line)) {
      auto j = json::parse(line);
      if (json::as_string(*j.find("type")) == "train")
        out[json::as_int(*j.find("step"))] = json::dump(*j.find("loss"));
    }
    return out;
  }

  TempDir tmp_;
};

}  // namespace

TEST_F(TrainerTest, TrainsAndWritesTheRunDirectory) {
  auto r = train("a");
  ASSERT_EQ(r.status, 0) << r.err;
  auto summary = json::parse(r.out);
  EXPECT_EQ(json::as_int(*summary.find("steps")), 8);
  EXPECT_EQ(json::as_int(*summary.find("tokens")), 8 * 4 * 2 * 32);
  EXPECT_LT(json::as_double(*summary.find("val_loss")), std::log(300.0));  // learned something
  for (const char* f : {"config.yaml", "train.log", "metrics.jsonl"})
    EXPECT_TRUE(fs::exists(run("a") / f)) << f;
  EXPECT_FALSE(fs::is_empty(run("a") / "tensorboard"));
  for (const char* f : {"model.safetensors", "config.json", "deepthin.yaml", "tokenizer.model",
                        "optimizer.safetensors", "trainer_state.json", "checksums.json"})
    EXPECT_TRUE(fs::exists(run("a") / "checkpoints" / "step_8" / f)) << f;
  auto l = losses("a");
  ASSERT_EQ(l.size(), 8u);
  EXPECT_LT(std::stod(l[8]), std::stod(l[1]));
  auto metrics = read_text(run("a") / "metrics.jsonl");
  for (const char* k :
       {"\"lr\"", "\"grad_norm\"", "\"tokens_per_s\"", "\"peak_mem_gb\"", "\"val_ppl\""})
    EXPECT_NE(metrics.find(k), std::string::npos) << k;
  // A checkpoint is a model directory: generation runs from the run directory.
  auto g = run_cli("generate " + run("a").string() +
                   " --prompt 'deep thin' --max-new-tokens 8 --temperature 0");
  EXPECT_EQ(g.status, 0) << g.err;
  EXPECT_EQ(g.out.rfind("deep thin", 0), 0u) << g.out;
}

// N steps straight equal N/2 steps, a resume, and N/2 more: losses and weights bit for bit.
TEST_F(TrainerTest, ResumeIsBitIdentical) {
  ASSERT_EQ(train("straight").status, 0);
  auto half = train("split", "--until-step 4");
  ASSERT_EQ(half.status, 0) << half.err;
  EXPECT_TRUE(json::as_bool(*json::parse(half.out).find("interrupted")));
  auto rest = run_cli("train --resume " + run("split").string());
  ASSERT_EQ(rest.status, 0) << rest.err;
  EXPECT_EQ(losses("straight"), losses("split"));
  for (const char* f : {"model.safetensors", "optimizer.safetensors"})
    EXPECT_EQ(read_text(run("straight") / "checkpoints/step_8" / f),
              read_text(run("split") / "checkpoints/step_8" / f))
        << f;
}

// A crash while a checkpoint is being written leaves a run that resumes from the previous
// checkpoint and ends exactly where an uninterrupted run ends.
TEST_F(TrainerTest, KillDuringCheckpointWriteLeavesAResumableRun) {
  ASSERT_EQ(train("straight").status, 0);
  auto crashed = train("crash", "", "DEEPTHIN_FAULT=crash_in_checkpoint:6");
  EXPECT_NE(crashed.status, 0);
  EXPECT_TRUE(fs::exists(run("crash") / "checkpoints/step_4/checksums.json"));
  EXPECT_FALSE(fs::exists(run("crash") / "checkpoints/step_6"));
  auto resumed = run_cli("train --resume " + run("crash").string());
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resumed from"), std::string::npos);
  EXPECT_NE(resumed.err.find("step_4"), std::string::npos);
  EXPECT_EQ(read_text(run("straight") / "checkpoints/step_8/model.safetensors"),
            read_text(run("crash") / "checkpoints/step_8/model.safetensors"));
  EXPECT_EQ(losses("straight"), losses("crash"));
  for (const auto& e : fs::directory_iterator(run("crash") / "checkpoints"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

TEST_F(TrainerTest, CorruptCheckpointIsReportedAndFallbackOnlyWhenAsked) {
  ASSERT_EQ(train("c", "--until-step 4").status, 0);
  auto model = run("c") / "checkpoints/step_4/model.safetensors";
  std::string bytes = read_text(model);
  bytes[bytes.size() - 5] ^= 0x5A;
  write_text(model, bytes);
  auto r = run_cli("train --resume " + run("c").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("step_4 is corrupt: model.safetensors does not match its sha256"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("--resume-fallback"), std::string::npos);
  auto f = run_cli("train --resume " + run("c").string() + " --resume-fallback");
  EXPECT_EQ(f.status, 0) << f.err;
  EXPECT_NE(f.err.find("resumed from " + (run("c") / "checkpoints/step_2").string()),
            std::string::npos)
      << f.err;
}

TEST_F(TrainerTest, NonFiniteStepsAreSkippedThenStopTheRun) {
  auto ok = train("nan1", "", "DEEPTHIN_FAULT=nan_at:3");
  ASSERT_EQ(ok.status, 0) << ok.err;
  EXPECT_NE(ok.err.find("step 3: non-finite loss or gradient"), std::string::npos);
  auto bad =
      train("nan3", "--set train.max_bad_steps=3", "DEEPTHIN_FAULT=nan_at:3,nan_at:4,nan_at:5");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.err.find("3 non-finite steps in a row at step 5"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("last good checkpoint: " + (run("nan3") / "checkpoints/step_4").string()),
            std::string::npos);
  EXPECT_TRUE(fs::exists(run("nan3") / "checkpoints/step_4/checksums.json"));
  EXPECT_FALSE(fs::exists(run("nan3") / "checkpoints/step_6"));
}

TEST_F(TrainerTest, BadRunSetupsExitTwo) {
  auto r = train("x", "--set data.path=" + (tmp_ / "nowhere").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("data path not found"), std::string::npos) << r.err;
  r = train("x", "--set model.vocab_size=100");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("but model.vocab_size is 100"), std::string::npos) << r.err;
  r = train("x", "--set train.seq_len=100");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("train.seq_len: seq_len 100 exceeds model.max_seq_len 64"),
            std::string::npos)
      << r.err;
  ASSERT_EQ(train("twice", "--until-step 2").status, 0);
  r = train("twice");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("already holds checkpoints; pass --resume"), std::string::npos) << r.err;
}

class GenerateScheme : public ::testing::TestWithParam<std::pair<std::string, int64_t>> {};

// Greedy decoding with the KV cache equals full recomputation, for every sharing scheme.
TEST_P(GenerateScheme, KvCacheEqualsRecomputation) {
  auto [scheme, repeats] = GetParam();
  auto cfg = config::parse_config(
      "model: {vocab_size: 64, dim: 32, n_layers: 3, n_heads: 4, n_kv_heads: 2, "
      "max_seq_len: 64, init: {std: 0.3}, layer_sharing: {scheme: " +
          scheme + ", repeats: " + std::to_string(repeats) + "}}",
      "t");
  model::Decoder m(cfg.model);
  m->reset_parameters(21);
  eval::SampleOptions o;
  o.max_new_tokens = 30;
  o.temperature = 0;
  std::vector<int64_t> prompt = {1, 5, 9, 13, 2};
  auto cached = eval::generate(m, prompt, o);
  o.use_cache = false;
  auto full = eval::generate(m, prompt, o);
  EXPECT_EQ(cached, full);
  EXPECT_EQ(cached.size(), 30u);
  std::set<int64_t> distinct(cached.begin(), cached.end());
  EXPECT_GT(distinct.size(), 1u);  // not a degenerate constant sequence
  // Sampling is reproducible by seed and identical with and without the cache.
  o.temperature = 1.0;
  o.top_k = 10;
  o.top_p = 0.9;
  o.seed = 3;
  auto s_full = eval::generate(m, prompt, o);
  o.use_cache = true;
  EXPECT_EQ(eval::generate(m, prompt, o), s_full);
}

INSTANTIATE_TEST_SUITE_P(Generate, GenerateScheme,
                         ::testing::Values(std::pair{std::string("none"), int64_t{1}},
                                           std::pair{std::string("immediate"), int64_t{2}},
                                           std::pair{std::string("repeat_all_over"), int64_t{2}},
                                           std::pair{std::string("reverse"), int64_t{3}}),
                         [](const auto& info) {
                           return info.param.first + "_x" + std::to_string(info.param.second);
                         });

// One writer per run directory: while a training holds it, a second one (resuming it) exits 2 and
// names the holder; once the holder is gone the directory is free again.
TEST_F(TrainerTest, ASecondWriterOfARunDirectoryIsRefused) {
  const std::string cmd = std::string("DEEPTHIN_FAULT=hang_at:2 ") + DEEPTHIN_CLI + " train " +
                          (tmp_ / "cfg.yaml").string() +
                          " --set run.name=locked >/dev/null 2>&1 & echo $!";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  int pid = 0;
  ASSERT_EQ(std::fscanf(p, "%d", &pid), 1);
  ::pclose(p);
  for (int i = 0; i < 300 && !fs::exists(run("locked") / "metrics.jsonl"); ++i) ::usleep(100000);
  auto second = run_cli("train --resume " + run("locked").string());
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  EXPECT_EQ(second.status, 2) << second.err;
  EXPECT_NE(second.err.find("is in use by another deepthin process (pid " + std::to_string(pid) +
                            " on host "),
            std::string::npos)
      << second.err;
  auto third = run_cli("train --resume " + run("locked").string());  // the lock died with it
  EXPECT_EQ(third.status, 0) << third.err;
}

// Kill at any moment: a training is killed with SIGKILL thirty times at random moments (some land
// inside checkpoint writes), and each time the next start resumes it (or starts it again when no
// checkpoint was finished yet). Every start must succeed, and the final weights and optimizer state
// equal an uninterrupted run's bit for bit.
TEST_F(TrainerTest, ThirtyKillsAtRandomMomentsLoseNothing) {
  const std::string schedule =
      " --set train.max_steps=1000 --set checkpoint.every=4 --set checkpoint.keep_last=3"
      " --set eval.every=100 --set log.every=20";
  // One thread per process: the loop's processes then cost the same whatever else the machine runs
  // (spinning OpenMP workers under contention made a sanitized run ten times slower).
  const std::string env = "OMP_NUM_THREADS=1";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(train("straight", schedule, env).status, 0);
  std::printf("uninterrupted run: %.2f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  const fs::path dir = run("killed"), log = tmp_ / "killed.log";
  auto has_checkpoint = [&] {
    if (!fs::exists(dir / "checkpoints")) return false;
    for (const auto& e : fs::directory_iterator(dir / "checkpoints"))
      if (e.path().filename().string().rfind("step_", 0) == 0 &&
          e.path().filename().string().find(".tmp") == std::string::npos)
        return true;
    return false;
  };
  auto start = [&] {
    const std::string args = has_checkpoint() ? "train --resume " + dir.string()
                                              : "train " + (tmp_ / "cfg.yaml").string() +
                                                    " --set run.name=killed" + schedule;
    // exec: the kill reaches deepthin itself, not a shell around it.
    const std::string cmd =
        env + " exec " + std::string(DEEPTHIN_CLI) + " " + args + " >" + log.string() + " 2>&1";
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    return pid;
  };
  std::mt19937 rng(20261130);
  std::uniform_int_distribution<int> delay_ms(100, 700);
  int kills = 0, during_write = 0, starts = 0;
  while (kills < 30 && starts < 200) {
    const pid_t pid = start();
    ASSERT_GT(pid, 0);
    ++starts;
    ::usleep(static_cast<useconds_t>(delay_ms(rng)) * 1000);
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {  // it ended before the kill
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << read_text(log);
      break;
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    ++kills;
    if (fs::exists(dir / "checkpoints"))
      for (const auto& e : fs::directory_iterator(dir / "checkpoints"))
        if (e.path().filename().string().find(".tmp") != std::string::npos) {
          ++during_write;
          break;
        }
  }
  std::printf("%d kills over %d starts, %d inside a checkpoint write\n", kills, starts,
              during_write);
  ASSERT_EQ(kills, 30) << "the run finished after " << kills
                       << " kills: make it longer so that every kill lands";
  auto rest = run_cli_with_env(env, "train --resume " + dir.string());
  ASSERT_EQ(rest.status, 0) << rest.err;
  for (const char* f : {"model.safetensors", "optimizer.safetensors"})
    EXPECT_EQ(read_text(run("straight") / "checkpoints/step_1000" / f),
              read_text(dir / "checkpoints/step_1000" / f))
        << f;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}
