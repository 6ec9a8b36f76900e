// The fused training path against the plain reference layers.
//
// On the CPU (every run): the fused autograd functions, running their reference maths, give the
// reference model's outputs and every parameter's gradient, over the knobs a config can turn (GQA
// group counts, head widths, odd dims, one token, relu/gelu, LayerNorm, untied heads, layer
// sharing, activation checkpointing). Their hand-written backward passes are checked against
// autograd there.
//
// On a GPU (skipped elsewhere): each CUDA kernel against its reference maths at fp32 and bf16 over
// odd shapes, the whole model's fused CUDA path against the reference path, and a MobileLLM-125M
// step.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <vector>

#include "config/config.h"
#include "kernels/fused.h"
#include "kernels/ops.h"
#include "model/decoder.h"
#include "test_util.h"
#include "train/loss.h"
#include "train/precision.h"

using namespace deepthin;

namespace {

// Sets the kernel mode for a scope.
struct ModeScope {
  explicit ModeScope(kernels::Mode m) : prev(kernels::mode()) { kernels::set_mode(m); }
  ~ModeScope() { kernels::set_mode(prev); }
  kernels::Mode prev;
};
struct ForceReference {
  ForceReference() { kernels::force_reference(true); }
  ~ForceReference() { kernels::force_reference(false); }
};

// ‖got − want‖ / ‖want‖. Tensors that are zero in exact arithmetic (q and k gradients of a
// one-token sequence, where attention is the identity on v) hold rounding noise only: when both
// norms are under 1e-5 they count as equal.
double rel_err(const at::Tensor& got, const at::Tensor& want) {
  auto g = got.to(at::kDouble).cpu(), w = want.to(at::kDouble).cpu();
  const double wn = w.norm().item<double>(), gn = g.norm().item<double>();
  if (wn < 1e-5 && gn < 1e-5) return 0.0;
  return (g - w).norm().item<double>() / std::max(wn, 1e-30);
}

config::ModelConfig model_cfg(int64_t dim, int64_t heads, int64_t kv, int64_t head_dim,
                              int64_t layers = 2, int64_t vocab = 101) {
  config::ModelConfig c;
  c.vocab_size = vocab;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv;
  c.head_dim = head_dim;
  c.ffn.hidden_dim = 2 * dim + 6;
  c.max_seq_len = 64;
  c.init.std = 0.1;
  c.finalize();
  return c;
}

struct Run {
  at::Tensor hidden, loss;
  std::vector<std::pair<std::string, at::Tensor>> grads;
};

// Forward (hidden states and the fused LM-head loss), backward, gradients by parameter name.
Run run_model(model::Decoder& m, const at::Tensor& tokens, const c10::Device& device,
              train::Precision precision, kernels::Mode mode) {
  ModeScope scope(mode);
  m->zero_grad();
  for (auto& p : m->parameters()) p.mutable_grad() = at::Tensor();
  const int64_t T = tokens.size(1) - 1;
  auto x = tokens.to(device);
  Run r;
  {
    train::AutocastScope autocast(device, precision);
    r.hidden = m->hidden_states(x.narrow(1, 0, T));
  }
  train::LmLossOptions lo;
  lo.chunk_rows = 7;  // several chunks, the last one short
  lo.compute_dtype = precision == train::Precision::bf16 ? at::kBFloat16 : at::kFloat;
  r.loss = train::lm_head_cross_entropy(r.hidden.reshape({-1, r.hidden.size(-1)}),
                                        m->output_weight(), x.narrow(1, 1, T).reshape({-1}), lo);
  r.loss.backward();
  for (const auto& item : m->named_parameters())
    r.grads.emplace_back(
        item.key(), item.value().grad().defined() ? item.value().grad().clone() : at::Tensor());
  r.hidden = r.hidden.detach().to(at::kFloat);
  r.loss = r.loss.detach();
  return r;
}

at::Tensor tokens_for(int64_t B, int64_t T, int64_t vocab, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(vocab, {B, T + 1}, gen, at::kLong);
}

// Compares two runs: hidden states, loss, and every gradient, within `tol` relative (L2) error.
void expect_same(const Run& got, const Run& want, double tol, const std::string& what) {
  EXPECT_LT(rel_err(got.hidden, want.hidden), tol) << what << ": hidden states";
  EXPECT_NEAR(got.loss.item<double>(), want.loss.item<double>(),
              tol * std::abs(want.loss.item<double>()))
      << what << ": loss";
  ASSERT_EQ(got.grads.size(), want.grads.size());
  for (size_t i = 0; i < got.grads.size(); ++i) {
    ASSERT_TRUE(got.grads[i].second.defined())
        << what << ": no gradient for " << got.grads[i].first;
    EXPECT_LT(rel_err(got.grads[i].second, want.grads[i].second), tol)
        << what << ": gradient of " << got.grads[i].first;
  }
}

// The largest relative error of any parameter's gradient of `got` against `want`.
double worst_grad_err(const Run& got, const Run& want) {
  double worst = 0;
  for (size_t i = 0; i < want.grads.size(); ++i)
    worst = std::max(worst, rel_err(got.grads[i].second, want.grads[i].second));
  return worst;
}

struct Variant {
  std::string name;
  config::ModelConfig cfg;
  int64_t B = 2, T = 13;
};

std::vector<Variant> variants() {
  std::vector<Variant> v;
  v.push_back({"mha_hd32", model_cfg(64, 2, 2, 32)});
  v.push_back({"gqa3_hd64_dim200", model_cfg(200, 3, 1, 64)});  // q_dim ≠ dim, 3 groups
  v.push_back({"gqa5_hd32_dim100", model_cfg(100, 5, 1, 32)});  // MQA, 5 groups
  v.push_back({"gqa_hd128", model_cfg(136, 2, 1, 128)});
  {
    auto c = model_cfg(60, 6, 3, 10);  // head_dim 10: no vector path
    v.push_back({"hd10_one_token", c, 1, 1});
  }
  {
    auto c = model_cfg(48, 4, 2, 12);
    c.ffn.type = config::FfnType::relu;
    c.norm.type = config::NormType::layernorm;
    c.tie_embeddings = false;
    c.finalize();
    v.push_back({"relu_layernorm_untied", c});
  }
  {
    auto c = model_cfg(48, 4, 4, 12);
    c.ffn.type = config::FfnType::gelu;
    c.finalize();
    v.push_back({"gelu", c});
  }
  {
    auto c = model_cfg(64, 4, 2, 16, 3);
    c.layer_sharing.scheme = config::SharingScheme::immediate;
    c.layer_sharing.repeats = 2;
    c.finalize();
    v.push_back({"shared_immediate", c});
  }
  {
    auto c = model_cfg(64, 4, 2, 16, 3);
    c.layer_sharing.scheme = config::SharingScheme::reverse;
    c.layer_sharing.repeats = 2;
    c.finalize();
    v.push_back({"shared_reverse", c});
  }
  return v;
}

}  // namespace

// The fused functions (their reference maths on the CPU, fp32) against the plain layers, whose
// gradients come from autograd: the hand-written backward passes are right.
// Sets whether the SwiGLU product is recomputed, for a scope.
struct SwigluRecompute {
  explicit SwigluRecompute(bool on) : prev(kernels::recompute_swiglu()) {
    kernels::set_recompute_swiglu(on);
  }
  ~SwigluRecompute() { kernels::set_recompute_swiglu(prev); }
  bool prev;
};

TEST(FusedPath, CpuMatchesReferenceLayersOnEveryKnob) {
  for (const auto& v : variants()) {
    model::Decoder m(v.cfg);
    m->reset_parameters(7);
    auto tokens = tokens_for(v.B, v.T, v.cfg.vocab_size, 11);
    const c10::Device cpu(c10::kCPU);
    auto ref = run_model(m, tokens, cpu, train::Precision::fp32, kernels::Mode::reference);
    for (bool recompute : {false, true}) {
      SwigluRecompute scope(recompute);
      auto fused = run_model(m, tokens, cpu, train::Precision::fp32, kernels::Mode::fused);
      expect_same(fused, ref, 2e-5, v.name + (recompute ? " (SwiGLU recomputed)" : ""));
    }
  }
}

// Activation checkpointing recomputes blocks in backward: the gradients do not change, on either
// path, with and without layer sharing, for every layer or some.
TEST(FusedPath, RecomputedBlocksGiveTheSameGradients) {
  auto plain = model_cfg(64, 4, 2, 16, 3);
  auto shared = plain;
  shared.layer_sharing.scheme = config::SharingScheme::repeat_all_over;
  shared.layer_sharing.repeats = 2;
  shared.finalize();
  for (const auto& cfg : {plain, shared}) {
    model::Decoder m(cfg);
    m->reset_parameters(3);
    auto tokens = tokens_for(2, 9, cfg.vocab_size, 5);
    const c10::Device cpu(c10::kCPU);
    const int64_t L = cfg.effective_layers();
    for (auto mode : {kernels::Mode::reference, kernels::Mode::fused}) {
      m->set_recompute({});
      auto want = run_model(m, tokens, cpu, train::Precision::fp32, mode);
      std::vector<bool> every(L, true), alternate(L, false);
      for (int64_t i = 0; i < L; i += 2) alternate[i] = true;
      for (const auto& plan : {every, alternate}) {
        m->set_recompute(plan);
        auto got = run_model(m, tokens, cpu, train::Precision::fp32, mode);
        expect_same(got, want, 1e-6, "recompute");
      }
      m->set_recompute({});
    }
  }
}

// How often each parameter's gradient accumulator fires with recomputation (gradient bucketing
// counts on it): once per recomputed use of a shared block, plus once for its plain uses.
TEST(FusedPath, GradientAccumulationCountsFollowTheRecomputePlan) {
  auto cfg = model_cfg(32, 2, 1, 16, 2);
  cfg.layer_sharing.scheme = config::SharingScheme::immediate;  // schedule 0 0 1 1
  cfg.layer_sharing.repeats = 2;
  cfg.finalize();
  model::Decoder m(cfg);
  m->set_recompute({true, true, true, false});
  int block0 = 0, block1 = 0, other = 0;
  for (const auto& [name, n] : m->gradient_accumulations()) {
    if (name.rfind("model.layers.0.", 0) == 0)
      block0 = n;
    else if (name.rfind("model.layers.1.", 0) == 0)
      block1 = n;
    else
      other = n;
  }
  EXPECT_EQ(block0, 2);
  EXPECT_EQ(block1, 2);  // one recomputed use + the plain one
  EXPECT_EQ(other, 1);
  // The count is what autograd does: a hook on a block-0 weight fires twice.
  int fired = 0;
  auto w = m->named_parameters()["model.layers.0.mlp.up_proj.weight"];
  auto acc = torch::autograd::impl::grad_accumulator(w);
  acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
      [&fired](const torch::autograd::variable_list& out, const torch::autograd::variable_list&) {
        ++fired;
        return out;
      }));
  m->hidden_states(tokens_for(1, 6, cfg.vocab_size, 1).narrow(1, 0, 6)).sum().backward();
  EXPECT_EQ(fired, 2);
}

// The raw operations' reference maths against autograd of independent formulas.
TEST(FusedPath, ReferenceBackwardsMatchAutograd) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(21);
  auto opts = at::TensorOptions().dtype(at::kDouble);
  {  // RMSNorm with the residual add
    auto x = at::randn({5, 7, 36}, gen).to(at::kDouble).requires_grad_(true);
    auto d = at::randn({5, 7, 36}, gen).to(at::kDouble).requires_grad_(true);
    auto w = (1 + 0.1 * at::randn({36}, gen)).to(at::kDouble).requires_grad_(true);
    auto gh = at::randn({5, 7, 36}, gen).to(at::kDouble);
    auto gs = at::randn({5, 7, 36}, gen).to(at::kDouble);
    auto s = x + d;
    auto h = w * s * at::rsqrt(s.pow(2).mean(-1, true) + 1e-5);
    torch::autograd::backward({h, s}, {gh, gs});
    auto f = kernels::rms_norm_forward(x.detach(), d.detach(), w.detach(), 1e-5, at::kDouble);
    EXPECT_LT(rel_err(f.h, h), 1e-12);
    auto g = kernels::rms_norm_backward(gh, gs, f.sum, w.detach(), f.rstd, true, at::kDouble);
    EXPECT_LT(rel_err(g.x, x.grad()), 1e-12);
    EXPECT_LT(rel_err(g.delta, d.grad()), 1e-12);
    EXPECT_LT(rel_err(g.weight, w.grad()), 1e-12);
  }
  {  // RoPE + split, GQA: 3 query heads, 1 kv head, hd 8
    const int64_t B = 2, T = 5, H = 3, KV = 1, hd = 8;
    auto qkv = at::randn({B, T, (H + 2 * KV) * hd}, gen).to(at::kDouble).requires_grad_(true);
    auto tables = model::make_rope_tables(hd, T, 10000.0);
    auto view = qkv.view({B, T, H + 2 * KV, hd}).transpose(1, 2);  // [B, heads, T, hd]
    auto q = model::apply_rope(view.narrow(1, 0, H), tables.cos.to(at::kDouble),
                               tables.sin.to(at::kDouble));
    auto k = model::apply_rope(view.narrow(1, H, KV), tables.cos.to(at::kDouble),
                               tables.sin.to(at::kDouble));
    auto v = view.narrow(1, H + KV, KV);
    auto f = kernels::rope_split_forward(qkv.detach(), tables.cos, tables.sin, H, KV, hd);
    EXPECT_LT(rel_err(f.q.transpose(1, 2), q), 1e-12);
    EXPECT_LT(rel_err(f.k.transpose(1, 2), k), 1e-12);
    EXPECT_LT(rel_err(f.v.transpose(1, 2), v), 1e-12);
    auto gq = at::randn({B, H, T, hd}, gen).to(at::kDouble);
    auto gk = at::randn({B, KV, T, hd}, gen).to(at::kDouble);
    auto gv = at::randn({B, KV, T, hd}, gen).to(at::kDouble);
    torch::autograd::backward({q, k, v}, {gq, gk, gv});
    auto g =
        kernels::rope_split_backward(gq.transpose(1, 2), gk.transpose(1, 2), gv.transpose(1, 2),
                                     tables.cos, tables.sin, H, KV, hd, at::kDouble);
    EXPECT_LT(rel_err(g, qkv.grad()), 1e-12);
  }
  {  // SwiGLU
    auto gu = at::randn({4, 3, 2 * 10}, gen).to(at::kDouble).requires_grad_(true);
    auto out = at::silu(gu.narrow(-1, 0, 10)) * gu.narrow(-1, 10, 10);
    auto go = at::randn({4, 3, 10}, gen).to(at::kDouble);
    out.backward(go);
    EXPECT_LT(rel_err(kernels::swiglu_forward(gu.detach()), out), 1e-12);
    EXPECT_LT(rel_err(kernels::swiglu_backward(go, gu.detach()), gu.grad()), 1e-12);
  }
  {  // cross-entropy rows and their gradient, with an ignored row
    auto logits = at::randn({6, 11}, gen).to(at::kDouble).requires_grad_(true);
    auto targets = at::tensor(std::vector<int64_t>{3, 0, -100, 10, 5, 5});
    auto loss = at::cross_entropy_loss(logits, targets, {}, at::Reduction::Mean, -100);
    loss.backward();
    auto buf = logits.detach().clone();
    auto inv = at::full({1}, 1.0 / 5, opts);
    auto rows = kernels::cross_entropy_rows(buf, targets, inv, -100, true);
    EXPECT_NEAR(rows.sum().item<double>() / 5, loss.item<double>(), 1e-12);
    EXPECT_EQ(rows[2].item<double>(), 0.0);
    EXPECT_LT(rel_err(buf, logits.grad()), 1e-12);
  }
}

// The fused path's weight copies follow every way a weight changes, and are reused otherwise.
TEST(FusedPath, WeightCacheFollowsEveryChange) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  auto w1 = at::randn({3, 4}, gen).requires_grad_(true);
  auto w2 = at::randn({2, 4}, gen).requires_grad_(true);
  kernels::WeightCache cache;
  auto expect_copy = [&](at::ScalarType dt, int64_t refreshes, const char* what) {
    const auto& got = cache.get({w1, w2}, dt);
    EXPECT_EQ(got.scalar_type(), dt) << what;
    EXPECT_TRUE(at::equal(got, at::cat({w1, w2}, 0).detach().to(dt))) << what;
    EXPECT_EQ(cache.refreshes(), refreshes) << what;
  };
  expect_copy(at::kFloat, 1, "first use");
  expect_copy(at::kFloat, 1, "unchanged: reused");
  {
    at::NoGradGuard no_grad;
    w1.add_(1.0);  // an in-place update moves the version counter
  }
  expect_copy(at::kFloat, 2, "in-place update");
  // A write the version counter does not see (as NCCL or a graph replay would make) ...
  w2.data_ptr<float>()[5] = 42.0f;
  EXPECT_NE(cache.get({w1, w2}, at::kFloat)[4][1].item<float>(), 42.0f) << "not yet told";
  kernels::weights_changed();  // ... is seen once the step says so
  expect_copy(at::kFloat, 3, "weights_changed");
  EXPECT_EQ(cache.get({w1, w2}, at::kFloat)[4][1].item<float>(), 42.0f);
  {
    at::NoGradGuard no_grad;
    w1.set_data(w1.detach().clone());  // new storage, the same version counter (as Module::to)
  }
  expect_copy(at::kFloat, 4, "new storage");
  expect_copy(at::kBFloat16, 5, "another dtype");
  kernels::WeightCache copied = cache;  // a cloned module must not share the buffer
  EXPECT_EQ(copied.refreshes(), 0);
  EXPECT_TRUE(at::equal(copied.get({w1, w2}, at::kBFloat16), cache.get({w1, w2}, at::kBFloat16)));
  EXPECT_NE(copied.get({w1, w2}, at::kBFloat16).data_ptr(),
            cache.get({w1, w2}, at::kBFloat16).data_ptr());
}

// packed_linear against at::linear over the concatenated weights: output and every gradient, in
// fp32 and with bf16 products (the weights' gradients come back in fp32), cached or not.
TEST(FusedPath, PackedLinearMatchesLinear) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(6);
  for (auto compute : {at::kFloat, at::kBFloat16}) {
    std::vector<at::Tensor> ws = {at::randn({5, 12}, gen), at::randn({3, 12}, gen),
                                  at::randn({3, 12}, gen)};
    for (auto& w : ws) w.requires_grad_(true);
    auto x = at::randn({2, 7, 12}, gen).to(compute).requires_grad_(true);
    auto go = at::randn({2, 7, 11}, gen).to(compute);
    auto want = at::linear(x, at::cat(ws, 0).to(compute));
    want.backward(go);
    std::vector<at::Tensor> want_g = {x.grad().clone()};
    for (auto& w : ws) want_g.push_back(w.grad().clone());
    const double tol = compute == at::kFloat ? 1e-6 : 1e-2;
    kernels::WeightCache cache;
    for (int pass = 0; pass < 2; ++pass) {  // the second pass reuses the cached copy
      x.mutable_grad().reset();
      for (auto& w : ws) w.mutable_grad().reset();
      auto got = kernels::packed_linear(x, ws, cache, compute);
      EXPECT_LT(rel_err(got, want), tol);
      got.backward(go);
      EXPECT_LT(rel_err(x.grad(), want_g[0]), tol);
      for (size_t i = 0; i < ws.size(); ++i) {
        EXPECT_EQ(ws[i].grad().sizes(), ws[i].sizes());
        EXPECT_LT(rel_err(ws[i].grad(), want_g[1 + i]), tol) << "weight " << i;
      }
    }
    EXPECT_EQ(cache.refreshes(), kernels::cache_weights() ? 1 : 0);
  }
}

// Training moves the weights between forwards: the fused path (with its weight copies) keeps
// giving the reference path's loss and gradients after each update.
TEST(FusedPath, FollowsTheWeightsThroughUpdates) {
  auto cfg = model_cfg(48, 4, 2, 12, 2);
  model::Decoder m(cfg);
  m->reset_parameters(9);
  auto tokens = tokens_for(2, 9, cfg.vocab_size, 8);
  const c10::Device cpu(c10::kCPU);
  for (int update = 0; update < 3; ++update) {
    auto fused = run_model(m, tokens, cpu, train::Precision::fp32, kernels::Mode::fused);
    auto ref = run_model(m, tokens, cpu, train::Precision::fp32, kernels::Mode::reference);
    expect_same(fused, ref, 2e-5, "after update " + std::to_string(update));
    at::NoGradGuard no_grad;
    for (auto& p : m->parameters()) p.sub_(0.5 * p.grad());  // a large plain SGD step
  }
}

// ------------------------------------------------------------------------------------------- GPU

namespace {
bool have_cuda() {
  return torch::cuda::is_available();
}
}  // namespace

// Each CUDA kernel against its reference maths (fp32 ATen on the same device), fp32 and bf16, over
// odd shapes: widths that are not multiples of 128 (or of 4), head widths 32/64/128 and 10, one
// token, GQA with 1, 3 and 5 query heads per kv head.
TEST(CudaKernels, MatchTheirReferenceMaths) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device";
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto dev = at::TensorOptions().device(at::kCUDA);
  auto rnd = [&](std::vector<int64_t> shape, at::ScalarType t, double scale = 1.0) {
    return (scale * at::randn(shape, gen)).to(dev.dtype(t));
  };
  // Runs f on the CUDA kernels and on the reference maths; the outputs must agree.
  auto both = [](auto f) {
    auto fast = f();
    ForceReference ref;
    return std::make_pair(fast, f());
  };
  struct SimpleScope {
    explicit SimpleScope(bool on) : prev(kernels::simple_kernels()) {
      kernels::use_simple_kernels(on);
    }
    ~SimpleScope() { kernels::use_simple_kernels(prev); }
    bool prev;
  };
  for (bool simple : {false, true})
    for (auto t : {at::kFloat, at::kBFloat16}) {
      SimpleScope kernel_generation(simple);
      const double tol = t == at::kFloat ? 1e-5 : 1e-2;
      const std::string tn =
          std::string(t == at::kFloat ? "fp32" : "bf16") + (simple ? " simple" : "");
      for (int64_t dim : {576, 960, 1024, 1600, 100, 37}) {
        for (int64_t rows : {1, 3, 1000}) {
          auto x = rnd({rows, dim}, at::kFloat, 3.0);  // the fp32 residual stream
          auto d = rnd({rows, dim}, t);
          auto w = (1 + 0.1 * at::randn({dim}, gen)).to(dev);
          auto [fast, ref] = both([&] { return kernels::rms_norm_forward(x, d, w, 1e-5, t); });
          const std::string what =
              tn + " rms dim " + std::to_string(dim) + " rows " + std::to_string(rows);
          EXPECT_LT(rel_err(fast.sum, ref.sum), 1e-6) << what;
          EXPECT_LT(rel_err(fast.h, ref.h), tol) << what;
          EXPECT_LT(rel_err(fast.rstd, ref.rstd), 1e-5) << what;
          auto [plain, plain_ref] =
              both([&] { return kernels::rms_norm_forward(x, {}, w, 1e-5, t); });
          EXPECT_LT(rel_err(plain.h, plain_ref.h), tol) << what << " (no residual add)";
          EXPECT_LT(rel_err(plain.rstd, plain_ref.rstd), 1e-5) << what << " (no residual add)";
          auto gh = rnd({rows, dim}, t), gs = rnd({rows, dim}, at::kFloat);
          // (copies: clang 14 cannot capture structured bindings)
          auto ref_sum = ref.sum, ref_rstd = ref.rstd;
          auto [gf, gr] = both(
              [&] { return kernels::rms_norm_backward(gh, gs, ref_sum, w, ref_rstd, true, t); });
          EXPECT_LT(rel_err(gf.x, gr.x), 1e-5) << what;
          EXPECT_LT(rel_err(gf.delta, gr.delta), tol) << what;
          EXPECT_LT(rel_err(gf.weight, gr.weight), 1e-4) << what;
        }
      }
      struct Heads {
        int64_t H, KV, hd, T;
      };
      for (auto hs : {Heads{9, 3, 64, 37}, Heads{4, 4, 32, 5}, Heads{5, 1, 128, 17},
                      Heads{6, 2, 10, 3}, Heads{3, 1, 64, 1}}) {
        const int64_t B = 2, nh = hs.H + 2 * hs.KV;
        auto tables = model::make_rope_tables(hs.hd, hs.T + 3, 10000.0);
        auto cos = tables.cos.narrow(0, 3, hs.T).to(dev),
             sin = tables.sin.narrow(0, 3, hs.T).to(dev);
        auto qkv = rnd({B, hs.T, nh * hs.hd}, t);
        auto [f, r] =
            both([&] { return kernels::rope_split_forward(qkv, cos, sin, hs.H, hs.KV, hs.hd); });
        const std::string what = tn + " rope H " + std::to_string(hs.H) + " KV " +
                                 std::to_string(hs.KV) + " hd " + std::to_string(hs.hd);
        EXPECT_LT(rel_err(f.q, r.q), tol) << what;
        EXPECT_LT(rel_err(f.k, r.k), tol) << what;
        EXPECT_EQ(rel_err(f.v, r.v), 0.0) << what;
        // Gradients in the transposed layout SDPA hands back.
        auto gq = rnd({B, hs.H, hs.T, hs.hd}, t).transpose(1, 2);
        auto gk = rnd({B, hs.KV, hs.T, hs.hd}, t).transpose(1, 2);
        auto gv = rnd({B, hs.KV, hs.T, hs.hd}, t).transpose(1, 2);
        auto [bf, br] = both([&] {
          return kernels::rope_split_backward(gq, gk, gv, cos, sin, hs.H, hs.KV, hs.hd, t);
        });
        EXPECT_LT(rel_err(bf, br), tol) << what;
      }
      for (int64_t F : {1536, 4352, 100, 7}) {
        auto gu = rnd({3, 41, 2 * F}, t, 2.0);
        auto go = rnd({3, 41, F}, t);
        auto [f, r] = both([&] { return kernels::swiglu_forward(gu); });
        auto [bf, br] = both([&] { return kernels::swiglu_backward(go, gu); });
        EXPECT_LT(rel_err(f, r), tol) << tn << " swiglu F " << F;
        EXPECT_LT(rel_err(bf, br), tol) << tn << " swiglu backward F " << F;
      }
      for (int64_t V : {32000, 1001, 8}) {
        for (int64_t rows : {1, 77}) {
          auto logits = rnd({rows, V}, t, 4.0);
          auto targets = at::randint(V, {rows}, gen, at::kLong).to(dev);
          if (rows > 1) targets[1] = -100;
          auto inv = at::full({1}, 1.0 / rows, dev.dtype(at::kFloat));
          auto lf = logits.clone(), lr = logits.clone();
          auto rows_f = kernels::cross_entropy_rows(lf, targets, inv, -100, true);
          at::Tensor rows_r;
          {
            ForceReference ref;
            rows_r = kernels::cross_entropy_rows(lr, targets, inv, -100, true);
          }
          const std::string what =
              tn + " xent V " + std::to_string(V) + " rows " + std::to_string(rows);
          EXPECT_LT(rel_err(rows_f, rows_r), 1e-5) << what;
          EXPECT_LT(rel_err(lf, lr), tol) << what;
          auto no_grad = logits.clone();
          auto rows_n = kernels::cross_entropy_rows(no_grad, targets, inv, -100, false);
          EXPECT_TRUE(at::equal(no_grad, logits)) << what << ": no-grad call wrote the logits";
          EXPECT_LT(rel_err(rows_n, rows_r), 1e-5) << what;
        }
      }
    }
}

// The distillation kernel against its reference maths: every divergence, fp32 and bf16 logits,
// temperatures 1 and 2.5, pure KD and a mix with the CE, ignored rows, vocabularies that are and
// are not multiples of 128 (1001: no vector loads), and the no-gradient call.
TEST(CudaKernels, DistillationRowsMatchTheirReference) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device";
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  auto dev = at::TensorOptions().device(at::kCUDA);
  using D = kernels::KdDivergence;
  for (auto t : {at::kFloat, at::kBFloat16})
    for (int64_t V : {32000, 1001, 1000})
      for (D loss : {D::forward_kl, D::reverse_kl, D::symmetric_kl, D::js})
        for (double T : {1.0, 2.5})
          for (double ratio : {1.0, 0.3}) {
            const int64_t rows = 37;
            auto zs = (4.0 * at::randn({rows, V}, gen)).to(dev.dtype(t));
            // The teacher agrees with the student in part, as a real one does.
            auto zt =
                (0.5 * zs.to(at::kFloat).cpu() + 3.0 * at::randn({rows, V}, gen)).to(dev.dtype(t));
            auto targets = at::randint(V, {rows}, gen, at::kLong).to(dev);
            targets[2] = -100;
            targets[30] = -100;
            auto inv = at::full({1}, 1.0 / 35, dev.dtype(at::kFloat));
            auto gf = zs.clone(), gr = zs.clone();
            auto f = kernels::distillation_rows(gf, zt, targets, inv, loss, T, 1 - ratio, ratio * T,
                                                -100, true);
            kernels::DistillationRows r;
            {
              ForceReference ref;
              r = kernels::distillation_rows(gr, zt, targets, inv, loss, T, 1 - ratio, ratio * T,
                                             -100, true);
            }
            const std::string what = std::string(t == at::kFloat ? "fp32" : "bf16") + " V " +
                                     std::to_string(V) + " loss " +
                                     std::to_string(static_cast<int>(loss)) + " T " +
                                     std::to_string(T) + " ratio " + std::to_string(ratio);
            EXPECT_LT(rel_err(f.ce, r.ce), 1e-5) << what;
            EXPECT_LT(rel_err(f.kd, r.kd), 1e-4) << what;
            EXPECT_GT(r.kd.abs().min().item<double>() + r.kd.abs().max().item<double>(), 1e-3)
                << what;
            EXPECT_EQ(f.kd[2].item<float>(), 0.f) << what;
            EXPECT_EQ(f.ce[30].item<float>(), 0.f) << what;
            EXPECT_LT(rel_err(gf, gr), t == at::kFloat ? 1e-5 : 1e-2) << what;
            EXPECT_EQ(gf[2].abs().max().item<double>(), 0.0) << what << ": an ignored row";
            auto untouched = zs.clone();
            auto n = kernels::distillation_rows(untouched, zt, targets, inv, loss, T, 1 - ratio,
                                                ratio * T, -100, false);
            EXPECT_TRUE(at::equal(untouched, zs)) << what << ": the no-gradient call wrote zs";
            EXPECT_LT(rel_err(n.kd, r.kd), 1e-4) << what;
          }
}

// The whole model: the fused CUDA path against the reference path on the same GPU, fp32 and bf16
// autocast, on every knob of the CPU test.
TEST(CudaKernels, FusedModelMatchesReferencePath) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device";
  const c10::Device cuda(c10::kCUDA, 0);
  for (const auto& v : variants()) {
    model::Decoder m(v.cfg);
    m->reset_parameters(7);
    m->to(cuda);
    auto tokens = tokens_for(v.B, v.T, v.cfg.vocab_size, 11);
    auto ref32 = run_model(m, tokens, cuda, train::Precision::fp32, kernels::Mode::reference);
    auto fused32 = run_model(m, tokens, cuda, train::Precision::fp32, kernels::Mode::auto_);
    expect_same(fused32, ref32, 1e-4, v.name + " fp32");
    // bf16: the fused path is no further from the fp32 result than the reference bf16 path is
    // (they round at different places: the fused kernels keep fp32 inside, so they can be closer).
    auto ref16 = run_model(m, tokens, cuda, train::Precision::bf16, kernels::Mode::reference);
    auto fused16 = run_model(m, tokens, cuda, train::Precision::bf16, kernels::Mode::auto_);
    const double worst_ref = worst_grad_err(ref16, ref32),
                 worst_fused = worst_grad_err(fused16, ref32);
    std::printf("%s bf16 vs fp32: worst gradient rel. error fused %.3e, reference %.3e\n",
                v.name.c_str(), worst_fused, worst_ref);
    EXPECT_LT(worst_fused, 1.5 * worst_ref + 1e-3) << v.name;
    EXPECT_LT(rel_err(fused16.hidden, ref32.hidden), 2e-2) << v.name;
  }
}

// A MobileLLM-125M step (micro-batch 2 × 512) on the GPU in bf16: fused path against the reference
// path, loss and every gradient; and against the fp32 reference, to show both sit at bf16 distance.
TEST(CudaKernels, Whole125MStepMatchesReference) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device";
  const c10::Device cuda(c10::kCUDA, 0);
  auto cfg = config::load_config(test::preset("mobilellm-125m")).model;
  model::Decoder m(cfg);
  m->reset_parameters(0);
  m->to(cuda);
  auto tokens = tokens_for(2, 512, cfg.vocab_size, 3);
  auto exact = run_model(m, tokens, cuda, train::Precision::fp32, kernels::Mode::reference);
  auto ref = run_model(m, tokens, cuda, train::Precision::bf16, kernels::Mode::reference);
  auto fused = run_model(m, tokens, cuda, train::Precision::bf16, kernels::Mode::auto_);
  const double worst_fused = worst_grad_err(fused, exact), worst_ref = worst_grad_err(ref, exact);
  std::printf(
      "125M step vs fp32: loss fused %.6f, reference bf16 %.6f, fp32 %.6f; worst gradient "
      "rel. error fused %.3e, reference bf16 %.3e\n",
      fused.loss.item<double>(), ref.loss.item<double>(), exact.loss.item<double>(), worst_fused,
      worst_ref);
  expect_same(fused, ref, 3e-2, "125M bf16");
  // The fused path is no further from fp32 than the reference bf16 path (plus a margin).
  EXPECT_LT(worst_fused, 1.5 * worst_ref + 1e-3);
}
