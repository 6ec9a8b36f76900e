#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "config/config.h"
#include "model/decoder.h"
#include "model/param_count.h"
#include "storage/model_dir.h"
#include "test_util.h"
#include "util/error.h"

using namespace deepthin;
using config::ModelConfig;

namespace {

ModelConfig small(int64_t layers = 3, const std::string& scheme = "none", int64_t repeats = 1) {
  std::string yaml = "model:\n  vocab_size: 97\n  dim: 32\n  n_layers: " + std::to_string(layers) +
                     "\n  n_heads: 4\n  n_kv_heads: 2\n  ffn: {hidden_dim: 48}\n  max_seq_len: 64\n"
                     "  init: {std: 0.1}\n  layer_sharing: {scheme: " +
                     scheme + ", repeats: " + std::to_string(repeats) + "}\n";
  return config::parse_config(yaml, "test").model;
}

torch::Tensor random_tokens(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randint(vocab, {b, t}, gen, torch::kInt64);
}

// The paper's closed form (MOBILELLM.md): vocab·dim + L·(dim·(dim + 2·kv·hd) + dim·dim + 3·dim·ffn
// + 2·dim) + dim.
int64_t paper_formula(int64_t vocab, int64_t dim, int64_t L, int64_t kv, int64_t ffn) {
  return vocab * dim + L * (dim * (dim + 2 * kv * 64) + dim * dim + 3 * dim * ffn + 2 * dim) + dim;
}

}  // namespace

TEST(ParamCount, PresetsMatchThePaperExactly) {
  struct P {
    const char* name;
    int64_t total;
    int64_t layers, dim, kv, ffn;
  };
  for (const P& p : {P{"mobilellm-125m", 124635456, 30, 576, 3, 1536},
                     P{"mobilellm-350m", 345355200, 32, 960, 5, 2560},
                     P{"mobilellm-600m", 603188352, 40, 1152, 6, 3072},
                     P{"mobilellm-1b", 1005461760, 54, 1280, 5, 3584},
                     P{"mobilellm-1.5b", 1511188800, 54, 1600, 5, 4352}}) {
    auto m = config::load_config(test::preset(p.name)).model;
    auto c = model::count_params(m);
    EXPECT_EQ(c.total, p.total) << p.name;
    EXPECT_EQ(c.total, paper_formula(32000, p.dim, p.layers, p.kv, p.ffn)) << p.name;
    EXPECT_EQ(c.effective_layers, p.layers) << p.name;
    EXPECT_EQ(c.embedding, 32000 * p.dim);
    EXPECT_EQ(c.non_embedding, c.total - c.embedding);
  }
  for (auto [ls, base] : {std::pair{"mobilellm-125m-ls", "mobilellm-125m"},
                          std::pair{"mobilellm-350m-ls", "mobilellm-350m"}}) {
    auto a = model::count_params(config::load_config(test::preset(ls)).model);
    auto b = model::count_params(config::load_config(test::preset(base)).model);
    EXPECT_EQ(a.total, b.total);
    EXPECT_EQ(a.effective_layers, 2 * b.effective_layers);
  }
}

TEST(ParamCount, FlopsFollowTheStatedConvention) {
  auto m = config::load_config(test::preset("mobilellm-125m")).model;
  auto c = model::count_params(m);
  // N: 30 blocks of (attention + FFN) weights, plus the 32000×576 output projection.
  int64_t block = 576 * 576 + 2 * 576 * 192 + 576 * 576 + 3 * 576 * 1536;
  EXPECT_EQ(c.matmul_params_per_token, 30 * block + 32000 * 576);
  EXPECT_EQ(model::training_flops_per_token(m, 2048),
            6 * (30 * block + 32000 * 576) + 12 * 30 * 576 * 2048);
  // Layer sharing doubles the per-token compute of the blocks, not the parameters.
  auto ls = config::load_config(test::preset("mobilellm-125m-ls")).model;
  EXPECT_EQ(model::count_params(ls).matmul_params_per_token, 60 * block + 32000 * 576);
}

TEST(ParamCount, BuiltModelsMatchTheAnalyticCount) {
  std::vector<std::vector<std::string>> variants = {
      {},
      {"model.tie_embeddings=false"},
      {"model.norm.type=layernorm"},
      {"model.ffn.type=relu"},
      {"model.ffn.type=gelu", "model.ffn.hidden_dim=0"},
      {"model.layer_sharing.scheme=repeat_all_over", "model.layer_sharing.repeats=3"},
      {"model.head_dim=16", "model.n_kv_heads=1"},
  };
  for (const auto& sets : variants) {
    auto cfg = config::parse_config(
        "model: {vocab_size: 101, dim: 48, n_layers: 2, n_heads: 6, n_kv_heads: 3}", "t", sets);
    model::Decoder d(cfg.model);
    EXPECT_EQ(model::numel(*d), model::count_params(cfg.model).total)
        << (sets.empty() ? "default" : sets[0]);
  }
}

TEST(Decoder, ForwardShapeAndParameterNames) {
  model::Decoder d(small());
  auto logits = d->forward(random_tokens(2, 11, 97, 1));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 11, 97}));
  auto params = d->named_parameters();
  for (const char* n :
       {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
        "model.layers.2.self_attn.k_proj.weight", "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight", "model.norm.weight"})
    EXPECT_NE(params.find(n), nullptr) << n;
  EXPECT_EQ(params.find("lm_head.weight"), nullptr);  // tied by default
  EXPECT_EQ(params["model.layers.0.self_attn.k_proj.weight"].sizes(),
            (std::vector<int64_t>{16, 32}));
}

TEST(Decoder, TiedHeadIsTheEmbedding) {
  model::Decoder d(small());
  EXPECT_EQ(d->output_weight().data_ptr(), d->embed_tokens->weight.data_ptr());
  auto loss = d->forward(random_tokens(1, 5, 97, 2)).sum();
  loss.backward();
  // The embedding's gradient includes the head's: rows of tokens never seen still get gradient.
  auto g = d->embed_tokens->weight.grad();
  EXPECT_GT(g.abs().sum(1).gt(0).sum().item<int64_t>(), 5);
}

TEST(Decoder, SameSeedSameWeightsDifferentSeedDifferent) {
  model::Decoder a(small()), b(small());
  a->reset_parameters(3);
  b->reset_parameters(3);
  auto pa = a->parameters(), pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i]));
  b->reset_parameters(4);
  EXPECT_FALSE(torch::equal(a->embed_tokens->weight, b->embed_tokens->weight));
  // init.std is honoured.
  double std = a->named_parameters()["model.layers.0.mlp.up_proj.weight"].std().item<double>();
  EXPECT_NEAR(std, 0.1, 0.01);
}

TEST(Decoder, IsCausal) {
  model::Decoder d(small());
  auto tokens = random_tokens(1, 12, 97, 5);
  auto a = d->forward(tokens);
  auto changed = tokens.clone();
  changed[0][8] = (changed[0][8].item<int64_t>() + 1) % 97;
  auto b = d->forward(changed);
  EXPECT_TRUE(torch::equal(a.narrow(1, 0, 8), b.narrow(1, 0, 8)));
  EXPECT_FALSE(torch::allclose(a.narrow(1, 8, 4), b.narrow(1, 8, 4)));
}

// An independent attention: GQA by repeating K/V heads, explicit causal softmax. Checks the SDPA
// path (enable_gqa) and the head grouping.
TEST(Decoder, AttentionMatchesNaiveGqaReference) {
  auto cfg = small();
  model::Attention attn(cfg);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  auto x = torch::randn({2, 7, 32}, gen);
  auto tables = model::make_rope_tables(cfg.head_dim, 7, cfg.rope.theta);
  auto got = attn->forward(x, tables.cos, tables.sin);

  const int64_t H = 4, KV = 2, hd = 8;
  auto q = attn->q_proj(x).view({2, 7, H, hd}).transpose(1, 2);
  auto k = attn->k_proj(x).view({2, 7, KV, hd}).transpose(1, 2);
  auto v = attn->v_proj(x).view({2, 7, KV, hd}).transpose(1, 2);
  auto rot = [&](torch::Tensor t) {
    auto t1 = t.narrow(-1, 0, hd / 2), t2 = t.narrow(-1, hd / 2, hd / 2);
    return t * tables.cos + torch::cat({-t2, t1}, -1) * tables.sin;
  };
  q = rot(q);
  k = rot(k).repeat_interleave(H / KV, 1);
  v = v.repeat_interleave(H / KV, 1);
  auto scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(hd));
  auto mask = torch::ones({7, 7}, torch::kBool).triu(1);
  auto probs = torch::softmax(scores.masked_fill(mask, -INFINITY), -1);
  auto ref = attn->o_proj(torch::matmul(probs, v).transpose(1, 2).reshape({2, 7, H * hd}));
  EXPECT_TRUE(torch::allclose(got, ref, 1e-5, 1e-6)) << (got - ref).abs().max().item<double>();
}

class SharingScheme : public ::testing::TestWithParam<std::pair<std::string, int64_t>> {};

// A layer-shared model computes exactly what the unshared model of its expanded weights computes.
TEST_P(SharingScheme, EqualsItsExpandedModel) {
  auto [scheme, repeats] = GetParam();
  auto cfg = small(3, scheme, repeats);
  model::Decoder shared(cfg);
  shared->reset_parameters(11);

  config::Config full;
  full.model = cfg;
  auto expanded_cfg = storage::saved_config(full, /*expand_shared=*/true).model;
  EXPECT_EQ(expanded_cfg.n_layers, 3 * repeats);
  model::Decoder expanded(expanded_cfg);
  storage::load_weights(expanded, storage::model_tensors(shared, true), "expanded");

  auto tokens = random_tokens(2, 9, 97, 12);
  EXPECT_TRUE(torch::equal(shared->forward(tokens), expanded->forward(tokens)));
}

// Incremental decoding with one KV-cache slot per effective layer equals recomputing everything.
TEST_P(SharingScheme, KvCacheDecodeEqualsFullForward) {
  auto [scheme, repeats] = GetParam();
  model::Decoder d(small(3, scheme, repeats));
  d->reset_parameters(13);
  torch::NoGradGuard no_grad;
  auto tokens = random_tokens(2, 14, 97, 14);
  auto full = d->forward(tokens);

  auto cache = d->make_cache();
  EXPECT_EQ(cache.slots.size(), static_cast<size_t>(3 * repeats));
  std::vector<torch::Tensor> parts;
  parts.push_back(d->forward(tokens.narrow(1, 0, 5), &cache));  // prefill
  parts.push_back(d->forward(tokens.narrow(1, 5, 3), &cache));  // a chunk after a prefix
  for (int64_t t = 8; t < 14; ++t) parts.push_back(d->forward(tokens.narrow(1, t, 1), &cache));
  EXPECT_EQ(cache.length(), 14);
  auto inc = torch::cat(parts, 1);
  EXPECT_TRUE(torch::allclose(inc, full, 1e-5, 1e-5)) << (inc - full).abs().max().item<double>();
}

INSTANTIATE_TEST_SUITE_P(Model, SharingScheme,
                         ::testing::Values(std::pair{std::string("none"), int64_t{1}},
                                           std::pair{std::string("immediate"), int64_t{2}},
                                           std::pair{std::string("repeat_all_over"), int64_t{2}},
                                           std::pair{std::string("reverse"), int64_t{2}},
                                           std::pair{std::string("reverse"), int64_t{3}}),
                         [](const auto& info) {
                           return info.param.first + "_x" + std::to_string(info.param.second);
                         });

TEST(Decoder, RejectsSequencesLongerThanMaxSeqLen) {
  model::Decoder d(small());
  EXPECT_THROW(d->forward(random_tokens(1, 65, 97, 1)), Error);
}
