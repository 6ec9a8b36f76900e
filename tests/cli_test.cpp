// The CLI end to end: params, init, score.
#include <gtest/gtest.h>

#include "test_util.h"
#include "util/json_io.h"

using namespace deepthin;
using namespace deepthin::test;

TEST(ParamsCli, PresetTotalsAreThePapers) {
  struct P {
    const char* name;
    int64_t total;
    int64_t eff;
  };
  for (const P& p : {P{"mobilellm-125m", 124635456, 30}, P{"mobilellm-350m", 345355200, 32},
                     P{"mobilellm-600m", 603188352, 40}, P{"mobilellm-1b", 1005461760, 54},
                     P{"mobilellm-1.5b", 1511188800, 54}, P{"mobilellm-125m-ls", 124635456, 60},
                     P{"mobilellm-350m-ls", 345355200, 64}}) {
    auto r = run_cli("params " + preset(p.name).string() + " --json");
    ASSERT_EQ(r.status, 0) << r.err;
    auto j = json::parse(r.out);
    EXPECT_EQ(json::as_int(*j.find("total")), p.total) << p.name;
    EXPECT_EQ(json::as_int(*j.find("effective_layers")), p.eff) << p.name;
    for (const char* k : {"embedding", "non_embedding", "flops_per_token"})
      EXPECT_TRUE(j.contains(k)) << k;
    EXPECT_EQ(json::as_int(*j.find("embedding")) + json::as_int(*j.find("non_embedding")), p.total);
  }
}

TEST(InitCli, WritesModelConfigAndResolvedYaml) {
  TempDir tmp;
  auto cfg = write_text(tmp / "tiny.yaml",
                        "model: {vocab_size: 64, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, "
                        "layer_sharing: {scheme: immediate, repeats: 2}}\n");
  auto r = run_cli("init " + cfg.string() + " --out " + (tmp / "m").string() + " --seed 3");
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* f : {"model.safetensors", "config.json", "deepthin.yaml"})
    EXPECT_TRUE(fs::exists(tmp / "m" / f)) << f;
  EXPECT_NE(read_text(tmp / "m" / "deepthin.yaml").find("scheme: immediate"), std::string::npos);
  // No temporary directory is left behind.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(tmp.path())) ++entries;
  EXPECT_EQ(entries, 2);

  auto again = run_cli("init " + cfg.string() + " --out " + (tmp / "m").string());
  EXPECT_EQ(again.status, 2);
  EXPECT_NE(again.err.find("already exists; pass --force"), std::string::npos) << again.err;
  EXPECT_EQ(run_cli("init " + cfg.string() + " --out " + (tmp / "m").string() + " --force").status,
            0);
}

TEST(ScoreCli, ScoresAndSumsLogProbs) {
  TempDir tmp;
  auto cfg =
      write_text(tmp / "tiny.yaml",
                 "model: {vocab_size: 64, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2}\n");
  ASSERT_EQ(run_cli("init " + cfg.string() + " --out " + (tmp / "m").string()).status, 0);
  write_text(tmp / "t.txt", "1 2 3 4\n\n5 6 7 8 9 10\n");
  auto r = run_cli("score " + (tmp / "m").string() + " --tokens " + (tmp / "t.txt").string());
  ASSERT_EQ(r.status, 0) << r.err;
  auto seqs = json::as_array(*json::parse(r.out).find("sequences"));
  ASSERT_EQ(seqs.size(), 2u);
  EXPECT_EQ(seqs[0].find("logprobs")->size(), 3u);
  EXPECT_EQ(seqs[1].find("logprobs")->size(), 5u);
  double sum = 0;
  for (const auto& v : json::as_array(*seqs[1].find("logprobs"))) {
    EXPECT_LT(json::as_double(v), 0.0);
    sum += json::as_double(v);
  }
  EXPECT_NEAR(json::as_double(*seqs[1].find("sum")), sum, 1e-9);
}

TEST(ScoreCli, BadTokenFilesExitTwoWithLine) {
  TempDir tmp;
  auto cfg = write_text(
      tmp / "tiny.yaml",
      "model: {vocab_size: 64, dim: 32, n_layers: 1, n_heads: 4, n_kv_heads: 2, max_seq_len: 8}\n");
  ASSERT_EQ(run_cli("init " + cfg.string() + " --out " + (tmp / "m").string()).status, 0);
  struct C {
    const char* text;
    const char* expect;
  };
  for (const C& c : {C{"1 2\n3 64\n", "t.txt:2: token id 64 is outside the vocabulary [0, 64)"},
                     C{"1 2 x\n", "t.txt:1: 'x' is not a token id"},
                     C{"7\n", "t.txt:1: a sequence needs at least 2 tokens"},
                     C{"1 2 3 4 5 6 7 8 9\n", "t.txt:1: 9 tokens exceed model.max_seq_len 8"},
                     C{"\n\n", "no token sequences found"}}) {
    write_text(tmp / "t.txt", c.text);
    auto r = run_cli("score " + (tmp / "m").string() + " --tokens " + (tmp / "t.txt").string());
    EXPECT_EQ(r.status, 2) << c.text;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
  }
  auto r = run_cli("score " + (tmp / "nowhere").string() + " --tokens " + (tmp / "t.txt").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("model directory not found"), std::string::npos) << r.err;
}

TEST(BenchCli, ReportsEveryPartOfAStep) {
  TempDir tmp;
  auto cfg = write_text(
      tmp / "b.yaml",
      "model: {vocab_size: 64, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, max_seq_len: 16}\n"
      "train: {micro_batch_size: 2, device: cpu}\n");
  auto r = run_cli("bench " + cfg.string() + " --steps 1 --warmup 0");
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = json::parse(r.out);
  for (const char* k : {"forward_ms", "forward_backward_ms", "loss_fwd_bwd_ms", "optimizer_ms",
                        "step_ms", "tokens_per_s"})
    EXPECT_TRUE(j.contains(k) && json::as_double(*j.find(k)) > 0) << k;
  EXPECT_EQ(json::as_int(*j.find("seq_len")), 16);  // train.seq_len 0 means model.max_seq_len
}

// With a teacher the benchmarked step distills, and the profile says where a KD step goes.
TEST(BenchCli, TimesTheDistillationParts) {
  TempDir tmp;
  const std::string model =
      "model: {vocab_size: 64, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, max_seq_len: 16}\n";
  auto tcfg = write_text(tmp / "t.yaml",
                         "model: {vocab_size: 64, dim: 48, n_layers: 3, n_heads: 4, n_kv_heads: 2, "
                         "max_seq_len: 16}\n");
  ASSERT_EQ(run_cli("init " + tcfg.string() + " --out " + (tmp / "teacher").string()).status, 0);
  auto cfg = write_text(tmp / "b.yaml", model +
                                            "train: {micro_batch_size: 2, device: cpu}\n"
                                            "kd: {teacher: " +
                                            (tmp / "teacher").string() + ", temperature: 2.0}\n");
  auto r = run_cli("bench " + cfg.string() + " --steps 1 --warmup 0");
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = json::parse(r.out);
  for (const char* k : {"teacher_forward_ms", "kd_loss_fwd_bwd_ms", "step_ms", "forward_ms"})
    EXPECT_TRUE(j.contains(k) && json::as_double(*j.find(k)) > 0) << k;
  EXPECT_EQ(j.find("teacher")->get<std::string>(), (tmp / "teacher").string());
  // Without a teacher there are no distillation parts.
  auto plain = write_text(tmp / "p.yaml", model + "train: {micro_batch_size: 2, device: cpu}\n");
  auto p = run_cli("bench " + plain.string() + " --steps 1 --warmup 0");
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_FALSE(json::parse(p.out).contains("teacher_forward_ms"));
}

TEST(HelpCli, EverySubcommandPrintsUsageAndExitsZero) {
  for (const char* cmd : {"config", "params", "init", "score", "train", "generate", "bench",
                          "tokenizer train", "tokenizer encode", "data prepare", "data inspect"}) {
    auto r = run_cli(std::string(cmd) + " --help");
    EXPECT_EQ(r.status, 0) << cmd << ": " << r.err;
    EXPECT_EQ(r.out.rfind("usage: deepthin " + std::string(cmd), 0), 0u) << cmd << ":\n" << r.out;
  }
}
