#include "config/config.h"

#include <gtest/gtest.h>

#include <set>

#include "test_util.h"
#include "util/error.h"

using namespace deepthin;
using namespace deepthin::test;
namespace fs = std::filesystem;

TEST(Config, DefaultsAreMobileLLM125M) {
  config::Config c;
  EXPECT_EQ(c.model.dim, 576);
  EXPECT_EQ(c.model.n_layers, 30);
  EXPECT_EQ(c.model.n_heads, 9);
  EXPECT_EQ(c.model.n_kv_heads, 3);
}

TEST(Config, LoadsPresetAndDerivesDefaults) {
  TempDir tmp;
  auto path = write_text(tmp / "m.yaml", "model:\n  dim: 1280\n  n_heads: 20\n  n_kv_heads: 5\n");
  auto c = config::load_config(path);
  EXPECT_EQ(c.model.head_dim, 64);          // dim / n_heads
  EXPECT_EQ(c.model.ffn.hidden_dim, 3584);  // round_up(8*1280/3, 256), MobileLLM-1B's width
  auto relu = config::load_config(path, {"model.ffn.type=relu"});
  EXPECT_EQ(relu.model.ffn.hidden_dim, 4 * 1280);
}

TEST(Config, BaseInheritanceMergesDeeplyAndChildWins) {
  TempDir tmp;
  write_text(tmp / "a/base.yaml",
             "model:\n  dim: 128\n  n_heads: 4\n  n_kv_heads: 2\n  ffn:\n    type: gelu\n    "
             "hidden_dim: 300\n");
  auto child =
      write_text(tmp / "a/sub/child.yaml",
                 "base: ../base.yaml\nmodel:\n  n_layers: 5\n  ffn:\n    hidden_dim: 256\n");
  auto c = config::load_config(child);
  EXPECT_EQ(c.model.dim, 128);
  EXPECT_EQ(c.model.n_layers, 5);
  EXPECT_EQ(c.model.ffn.type, config::FfnType::gelu);  // kept from the base
  EXPECT_EQ(c.model.ffn.hidden_dim, 256);              // overridden by the child
}

TEST(Config, SeveralBasesApplyInOrder) {
  TempDir tmp;
  write_text(tmp / "x.yaml", "model:\n  dim: 128\n  n_heads: 4\n  n_kv_heads: 2\n  n_layers: 2\n");
  write_text(tmp / "y.yaml", "model:\n  n_layers: 7\n");
  auto c = config::load_config(write_text(tmp / "z.yaml", "base: [x.yaml, y.yaml]\n"));
  EXPECT_EQ(c.model.dim, 128);
  EXPECT_EQ(c.model.n_layers, 7);
}

TEST(Config, SetOverridesParseYamlValues) {
  auto c = config::load_config(
      preset("mobilellm-125m"),
      {"model.n_layers=24", "model.layer_sharing.scheme=reverse", "model.layer_sharing.repeats=3",
       "model.tie_embeddings=false", "model.rope.theta=5e5"});
  EXPECT_EQ(c.model.n_layers, 24);
  EXPECT_EQ(c.model.layer_sharing.scheme, config::SharingScheme::reverse);
  EXPECT_EQ(c.model.effective_layers(), 72);
  EXPECT_FALSE(c.model.tie_embeddings);
  EXPECT_DOUBLE_EQ(c.model.rope.theta, 5e5);
}

TEST(Config, ResolvedYamlReadsBackIdentically) {
  auto c = config::load_config(preset("mobilellm-350m-ls"), {"model.norm.eps=1e-6"});
  std::string text = config::to_yaml(c);
  auto back = config::parse_config(text, "resolved");
  EXPECT_EQ(config::to_yaml(back), text);
  EXPECT_EQ(back.model.layer_sharing.repeats, 2);
  EXPECT_DOUBLE_EQ(back.model.norm.eps, 1e-6);
}

TEST(Config, ReferenceListsEveryKeyAndReadmeCarriesIt) {
  config::Config c;
  auto keys = config::key_paths(c);
  std::set<std::string> expected = {"model.vocab_size",
                                    "model.dim",
                                    "model.n_layers",
                                    "model.n_heads",
                                    "model.n_kv_heads",
                                    "model.head_dim",
                                    "model.ffn.type",
                                    "model.ffn.hidden_dim",
                                    "model.norm.type",
                                    "model.norm.eps",
                                    "model.rope.theta",
                                    "model.max_seq_len",
                                    "model.tie_embeddings",
                                    "model.layer_sharing.scheme",
                                    "model.layer_sharing.repeats",
                                    "model.init.std"};
  for (const auto& k : expected) EXPECT_NE(std::find(keys.begin(), keys.end(), k), keys.end()) << k;
  // The README's reference section is exactly what `deepthin config --reference` prints
  // (scripts/update_readme.sh regenerates it).
  std::string readme = read_text(source_dir() / "README.md");
  std::string begin = "<!-- reference:begin -->\n", end = "<!-- reference:end -->";
  auto b = readme.find(begin), e = readme.find(end);
  ASSERT_NE(b, std::string::npos);
  ASSERT_NE(e, std::string::npos);
  EXPECT_EQ(readme.substr(b + begin.size(), e - b - begin.size()), config::reference_markdown())
      << "README.md's config reference is stale: run scripts/update_readme.sh";
}

TEST(Config, LayerSchedules) {
  config::ModelConfig m;
  m.n_layers = 3;
  m.layer_sharing.repeats = 2;
  using V = std::vector<int64_t>;
  m.layer_sharing.scheme = config::SharingScheme::immediate;
  EXPECT_EQ(m.layer_schedule(), (V{0, 0, 1, 1, 2, 2}));
  m.layer_sharing.scheme = config::SharingScheme::repeat_all_over;
  EXPECT_EQ(m.layer_schedule(), (V{0, 1, 2, 0, 1, 2}));
  m.layer_sharing.scheme = config::SharingScheme::reverse;
  EXPECT_EQ(m.layer_schedule(), (V{0, 1, 2, 2, 1, 0}));
  m.layer_sharing.repeats = 3;
  EXPECT_EQ(m.layer_schedule(), (V{0, 1, 2, 2, 1, 0, 0, 1, 2}));
  m.layer_sharing.scheme = config::SharingScheme::none;
  m.layer_sharing.repeats = 1;
  EXPECT_EQ(m.layer_schedule(), (V{0, 1, 2}));
}

// ---- Bad input: every case exits 2, names file, line and key path, and writes nothing. ----

struct BadCase {
  std::string name;
  std::string yaml;                 // written to bad.yaml
  std::string extra_args;           // e.g. --set …
  std::vector<std::string> expect;  // substrings of stderr ("{dir}" = the temp dir)
  std::map<std::string, std::string> other_files = {};
};

void PrintTo(const BadCase& c, std::ostream* os) {
  *os << c.name;
}

class BadInput : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadInput, ExitsTwoWithLocationAndWritesNothing) {
  const BadCase& c = GetParam();
  TempDir tmp;
  for (const auto& [name, text] : c.other_files) write_text(tmp / name, text);
  auto cfg = write_text(tmp / "bad.yaml", c.yaml);
  auto out = tmp / "out";
  auto r = run_cli("init " + cfg.string() + " --out " + out.string() + " " + c.extra_args);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_FALSE(fs::exists(out)) << "init wrote output despite the error";
  for (std::string e : c.expect) {
    if (auto p = e.find("{dir}"); p != std::string::npos) e.replace(p, 5, tmp.path().string());
    EXPECT_NE(r.err.find(e), std::string::npos) << "stderr lacks '" << e << "':\n" << r.err;
  }
  // `deepthin config` reports the same error the same way.
  auto r2 = run_cli("config " + cfg.string() + " " + c.extra_args);
  EXPECT_EQ(r2.status, 2);
  EXPECT_EQ(r2.out, "");
}

INSTANTIATE_TEST_SUITE_P(
    Config, BadInput,
    ::testing::Values(
        BadCase{"unknown_key",
                "model:\n  dim: 64\n  n_layer: 4\n",
                "",
                {"{dir}/bad.yaml:3:12", "model.n_layer: unknown key; did you mean 'n_layers'?"}},
        BadCase{"unknown_section",
                "modle:\n  dim: 64\n",
                "",
                {"bad.yaml:2:3", "modle: unknown key; did you mean 'model'?"}},
        BadCase{"wrong_type",
                "model:\n  dim: wide\n",
                "",
                {"bad.yaml:2:8", "model.dim: expected an integer, got 'wide'"}},
        BadCase{"quoted_number",
                "model:\n  n_layers: \"12\"\n",
                "",
                {"bad.yaml:2:13", "model.n_layers: expected an integer"}},
        BadCase{"section_not_map",
                "model:\n  ffn: swiglu\n",
                "",
                {"bad.yaml:2:8", "model.ffn: expected a section"}},
        BadCase{"out_of_range",
                "model:\n  dim: 0\n",
                "",
                {"bad.yaml:2:8", "model.dim: must be between 1 and 65536, got 0"}},
        BadCase{"negative_eps",
                "model:\n  norm:\n    eps: -1e-5\n",
                "",
                {"bad.yaml:3:10", "model.norm.eps: must be > 0"}},
        BadCase{"bad_choice",
                "model:\n  ffn:\n    type: swigl\n",
                "",
                {"bad.yaml:3:11", "model.ffn.type: expected one of swiglu | relu | gelu",
                 "did you mean 'swiglu'"}},
        BadCase{"dim_not_divisible",
                "model:\n  dim: 100\n  n_heads: 3\n  n_kv_heads: 1\n",
                "",
                {"bad.yaml:3:12", "model.n_heads: dim 100 is not divisible by n_heads 3"}},
        BadCase{"kv_not_dividing",
                "model:\n  dim: 64\n  n_heads: 4\n  n_kv_heads: 3\n",
                "",
                {"bad.yaml:4:15", "model.n_kv_heads: n_heads 4 is not divisible by n_kv_heads 3"}},
        BadCase{"odd_head_dim",
                "model:\n  dim: 60\n  n_heads: 4\n  n_kv_heads: 2\n",
                "",
                {"bad.yaml", "model.head_dim: head_dim 15 is odd"}},
        BadCase{"repeats_zero",
                "model:\n  layer_sharing:\n    scheme: immediate\n    repeats: 0\n",
                "",
                {"bad.yaml:4:14", "model.layer_sharing.repeats: must be between 1 and 64, got 0"}},
        BadCase{"none_with_repeats",
                "model:\n  layer_sharing:\n    repeats: 2\n",
                "",
                {"bad.yaml:3:14", "model.layer_sharing.repeats: repeats is 2 but scheme is none"}},
        BadCase{"yaml_syntax",
                "model:\n  dim: [1, 2\n  n_layers: 3\n",
                "",
                {"bad.yaml:", "YAML syntax error"}},
        BadCase{"base_missing",
                "base: nowhere.yaml\nmodel:\n  dim: 64\n",
                "",
                {"bad.yaml:1:7", "base: config file not found", "nowhere.yaml"}},
        BadCase{"base_cycle",
                "base: other.yaml\n",
                "",
                {"other.yaml:1:7", "cycle of base files: bad.yaml -> other.yaml -> bad.yaml"},
                {{"other.yaml", "base: bad.yaml\n"}}},
        BadCase{"set_unknown_key",
                "model:\n  dim: 64\n",
                "--set model.dimm=3",
                {"--set model.dimm=3", "model.dimm: unknown key; did you mean 'dim'?"}},
        BadCase{
            "set_wrong_type",
            "model:\n  dim: 64\n",
            "--set model.tie_embeddings=maybe",
            {"--set model.tie_embeddings=maybe", "model.tie_embeddings: expected true or false"}},
        BadCase{"set_no_equals",
                "model:\n  dim: 64\n",
                "--set model.dim",
                {"--set model.dim", "expected --set key.path=value"}},
        BadCase{"set_into_value",
                "model:\n  dim: 64\n",
                "--set model.dim.x=3",
                {"model.dim is a value, not a section"}}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return info.param.name; });

TEST(ConfigCli, MissingFileExitsTwo) {
  auto r = run_cli("config /nonexistent/deepthin.yaml");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("config file not found: /nonexistent/deepthin.yaml"), std::string::npos)
      << r.err;
}

TEST(ConfigCli, PrintsResolvedConfig) {
  auto r = run_cli("config " + preset("mobilellm-125m-ls").string() + " --set model.n_layers=20");
  ASSERT_EQ(r.status, 0) << r.err;
  auto c = config::parse_config(r.out, "stdout");
  EXPECT_EQ(c.model.n_layers, 20);
  EXPECT_EQ(c.model.layer_sharing.scheme, config::SharingScheme::immediate);
  EXPECT_EQ(c.model.layer_sharing.repeats, 2);
  EXPECT_EQ(r.out.find("base:"), std::string::npos);
}

TEST(ConfigCli, UnknownOptionAndCommandExitTwo) {
  auto r = run_cli("params " + preset("mobilellm-125m").string() + " --jsno");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("unknown option --jsno; did you mean --json?"), std::string::npos) << r.err;
  auto r2 = run_cli("parms x");
  EXPECT_EQ(r2.status, 2);
  EXPECT_NE(r2.err.find("did you mean 'params'"), std::string::npos) << r2.err;
}

// Inputs that used to crash or hang: each is now an input error that says what and where.
TEST(ConfigLimits, AliasesBaseFilesAndSizes) {
  test::TempDir tmp;
  auto error_for = [&](const std::string& yaml) {
    auto f = test::write_text(tmp / "c.yaml", yaml);
    return test::input_error([&] { config::load_config(f); });
  };
  // Anchors and aliases work as YAML means them…
  auto ok = test::write_text(
      tmp / "ok.yaml", "model: {dim: &d 64, n_heads: 4, n_kv_heads: 2, ffn: {hidden_dim: *d}}\n");
  EXPECT_EQ(config::load_config(ok).model.ffn.hidden_dim, 64);
  EXPECT_NE(error_for("x: &w {dim: 64}\nmodel: *w\nrun: *w\n").find("run.dim: unknown key"),
            std::string::npos);
  // …but one that refers to itself, or a chain that multiplies, is refused.
  EXPECT_NE(error_for("a: &x [*x]\n").find("nested deeper than 64 levels"), std::string::npos);
  std::string bomb = "a: &a [1,2,3,4,5,6,7,8,9,10]\n";
  for (char c : std::string("bcdef"))
    bomb += std::string(1, c) + ": &" + c + " [" + [&] {
      std::string l;
      for (int i = 0; i < 10; ++i) l += std::string(i ? "," : "") + "*" + char(c - 1);
      return l;
    }() + "]\n";
  EXPECT_NE(error_for(bomb).find("once its aliases are expanded"), std::string::npos);
  // Config files are regular files of bounded size, along a bounded base: chain.
  EXPECT_NE(error_for("base: /dev/zero\n").find("/dev/zero is not a regular file"),
            std::string::npos);
  fs::create_directories(tmp / "dir.yaml");
  EXPECT_NE(
      test::input_error([&] { config::load_config(tmp / "dir.yaml"); }).find("not a regular file"),
      std::string::npos);
  test::write_text(tmp / "big.yaml", "# " + std::string(5 << 20, 'x') + "\n");
  EXPECT_NE(
      test::input_error([&] { config::load_config(tmp / "big.yaml"); }).find("at most 4194304"),
      std::string::npos);
  for (int i = 0; i < 40; ++i)
    test::write_text(tmp / ("b" + std::to_string(i) + ".yaml"),
                     i == 39 ? "{}\n" : "base: b" + std::to_string(i + 1) + ".yaml\n");
  EXPECT_NE(test::input_error([&] { config::load_config(tmp / "b0.yaml"); }).find("base: chain"),
            std::string::npos);
  // Sizes past what any machine holds name their key.
  EXPECT_NE(
      error_for("model: {max_seq_len: 1000000000}\n").find("model.max_seq_len: must be between"),
      std::string::npos);
  EXPECT_NE(error_for("model: {vocab_size: 1099511627776}\n").find("model.vocab_size"),
            std::string::npos);
}

// Command-line numbers are range-checked like config values; a job that cannot fit in memory says
// so before allocating.
TEST(ConfigLimits, CliNumbersAndMemory) {
  test::TempDir tmp;
  const std::string cfg = (test::source_dir() / "configs/pretrain/tiny.yaml").string();
  auto r =
      test::run_cli("train " + cfg + " --until-step -3 --set data.path=" + tmp.path().string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--until-step must be at least 0, got -3"), std::string::npos) << r.err;
  r = test::run_cli("bench " + cfg + " --steps 0");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--steps must be in 1"), std::string::npos) << r.err;
  r = test::run_cli("train " + cfg +
                    " --set train.device=cpu --set train.micro_batch_size=1000000 " +
                    "--set data.path=" + tmp.path().string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("training needs at least"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("train.micro_batch_size 1000000"), std::string::npos) << r.err;
  r = test::run_cli("init " + (test::source_dir() / "configs/models/mobilellm-125m.yaml").string() +
                    " --set model.vocab_size=2000000000 --out " + (tmp / "m").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("model.vocab_size 2000000000"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "m"));
}
