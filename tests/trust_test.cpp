// Trust: commands that must refuse, not destroy or invent. Each case checks the exit status (2 for
// bad input), that the message names the key, path or option at fault, and that the file tree is
// the same before and after (every file, its size, mtime and contents; every link and directory).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <ATen/ATen.h>

#include <map>

#include "data/prepare.h"
#include "data/tokenizer.h"
#include "storage/safetensors.h"
#include "test_util.h"
#include "util/fs.h"
#include "util/paths.h"

using namespace deepthin;
using namespace deepthin::test;

namespace {

// Every entry under root: type, size, mtime and (for files) a checksum.
std::map<std::string, std::string> tree_of(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    struct stat st {};
    ::lstat(it->path().c_str(), &st);
    std::string v = std::to_string(st.st_mode) + " " + std::to_string(st.st_size) + " " +
                    std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
    if (S_ISREG(st.st_mode)) v += " " + sha256_file(it->path());
    if (S_ISLNK(st.st_mode)) v += " -> " + fs::read_symlink(it->path()).string();
    out[fs::relative(it->path(), root).string()] = v;
    if (S_ISLNK(st.st_mode)) it.disable_recursion_pending();
  }
  return out;
}

// The differences between two listings, one line each, for the failure message.
std::string diff(const std::map<std::string, std::string>& a,
                 const std::map<std::string, std::string>& b) {
  std::string d;
  for (const auto& [k, v] : a)
    if (!b.count(k))
      d += "  removed " + k + "\n";
    else if (b.at(k) != v)
      d += "  changed " + k + "\n";
  for (const auto& [k, v] : b)
    if (!a.count(k)) d += "  added " + k + "\n";
  return d;
}

class TrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string text;
    uint32_t x = 5;
    const char* words[] = {"deep", "thin", "models", "share", "layers", "and",  "train",
                           "fast", "on",   "phones", "the",   "a",      "small"};
    for (int d = 0; d < 120; ++d) {
      std::string doc;
      for (int k = 0; k < 60; ++k)
        doc += std::string(words[((x = x * 1664525u + 1013904223u) >> 27) % 13]) + " ";
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
    write_text(root() / "cfg.yaml", "run: {root: " + (root() / "runs").string() +
                                        "}\nmodel: {vocab_size: 300, dim: 32, n_layers: 2, "
                                        "n_heads: 4, n_kv_heads: 2, max_seq_len: 32}\n"
                                        "data: {path: " +
                                        (root() / "data").string() + ", tokenizer: " +
                                        (root() / "tok" / "tokenizer.model").string() +
                                        "}\ntrain: {micro_batch_size: 2, seq_len: 16, "
                                        "max_steps: 4, device: cpu}\nschedule: {warmup_steps: "
                                        "1}\neval: {every: 0, batches: 1}\ncheckpoint: {every: "
                                        "2, keep_last: 2}\nlog: {every: 1, tensorboard: false}\n");
  }
  const fs::path& root() const { return tmp_.path(); }
  fs::path run(const std::string& name) const { return root() / "runs" / name; }
  CliResult train(const std::string& name, const std::string& extra = "") {
    return run_cli("train " + (root() / "cfg.yaml").string() + " --set run.name=" + name + " " +
                   extra);
  }

  // Runs the command and expects exit 2, a message holding every one of `names`, and no change
  // anywhere under the scratch root.
  void refused(const std::string& args, std::initializer_list<std::string> names) {
    const auto before = tree_of(root());
    const auto r = run_cli(args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.err;
    for (const auto& n : names)
      EXPECT_NE(r.err.find(n), std::string::npos) << "message lacks '" << n << "': " << r.err;
    const auto after = tree_of(root());
    EXPECT_TRUE(before == after) << args << " changed the tree:\n" << diff(before, after);
  }

  TempDir tmp_;
};

}  // namespace

TEST_F(TrustTest, ExportNeverReplacesTheRunItReads) {
  ASSERT_EQ(train("a").status, 0);
  refused("export " + run("a").string() + " --format hf --out " + run("a").string() + " --force",
          {"--out", run("a").string()});
  // A checkpoint directory is not an export either.
  refused("export " + run("a").string() + " --format hf --out " +
              (run("a") / "checkpoints" / "step_2").string() + " --force",
          {"--out", "step_2"});
  // Nor is a file deepthin did not write, for a format that writes files.
  write_text(root() / "notes.txt", "my notes");
  refused("export " + run("a").string() + " --format gguf --out " +
              (root() / "notes.txt").string() + " --force",
          {"--out", "notes.txt", "GGUF"});
  // An earlier export of the same format is replaced.
  auto once = run_cli("export " + run("a").string() + " --format gguf --out " +
                      (root() / "a.gguf").string());
  ASSERT_EQ(once.status, 0) << once.err;
  EXPECT_EQ(run_cli("export " + run("a").string() + " --format gguf --out " +
                    (root() / "a.gguf").string())
                .status,
            2);
  EXPECT_EQ(run_cli("export " + run("a").string() + " --format gguf --out " +
                    (root() / "a.gguf").string() + " --force")
                .status,
            0);
}

TEST_F(TrustTest, ForceNeverReplacesALockedRunOrAUsersDirectory) {
  ASSERT_EQ(train("live").status, 0);
  {
    DirLock trainer(run("live"), "run directory");  // as a running trainer holds it
    refused(
        "init " + (root() / "cfg.yaml").string() + " --out " + run("live").string() + " --force",
        {"--out", "in use"});
    refused("export " + run("live").string() + " --format hf --out " + run("live").string() +
                " --force",
            {"--out"});
  }
  // A directory of the user's own files is never replaced.
  write_text(root() / "mine" / "thesis.tex", "\\documentclass{article}");
  refused("init " + (root() / "cfg.yaml").string() + " --out " + (root() / "mine").string() +
              " --force",
          {"--out", "thesis.tex"});
  refused("data prepare --tokenizer " + (root() / "tok" / "tokenizer.model").string() +
              " --input " + (root() / "corpus.jsonl").string() + " --format jsonl --out " +
              (root() / "mine").string() + " --force",
          {"--out", "thesis.tex"});
  // A special file is not replaced.
  ASSERT_EQ(::mkfifo((root() / "fifo").c_str(), 0644), 0);
  refused("export " + run("live").string() + " --format gguf --out " + (root() / "fifo").string() +
              " --force",
          {"--out", "fifo"});
  // An earlier init output is replaced with --force.
  ASSERT_EQ(run_cli("init " + (root() / "cfg.yaml").string() + " --out " + (root() / "m").string())
                .status,
            0);
  EXPECT_EQ(run_cli("init " + (root() / "cfg.yaml").string() + " --out " + (root() / "m").string() +
                    " --force")
                .status,
            0);
  // The tokenizer trainer does not overwrite a tokenizer without --force.
  refused("tokenizer train --input " + (root() / "corpus.jsonl").string() +
              " --vocab-size 300 --out " + (root() / "tok").string(),
          {"--out", "tokenizer.model", "--force"});
}

TEST_F(TrustTest, NamesNeverEscapeTheirRoot) {
  refused("train " + (root() / "cfg.yaml").string() + " --set run.name=../../escape",
          {"run.name", "../../escape", "'/'"});
  refused("train " + (root() / "cfg.yaml").string() + " --set run.name=..", {"run.name"});
  write_text(root() / "exp.yaml",
             "base: cfg.yaml\nzip:\n  names: [ok, ../../evil]\n"
             "  model.dim: [32, 64]\n");
  refused("sweep " + (root() / "exp.yaml").string() + " --dry-run", {"zip names", "../../evil"});
  refused("sweep " + (root() / "exp.yaml").string(), {"zip names", "../../evil"});
  write_text(root() / "exp2.yaml", "name: ../up\nbase: cfg.yaml\ngrid: {model.dim: [32]}\n");
  refused("sweep " + (root() / "exp2.yaml").string(), {"name", "../up"});
  write_text(
      root() / "exp3.yaml",
      "base: cfg.yaml\nteacher: {name: a/b, set: {model.dim: 32}}\ngrid: {model.dim: [32]}\n");
  refused("sweep " + (root() / "exp3.yaml").string() + " --dry-run", {"teacher name", "a/b"});
  // Grid values become run names only as safe characters.
  write_text(root() / "exp4.yaml", "base: cfg.yaml\ngrid: {run.root: [../../x]}\n");
  auto dry = run_cli("sweep " + (root() / "exp4.yaml").string() + " --dry-run --json");
  EXPECT_EQ(dry.status, 0) << dry.err;
  EXPECT_EQ(dry.out.find("\"../../x_s"), std::string::npos) << dry.out;
}

TEST_F(TrustTest, CheckpointsAreIdentifiedByTheirContents) {
  ASSERT_EQ(train("a", "--until-step 2").status, 0);
  // A copy of step_2 under a later step's name: resuming from it would go backwards, and
  // pruning would delete the real checkpoints.
  fs::copy(run("a") / "checkpoints" / "step_2", run("a") / "checkpoints" / "step_99",
           fs::copy_options::recursive);
  refused("train --resume " + run("a").string(), {"step_99", "step 2", "trainer_state.json"});
  refused("export " + run("a").string() + " --format gguf --out " + (root() / "x.gguf").string(),
          {"step_99", "step 2"});
  remove_tree(run("a") / "checkpoints" / "step_99");
  fs::create_directory_symlink(run("a") / "checkpoints" / "step_2",
                               run("a") / "checkpoints" / "step_7");
  refused("train --resume " + run("a").string(), {"step_7", "step 2"});
  remove_tree(run("a") / "checkpoints" / "step_7");
  auto rest = run_cli("train --resume " + run("a").string());
  ASSERT_EQ(rest.status, 0) << rest.err;
  EXPECT_TRUE(fs::exists(run("a") / "checkpoints" / "step_4"));
}

TEST_F(TrustTest, PruningNeverDeletesANewerCheckpoint) {
  ASSERT_EQ(train("a").status, 0);  // step_2, step_4 (keep_last 2)
  // Step 4 is corrupted; the run resumes from step 2 (--resume-fallback) and checkpoints step 3.
  // Pruning to keep_last 2 keeps step 3 and the older step 2; step 4, later than where the run
  // is, is never a candidate (before, the oldest, step 2, the only good one besides, went).
  write_text(run("a") / "checkpoints" / "step_4" / "optimizer.safetensors", "garbage");
  auto r = run_cli("train --resume " + run("a").string() +
                   " --resume-fallback --set checkpoint.every=1 --until-step 3");
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* s : {"step_2", "step_3", "step_4"})
    EXPECT_TRUE(fs::exists(run("a") / "checkpoints" / s)) << s;
  EXPECT_NE(read_text(run("a") / "train.log").find("keeping"), std::string::npos);
  // Once the run is past it, step 4 is its own again: written anew, and step 2 pruned.
  auto rest = run_cli("train --resume " + run("a").string() + " --resume-fallback");
  ASSERT_EQ(rest.status, 0) << rest.err;
  EXPECT_FALSE(fs::exists(run("a") / "checkpoints" / "step_2"));
  EXPECT_TRUE(fs::exists(run("a") / "checkpoints" / "step_4" / "checksums.json"));
}

TEST_F(TrustTest, NumbersAreNeverSilentlyWrong) {
  ASSERT_EQ(train("a").status, 0);
  refused("generate " + run("a").string() + " --prompt hi --top-p nan", {"--top-p", "nan"});
  refused("generate " + run("a").string() + " --prompt hi --temperature inf", {"--temperature"});
  refused("generate " + run("a").string() + " --prompt hi --top-p 0", {"--top-p"});
  refused("data prepare --tokenizer " + (root() / "tok" / "tokenizer.model").string() +
              " --input " + (root() / "corpus.jsonl").string() + " --format jsonl --out " +
              (root() / "d2").string() + " --val-fraction nan",
          {"--val-fraction"});
  // A prompt longer than the window: refused with the numbers, not an empty answer.
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += "deep thin ";
  refused("generate " + run("a").string() + " --prompt '" + prompt + "'",
          {"prompt", "model.max_seq_len", "32"});
  // A prompt that fills most of the window: what could be generated is, and the shortfall is said.
  auto g = run_cli("generate " + run("a").string() +
                   " --prompt 'deep thin models share layers and train fast' --max-new-tokens 40 "
                   "--temperature 0");
  EXPECT_EQ(g.status, 0) << g.err;
  EXPECT_NE(g.err.find("window"), std::string::npos) << g.err;
}

TEST_F(TrustTest, NonFiniteWeightsAreRefusedByName) {
  ASSERT_EQ(run_cli("init " + (root() / "cfg.yaml").string() + " --out " + (root() / "m").string())
                .status,
            0);
  auto st = storage::load_safetensors(root() / "m" / "model.safetensors");
  for (auto& [name, t] : st.tensors)
    if (name == "model.layers.1.mlp.down_proj.weight") {
      t = t.clone();
      t.view({-1})[7] = NAN;
    }
  storage::save_safetensors(root() / "m" / "model.safetensors", st.tensors);
  write_text(root() / "t.txt", "1 2 3 4 5\n");
  refused("score " + (root() / "m").string() + " --tokens " + (root() / "t.txt").string(),
          {"model.layers.1.mlp.down_proj.weight", "non-finite"});
  refused("export " + (root() / "m").string() + " --format gguf --out " +
              (root() / "m.gguf").string() + " --tokenizer " +
              (root() / "tok" / "tokenizer.model").string(),
          {"down_proj", "non-finite"});
}

TEST_F(TrustTest, DataAreCheckedAgainstTheModelsVocabulary) {
  // The manifest says the ids stay below 300, one shard really holds 299 and one 4000: the
  // shard is named, the real id given, before any step.
  const fs::path shard = root() / "data" / "train_000000.bin";
  std::string bytes = read_text(shard);
  ASSERT_GT(bytes.size(), 64u + 200u);
  const uint16_t big = 4000;
  std::memcpy(bytes.data() + 64 + 2 * 100, &big, 2);
  { std::ofstream(shard, std::ios::binary | std::ios::trunc) << bytes; }
  refused("train " + (root() / "cfg.yaml").string() + " --set run.name=v",
          {"train_000000.bin", "4000", "model.vocab_size", "300"});
}

TEST_F(TrustTest, AllocationSizesAreCheckedBeforeTheAllocation) {
  // A model directory whose config.json asks for more memory than the machine has.
  ASSERT_EQ(run_cli("init " + (root() / "cfg.yaml").string() + " --out " + (root() / "m").string())
                .status,
            0);
  Json cfg = json::parse(read_text(root() / "m" / "config.json"));
  cfg["vocab_size"] = 2000000000;
  cfg["hidden_size"] = 65536;
  write_text(root() / "m" / "config.json", json::dump(cfg, 2));
  fs::remove(root() / "m" / "deepthin.yaml");  // so that config.json is what describes the model
  write_text(root() / "t.txt", "1 2 3 4 5\n");
  refused("score " + (root() / "m").string() + " --tokens " + (root() / "t.txt").string(),
          {"config.json", "needs at least", "model.vocab_size"});
  // A grid whose product of values is beyond any sweep.
  std::string values;
  for (int i = 1; i <= 200; ++i) values += (i > 1 ? ", " : "") + std::to_string(i);
  write_text(root() / "big.yaml", "base: cfg.yaml\ngrid: {train.seed: [" + values +
                                      "], model.n_layers: [" + values + "]}\n");
  refused("sweep " + (root() / "big.yaml").string() + " --dry-run", {"big.yaml", "40000", "10000"});
  // YAML whose aliases expand a 1 MiB string 100 times.
  std::string yaml = "run: {name: &x " + std::string(1 << 20, 'a') + "}\nlist: [";
  for (int i = 0; i < 100; ++i) yaml += (i ? ", *x" : "*x");
  write_text(root() / "bomb.yaml", yaml + "]\n");
  refused("config " + (root() / "bomb.yaml").string(), {"bomb.yaml", "MiB"});
}

TEST(PathRules, NamesAreSingleComponents) {
  for (const char* ok : {"a", "run-1_s2", "L30-d512_type-relu_s1", "été", "..a", "a..", ".hidden"})
    EXPECT_EQ(path_component_problem(ok), "") << ok;
  for (const std::string& bad :
       {std::string(""), std::string("."), std::string(".."), std::string("a/b"),
        std::string("/abs"), std::string("a\\b"), std::string("a\0b", 3), std::string("tab\there"),
        std::string(129, 'x'), std::string("\xff\xfe")})
    EXPECT_NE(path_component_problem(bad), "") << bad;
  EXPECT_TRUE(is_within("/a/b/c", "/a/b"));
  EXPECT_TRUE(is_within("/a/b", "/a/b/"));
  EXPECT_FALSE(is_within("/a/bc", "/a/b"));
  EXPECT_FALSE(is_within("/a/b/../c", "/a/b"));
}
