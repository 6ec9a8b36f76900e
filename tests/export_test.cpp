#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "config/config.h"
#include "export/model_dir.h"
#include "export/safetensors.h"
#include "test_util.h"
#include "util/error.h"
#include "util/json.h"

using namespace deepthin;
using namespace deepthin::test;

namespace {
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::input);
    return e.what();
  }
  ADD_FAILURE() << "expected a deepthin::Error";
  return "";
}
}  // namespace

TEST(Safetensors, RoundTripsEveryDtypeAndShape) {
  TempDir tmp;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  exports::TensorList tensors = {
      {"f32", torch::randn({3, 5}, gen)},
      {"bf16", torch::randn({7}, gen).to(torch::kBFloat16)},
      {"f16", torch::randn({2, 2, 2}, gen).to(torch::kHalf)},
      {"i64", torch::arange(10, torch::kInt64)},
      {"u8", torch::arange(4, torch::kUInt8)},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::empty({0, 4})},
      {"strided", torch::randn({4, 6}, gen).t()},  // non-contiguous input
  };
  exports::save_safetensors(tmp / "a.safetensors", tensors, {{"format", "pt"}});
  auto back = exports::load_safetensors(tmp / "a.safetensors");
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
  exports::save_safetensors(tmp / "a.safetensors", {{"x", torch::ones({3})}});
  std::string raw = read_text(tmp / "a.safetensors");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<uint64_t>(static_cast<unsigned char>(raw[i])) << (8 * i);
  EXPECT_EQ((8 + n) % 8, 0u);
  auto header = Json::parse(raw.substr(8, n));
  EXPECT_EQ(header.find("x")->find("dtype")->as_string(), "F32");
  EXPECT_EQ(raw.size(), 8 + n + 12);
}

TEST(Safetensors, TruncatedAndCorruptFilesAreClearErrors) {
  TempDir tmp;
  exports::save_safetensors(tmp / "a.safetensors", {{"w", torch::ones({64})}});
  std::string raw = read_text(tmp / "a.safetensors");
  write_text(tmp / "trunc.safetensors", raw.substr(0, raw.size() - 10));
  auto msg = error_of([&] { exports::load_safetensors(tmp / "trunc.safetensors"); });
  EXPECT_NE(msg.find("tensor 'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  write_text(tmp / "junk.safetensors", "this is not a safetensors file at all");
  msg = error_of([&] { exports::load_safetensors(tmp / "junk.safetensors"); });
  EXPECT_NE(msg.find("junk.safetensors"), std::string::npos) << msg;

  msg = error_of([&] { exports::load_safetensors(tmp / "missing.safetensors"); });
  EXPECT_NE(msg.find("not found"), std::string::npos) << msg;
}

TEST(ModelDir, SaveLoadRoundTripIsExact) {
  TempDir tmp;
  auto cfg = config::parse_config(
      "model: {vocab_size: 50, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, "
      "tie_embeddings: false, layer_sharing: {scheme: reverse, repeats: 2}}",
      "t");
  model::Decoder m(cfg.model);
  m->reset_parameters(5);
  exports::save_model_files(tmp / "m", m, cfg);
  auto loaded = exports::load_model_dir(tmp / "m");
  EXPECT_EQ(config::to_yaml(loaded.config), config::to_yaml(cfg));
  auto a = m->named_parameters(), b = loaded.model->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  auto hf = Json::parse(read_text(tmp / "m" / "config.json"));
  EXPECT_EQ(hf.find("model_type")->as_string(), "deepthin");  // shared: Llama tools must refuse it
  EXPECT_EQ(hf.find("num_hidden_layers")->as_int(), 2);
}

TEST(ModelDir, ExpandedDirectoryIsPlainLlama) {
  TempDir tmp;
  auto cfg = config::parse_config(
      "model: {vocab_size: 50, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, "
      "layer_sharing: {scheme: immediate, repeats: 2}}",
      "t");
  model::Decoder m(cfg.model);
  exports::save_model_files(tmp / "m", m, cfg, {.expand_shared = true});
  auto hf = Json::parse(read_text(tmp / "m" / "config.json"));
  EXPECT_EQ(hf.find("model_type")->as_string(), "llama");
  EXPECT_EQ(hf.find("num_hidden_layers")->as_int(), 4);
  EXPECT_TRUE(hf.find("tie_word_embeddings")->as_bool());
  auto st = exports::load_safetensors(tmp / "m" / "model.safetensors");
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
  exports::save_model_files(tmp / "m", m, cfg, {.dtype = at::kBFloat16});
  auto loaded = exports::load_model_dir(tmp / "m");
  auto w = m->embed_tokens->weight;
  EXPECT_TRUE(
      torch::equal(loaded.model->embed_tokens->weight, w.to(torch::kBFloat16).to(torch::kFloat)));
}

TEST(ModelDir, MismatchedWeightsAreClearErrors) {
  TempDir tmp;
  auto cfg = config::parse_config(
      "model: {vocab_size: 50, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2}", "t");
  model::Decoder m(cfg.model);
  auto tensors = exports::model_tensors(m, false);

  auto missing = tensors;
  missing.pop_back();
  auto msg = error_of([&] { exports::load_weights(m, missing, "w.safetensors"); });
  EXPECT_NE(msg.find("w.safetensors: tensor 'model.norm.weight' is missing"), std::string::npos)
      << msg;

  auto wrong = tensors;
  wrong[1].second = torch::zeros({3, 3});
  msg = error_of([&] { exports::load_weights(m, wrong, "w.safetensors"); });
  EXPECT_NE(msg.find("has shape [3, 3]"), std::string::npos) << msg;

  auto extra = tensors;
  extra.emplace_back("model.layers.7.mlp.up_proj.weight", torch::zeros({1}));
  msg = error_of([&] { exports::load_weights(m, extra, "w.safetensors"); });
  EXPECT_NE(msg.find("does not belong to this model"), std::string::npos) << msg;
}

TEST(ModelDir, HfConfigErrors) {
  auto j = Json::parse(R"({"model_type": "gpt2", "vocab_size": 10})");
  auto msg = error_of([&] { exports::model_config_from_hf(j, "c.json"); });
  EXPECT_NE(msg.find("c.json: model_type 'gpt2' is not supported"), std::string::npos) << msg;
  j = Json::parse(
      R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                      "num_attention_heads": 2, "intermediate_size": 16, "rope_scaling": {"type": "linear"}})");
  msg = error_of([&] { exports::model_config_from_hf(j, "c.json"); });
  EXPECT_NE(msg.find("rope_scaling"), std::string::npos) << msg;
  auto dir_msg = error_of([&] { exports::load_model_dir("/nonexistent/model"); });
  EXPECT_NE(dir_msg.find("model directory not found"), std::string::npos);
}
