#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <set>

#include "config/config.h"
#include "export/gguf.h"
#include "storage/model_dir.h"
#include "storage/safetensors.h"
#include "test_util.h"
#include "util/error.h"
#include "util/json_io.h"

using namespace deepthin;
using namespace deepthin::test;
namespace fs = std::filesystem;

TEST(Safetensors, RoundTripsEveryDtypeAndShape) {
  TempDir tmp;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  storage::TensorList tensors = {
      {"f32", torch::randn({3, 5}, gen)},
      {"bf16", torch::randn({7}, gen).to(torch::kBFloat16)},
      {"f16", torch::randn({2, 2, 2}, gen).to(torch::kHalf)},
      {"i64", torch::arange(10, torch::kInt64)},
      {"u8", torch::arange(4, torch::kUInt8)},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::empty({0, 4})},
      {"strided", torch::randn({4, 6}, gen).t()},  // non-contiguous input
  };
  storage::save_safetensors(tmp / "a.safetensors", tensors, {{"format", "pt"}});
  auto back = storage::load_safetensors(tmp / "a.safetensors");
  ASSERT_EQ(back.tensors.size(), tensors.size());
  EXPECT_EQ(back.metadata.at("format"), "pt");
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(back.tensors[i].first, tensors[i].first);
    EXPECT_EQ(back.tensors[i].second.scalar_type(), tensors[i].second.scalar_type());
    EXPECT_TRUE(torch::equal(back.tensors[i].second, tensors[i].second)) << tensors[i].first;
  }
}

TEST(Safetensors, HeaderIsValidJsonAndDataIsAligned) {
  TempDir tmp;
  storage::save_safetensors(tmp / "a.safetensors", {{"x", torch::ones({3})}});
  std::string raw = read_text(tmp / "a.safetensors");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<uint64_t>(static_cast<unsigned char>(raw[i])) << (8 * i);
  EXPECT_EQ((8 + n) % 8, 0u);
  auto header = json::parse(raw.substr(8, n));
  EXPECT_EQ(json::as_string(*header.find("x")->find("dtype")), "F32");
  EXPECT_EQ(raw.size(), 8 + n + 12);
}

TEST(Safetensors, TruncatedAndCorruptFilesAreClearErrors) {
  TempDir tmp;
  storage::save_safetensors(tmp / "a.safetensors", {{"w", torch::ones({64})}});
  std::string raw = read_text(tmp / "a.safetensors");
  write_text(tmp / "trunc.safetensors", raw.substr(0, raw.size() - 10));
  auto msg = input_error([&] { storage::load_safetensors(tmp / "trunc.safetensors"); });
  EXPECT_NE(msg.find("tensor 'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  write_text(tmp / "junk.safetensors", "this is not a safetensors file at all");
  msg = input_error([&] { storage::load_safetensors(tmp / "junk.safetensors"); });
  EXPECT_NE(msg.find("junk.safetensors"), std::string::npos) << msg;

  msg = input_error([&] { storage::load_safetensors(tmp / "missing.safetensors"); });
  EXPECT_NE(msg.find("not found"), std::string::npos) << msg;

  // A shape whose element count overflows int64 (its product was undefined behaviour).
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[4000000000000000,4000000000000000,0],"data_offsets":[0,0]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write_text(tmp / "huge.safetensors", bytes + header);
  msg = input_error([&] { storage::load_safetensors(tmp / "huge.safetensors"); });
  EXPECT_NE(msg.find("more than 2^63 elements"), std::string::npos) << msg;
}

TEST(ModelDir, SaveLoadRoundTripIsExact) {
  TempDir tmp;
  auto cfg = config::parse_config(
      "model: {vocab_size: 50, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, "
      "tie_embeddings: false, layer_sharing: {scheme: reverse, repeats: 2}}",
      "t");
  model::Decoder m(cfg.model);
  m->reset_parameters(5);
  storage::save_model_files(tmp / "m", m, cfg);
  auto loaded = storage::load_model_dir(tmp / "m");
  EXPECT_EQ(config::to_yaml(loaded.config), config::to_yaml(cfg));
  auto a = m->named_parameters(), b = loaded.model->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  auto hf = json::parse(read_text(tmp / "m" / "config.json"));
  EXPECT_EQ(json::as_string(*hf.find("model_type")),
            "deepthin");  // shared: Llama tools must refuse it
  EXPECT_EQ(json::as_int(*hf.find("num_hidden_layers")), 2);
}

TEST(ModelDir, ExpandedDirectoryIsPlainLlama) {
  TempDir tmp;
  auto cfg = config::parse_config(
      "model: {vocab_size: 50, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, "
      "layer_sharing: {scheme: immediate, repeats: 2}}",
      "t");
  model::Decoder m(cfg.model);
  storage::save_model_files(tmp / "m", m, cfg, {.expand_shared = true});
  auto hf = json::parse(read_text(tmp / "m" / "config.json"));
  EXPECT_EQ(json::as_string(*hf.find("model_type")), "llama");
  EXPECT_EQ(json::as_int(*hf.find("num_hidden_layers")), 4);
  EXPECT_TRUE(json::as_bool(*hf.find("tie_word_embeddings")));
  auto st = storage::load_safetensors(tmp / "m" / "model.safetensors");
  bool has_head = false;
  for (const auto& [n, t] : st.tensors) has_head = has_head || n == "lm_head.weight";
  EXPECT_FALSE(has_head);
  // Effective layer 1 is physical block 0 again (immediate), stored as its own copy.
  auto find = [&](const std::string& n) {
    for (const auto& [k, t] : st.tensors)
      if (k == n) return t;
    return torch::Tensor();
  };
  EXPECT_TRUE(torch::equal(find("model.layers.1.mlp.up_proj.weight"),
                           find("model.layers.0.mlp.up_proj.weight")));
  EXPECT_TRUE(torch::equal(find("model.layers.3.mlp.up_proj.weight"),
                           m->named_parameters()["model.layers.1.mlp.up_proj.weight"]));
}

TEST(ModelDir, Bf16StorageLoadsBackRounded) {
  TempDir tmp;
  auto cfg = config::parse_config(
      "model: {vocab_size: 50, dim: 32, n_layers: 1, n_heads: 4, n_kv_heads: 2}", "t");
  model::Decoder m(cfg.model);
  storage::save_model_files(tmp / "m", m, cfg, {.dtype = at::kBFloat16});
  auto loaded = storage::load_model_dir(tmp / "m");
  auto w = m->embed_tokens->weight;
  EXPECT_TRUE(
      torch::equal(loaded.model->embed_tokens->weight, w.to(torch::kBFloat16).to(torch::kFloat)));
}

TEST(ModelDir, MismatchedWeightsAreClearErrors) {
  TempDir tmp;
  auto cfg = config::parse_config(
      "model: {vocab_size: 50, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2}", "t");
  model::Decoder m(cfg.model);
  auto tensors = storage::model_tensors(m, false);

  auto missing = tensors;
  missing.pop_back();
  auto msg = input_error([&] { storage::load_weights(m, missing, "w.safetensors"); });
  EXPECT_NE(msg.find("w.safetensors: tensor 'model.norm.weight' is missing"), std::string::npos)
      << msg;

  auto wrong = tensors;
  wrong[1].second = torch::zeros({3, 3});
  msg = input_error([&] { storage::load_weights(m, wrong, "w.safetensors"); });
  EXPECT_NE(msg.find("has shape [3, 3]"), std::string::npos) << msg;

  auto extra = tensors;
  extra.emplace_back("model.layers.7.mlp.up_proj.weight", torch::zeros({1}));
  msg = input_error([&] { storage::load_weights(m, extra, "w.safetensors"); });
  EXPECT_NE(msg.find("does not belong to this model"), std::string::npos) << msg;
}

TEST(ModelDir, HfConfigErrors) {
  auto j = json::parse(R"({"model_type": "gpt2", "vocab_size": 10})");
  auto msg = input_error([&] { storage::model_config_from_hf(j, "c.json"); });
  EXPECT_NE(msg.find("c.json: model_type 'gpt2' is not supported"), std::string::npos) << msg;
  j = json::parse(
      R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                      "num_attention_heads": 2, "intermediate_size": 16, "rope_scaling": {"type": "linear"}})");
  msg = input_error([&] { storage::model_config_from_hf(j, "c.json"); });
  EXPECT_NE(msg.find("rope_scaling"), std::string::npos) << msg;
  auto dir_msg = input_error([&] { storage::load_model_dir("/nonexistent/model"); });
  EXPECT_NE(dir_msg.find("model directory not found"), std::string::npos);
}

// ---------------------------------------------------------------------------------- GGUF

// q8_0 and q4_0 blocks as ggml lays them out, on values whose quantization is known exactly.
TEST(Gguf, QuantizedBlocksFollowGgmlsLayout) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16) / 4.0f;  // −4 … 3.75
  auto q8 = exports::quantize_q8_0(x.data(), 32);
  ASSERT_EQ(q8.size(), 34u);  // fp16 scale + 32 int8
  // amax 4 → scale 4/127; element 0 (−4) → −127, element 16 (0) → 0.
  EXPECT_EQ(static_cast<int8_t>(q8[2]), -127);
  EXPECT_EQ(static_cast<int8_t>(q8[2 + 16]), 0);
  auto back8 = exports::dequantize_q8_0(q8.data(), 32);
  for (int j = 0; j < 32; ++j) EXPECT_NEAR(back8[j], x[j], 4.0 / 127 / 2 + 1e-3) << j;

  auto q4 = exports::quantize_q4_0(x.data(), 32);
  ASSERT_EQ(q4.size(), 18u);  // fp16 scale + 16 bytes of nibbles
  // The largest magnitude is −4 (element 0): scale = −4 / −8 = 0.5, so −4 → 0 and 0 → 8.
  EXPECT_EQ(q4[2] & 0x0F, 0);      // element 0 in the low nibble of byte 0
  EXPECT_EQ(q4[2] >> 4, 8);        // element 16 in its high nibble
  EXPECT_EQ(q4[2 + 15] >> 4, 15);  // element 31 (3.75 → 7.5 + 8.5 → 15, clamped)
  auto back4 = exports::dequantize_q4_0(q4.data(), 32);
  for (int j = 0; j < 32; ++j) EXPECT_NEAR(back4[j], x[j], 0.5 / 2 + 1e-6) << j;
  // An all-zero block stays zero.
  std::vector<float> zeros(64, 0.0f);
  for (float v : exports::dequantize_q4_0(exports::quantize_q4_0(zeros.data(), 64).data(), 64))
    EXPECT_EQ(v, 0.0f);
}

namespace {
// A model directory for the export CLI tests: init from `yaml_model` plus a 512-piece tokenizer.
fs::path export_fixture(const test::TempDir& tmp, const std::string& yaml_model,
                        bool tokenizer = true) {
  auto text = test::write_text(tmp / "text.txt", test::read_text(test::source_dir() / "README.md"));
  if (!fs::exists(tmp / "tok" / "tokenizer.model")) {
    auto r = test::run_cli("tokenizer train --input " + text.string() + " --vocab-size 512 --out " +
                           (tmp / "tok").string());
    EXPECT_EQ(r.status, 0) << r.err;
  }
  static int n = 0;
  const auto name = "m" + std::to_string(n++);
  auto cfg = test::write_text(tmp / (name + ".yaml"),
                              "model: {vocab_size: 512, max_seq_len: 64, " + yaml_model + "}\n");
  auto r = test::run_cli("init " + cfg.string() + " --out " + (tmp / name).string());
  EXPECT_EQ(r.status, 0) << r.err;
  if (tokenizer) fs::copy_file(tmp / "tok" / "tokenizer.model", tmp / name / "tokenizer.model");
  return tmp / name;
}
const std::string kSmall =
    "dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn: {hidden_dim: 128}";

// Nothing but `keep` in a directory (no temporaries left by a failed export).
void expect_only(const fs::path& dir, const std::set<std::string>& keep) {
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_TRUE(keep.count(e.path().filename().string())) << "left behind: " << e.path();
}
}  // namespace

// The GGUF header as written: magic, version, the counts, and the first key.
TEST(Gguf, HeaderAndCounts) {
  test::TempDir tmp;
  auto m = export_fixture(tmp, kSmall);
  auto r = test::run_cli("export " + m.string() + " --format gguf --quant f32 --out " +
                         (tmp / "a.gguf").string());
  ASSERT_EQ(r.status, 0) << r.err;
  auto bytes = test::read_text(tmp / "a.gguf");
  ASSERT_GT(bytes.size(), 64u);
  EXPECT_EQ(bytes.substr(0, 4), "GGUF");
  uint32_t version;
  uint64_t tensors, keys, key_len;
  std::memcpy(&version, bytes.data() + 4, 4);
  std::memcpy(&tensors, bytes.data() + 8, 8);
  std::memcpy(&keys, bytes.data() + 16, 8);
  std::memcpy(&key_len, bytes.data() + 24, 8);
  EXPECT_EQ(version, 3u);
  EXPECT_EQ(tensors, 1u + 2u * 9u + 1u);  // embedding, 2 blocks of 9, final norm (tied head)
  EXPECT_EQ(keys, 26u);
  EXPECT_EQ(bytes.substr(32, key_len), "general.architecture");
  auto j = json::parse(r.out);
  EXPECT_EQ(json::as_int(json::at(j, "bytes", "export")), static_cast<int64_t>(bytes.size()));
  EXPECT_EQ(bytes.size() % 32, 0u);  // the last tensor is padded to the alignment
}

// Bad input exits 2, names what is wrong, and leaves nothing at (or beside) the output path.
TEST(ExportCli, BadInputIsRefusedCleanly) {
  test::TempDir tmp;
  auto m = export_fixture(tmp, kSmall);
  auto out = (tmp / "out.gguf").string();
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"--format onnx --out " + out, "--format must be gguf, executorch or hf"},
      {"--out " + out, "--format must be gguf, executorch or hf (it is missing)"},
      {"--format gguf", "--out PATH is required"},
      {"--format gguf --quant q5_k --out " + out, "expected f32, f16, bf16, q8_0 or q4_0"},
      {"--format executorch --quant int8 --out " + out, "expected fp32 or 8da4w"},
      {"--format hf --quant q8_0 --out " + out, "fp32 or bf16"},
      {"--format gguf --out " + (tmp / "no" / "x.gguf").string(), "does not exist"},
  };
  for (const auto& c : cases) {
    auto r = test::run_cli("export " + m.string() + " " + c.args);
    EXPECT_EQ(r.status, 2) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << ": " << r.err;
  }
  // Models a format cannot express: the knob is named.
  auto layernorm = export_fixture(tmp, kSmall + ", norm: {type: layernorm}");
  auto relu = export_fixture(
      tmp, "dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn: {type: relu, hidden_dim: 128}");
  auto odd =
      export_fixture(tmp, "dim: 48, n_layers: 1, n_heads: 4, n_kv_heads: 2, ffn: {hidden_dim: 96}");
  auto shared = export_fixture(tmp, kSmall + ", layer_sharing: {scheme: immediate, repeats: 2}");
  auto bare = export_fixture(tmp, kSmall, /*tokenizer=*/false);
  const std::vector<Case> models = {
      {layernorm.string() + " --format gguf", "model.norm.type is layernorm"},
      {relu.string() + " --format gguf", "model.ffn.type is relu"},
      {odd.string() + " --format gguf --quant q4_0", "model.dim is 48"},
      {odd.string() + " --format executorch --quant 8da4w", "model.dim is 48"},
      {shared.string() + " --format hf", "--expand-shared"},
      {layernorm.string() + " --format hf", "model.norm.type is layernorm"},
      {bare.string() + " --format gguf", "holds no tokenizer.model"},
      {(tmp / "missing").string() + " --format gguf", "does not exist"},
  };
  for (const auto& c : models) {
    auto r = test::run_cli("export " + c.args + " --out " + out);
    EXPECT_EQ(r.status, 2) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(out));
  // An existing output is kept unless --force.
  test::write_text(out, "precious");
  auto r = test::run_cli("export " + m.string() + " --format gguf --out " + out);
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("exists; pass --force"), std::string::npos) << r.err;
  EXPECT_EQ(test::read_text(out), "precious");
  // --force replaces an earlier export of the format, never a file deepthin did not write.
  r = test::run_cli("export " + m.string() + " --format gguf --out " + out + " --force");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("is not a GGUF file"), std::string::npos) << r.err;
  EXPECT_EQ(test::read_text(out), "precious");
  fs::remove(out);
  ASSERT_EQ(test::run_cli("export " + m.string() + " --format gguf --out " + out).status, 0);
  r = test::run_cli("export " + m.string() + " --format gguf --out " + out + " --force");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(test::read_text(out).substr(0, 4), "GGUF");
  // An hf directory is replaced whole.
  auto hf = (tmp / "hf").string();
  ASSERT_EQ(test::run_cli("export " + m.string() + " --format hf --out " + hf).status, 0);
  EXPECT_EQ(test::run_cli("export " + m.string() + " --format hf --out " + hf).status, 2);
  EXPECT_EQ(test::run_cli("export " + m.string() + " --format hf --out " + hf + " --force").status,
            0);
  std::set<std::string> keep{"out.gguf", "hf", "tok", "text.txt"};
  for (const auto& e : fs::directory_iterator(tmp.path()))
    if (e.path().extension() == ".yaml" || e.path().filename().string()[0] == 'm')
      keep.insert(e.path().filename().string());
  expect_only(tmp.path(), keep);
}
