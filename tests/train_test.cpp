#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "config/config.h"
#include "train/loss.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "util/error.h"

using namespace deepthin;

namespace {
at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen);
}
}  // namespace

// The fused, chunked LM-head loss equals log_softmax + NLL on full logits, values and gradients.
TEST(Loss, ChunkedFusedLossMatchesNaiveLossAndGradients) {
  const int64_t N = 37, D = 16, V = 50;
  for (int64_t chunk : {1, 8, 37, 100}) {
    auto h1 = randn({N, D}, 1).requires_grad_(true);
    auto w1 = randn({V, D}, 2).mul_(0.3).requires_grad_(true);
    auto targets = at::randint(V, {N}, at::make_generator<at::CPUGeneratorImpl>(3), at::kLong);
    targets[5] = -100;  // masked
    targets[20] = -100;
    auto h2 = h1.detach().clone().requires_grad_(true);
    auto w2 = w1.detach().clone().requires_grad_(true);

    train::LmLossOptions o;
    o.chunk_rows = chunk;
    auto fused = train::lm_head_cross_entropy(h1, w1, targets, o);
    auto naive = at::nll_loss(at::log_softmax(at::matmul(h2, w2.t()), 1), targets, {},
                              at::Reduction::Mean, -100);
    EXPECT_NEAR(fused.item<double>(), naive.item<double>(), 1e-5) << chunk;
    (fused * 2.5).backward();
    (naive * 2.5).backward();
    EXPECT_TRUE(at::allclose(h1.grad(), h2.grad(), 1e-5, 1e-6)) << chunk;
    EXPECT_TRUE(at::allclose(w1.grad(), w2.grad(), 1e-5, 1e-6)) << chunk;
    torch::NoGradGuard ng;
    EXPECT_NEAR(train::lm_head_cross_entropy(h1, w1, targets, o).item<double>(),
                naive.item<double>(), 1e-5);
  }
}

// AdamW through the fused kernel equals torch::optim::AdamW step for step, decay groups included.
TEST(Optimizer, FusedAdamWMatchesTorchAdamW) {
  auto a = randn({5, 4}, 4), b = randn({4}, 5);
  auto pa = a.clone().requires_grad_(true), pb = b.clone().requires_grad_(true);
  auto ra = a.clone().requires_grad_(true), rb = b.clone().requires_grad_(true);
  config::OptimizerConfig cfg;
  cfg.lr = 1e-2;
  cfg.weight_decay = 0.1;
  cfg.no_decay = {"norm"};
  train::AdamW ours(std::vector<std::pair<std::string, at::Tensor>>{{"layer.weight", pa},
                                                                    {"layer.norm.weight", pb}},
                    cfg);
  EXPECT_EQ(ours.decayed(), std::vector<std::string>{"layer.weight"});
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      std::vector<at::Tensor>{ra},
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1)));
  groups.emplace_back(
      std::vector<at::Tensor>{rb},
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
  torch::optim::AdamW ref(groups, torch::optim::AdamWOptions(1e-2));
  for (int step = 0; step < 5; ++step) {
    auto g1 = randn({5, 4}, 10 + step), g2 = randn({4}, 20 + step);
    pa.mutable_grad() = g1.clone();
    pb.mutable_grad() = g2.clone();
    ra.mutable_grad() = g1.clone();
    rb.mutable_grad() = g2.clone();
    ours.step(1e-2);
    ref.step();
    ASSERT_TRUE(at::allclose(pa, ra, 1e-6, 1e-7)) << step << "\n" << pa - ra;
    ASSERT_TRUE(at::allclose(pb, rb, 1e-6, 1e-7)) << step;
  }
  EXPECT_EQ(ours.steps(), 5);
}

// ZeRO-1 updates slices: two optimizers over complementary slices of a parameter (one of them
// cutting through the middle of a row) do exactly what one optimizer over the whole does, and each
// slice restores its part of the saved full moments.
TEST(Optimizer, SlicesUpdateLikeTheWhole) {
  auto a = randn({6, 5}, 7);
  auto whole = a.clone().requires_grad_(true), split = a.clone().requires_grad_(true);
  config::OptimizerConfig cfg;
  cfg.lr = 1e-2;
  train::AdamW full(std::vector<train::ParamSlice>{{"w", whole, 0, -1}}, cfg);
  train::AdamW lo(std::vector<train::ParamSlice>{{"w", split, 0, 13}}, cfg);
  train::AdamW hi(std::vector<train::ParamSlice>{{"w", split, 13, -1}}, cfg);
  EXPECT_EQ(lo.exp_avg_flat().numel(), 13);
  EXPECT_EQ(hi.exp_avg_flat().numel(), 17);
  for (int step = 0; step < 3; ++step) {
    auto g = randn({6, 5}, 30 + step);
    whole.mutable_grad() = g.clone();
    split.mutable_grad() = g.clone();
    full.step(1e-2);
    lo.step(1e-2);
    hi.step(1e-2);
    ASSERT_TRUE(at::allclose(whole, split, 1e-6, 1e-9)) << step;
  }
  EXPECT_TRUE(at::equal(at::cat({lo.exp_avg_flat(), hi.exp_avg_flat()}), full.exp_avg_flat()));
  // Restoring: a fresh slice optimizer takes its part of the full moments.
  train::AdamW again(std::vector<train::ParamSlice>{{"w", split, 13, -1}}, cfg);
  again.load_state(full.state_tensors(), 3, "test");
  // The kernel's vector body and scalar tail round v = β2·v + (1 − β2)·g² differently in the last
  // bit, and slices move elements between the two.
  EXPECT_TRUE(at::allclose(at::cat({lo.exp_avg_sq_flat(), hi.exp_avg_sq_flat()}),
                           full.exp_avg_sq_flat(), 1e-6, 0));
  EXPECT_TRUE(at::equal(again.exp_avg_flat(), full.exp_avg_flat().narrow(0, 13, 17)));
  EXPECT_TRUE(at::equal(again.exp_avg_sq_flat(), full.exp_avg_sq_flat().narrow(0, 13, 17)));
  EXPECT_THROW(lo.state_tensors(), Error);
}

TEST(Schedule, WarmupCosineLinearWsdConstant) {
  config::ScheduleConfig s;
  s.warmup_steps = 10;
  s.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(train::learning_rate(s, 1.0, 0, 110), 0.1);
  EXPECT_DOUBLE_EQ(train::learning_rate(s, 1.0, 9, 110), 1.0);
  EXPECT_NEAR(train::learning_rate(s, 1.0, 10, 110), 1.0, 1e-12);
  EXPECT_NEAR(train::learning_rate(s, 1.0, 109, 110), 0.1, 1e-12);  // cosine ends at 10%
  EXPECT_NEAR(train::learning_rate(s, 1.0, 59, 110),
              0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 49.0 / 99.0)), 1e-12);
  s.type = config::ScheduleType::linear;
  EXPECT_NEAR(train::learning_rate(s, 1.0, 109, 110), 0.1, 1e-12);
  s.type = config::ScheduleType::wsd;
  s.decay_fraction = 0.2;
  EXPECT_DOUBLE_EQ(train::learning_rate(s, 1.0, 60, 110), 1.0);
  EXPECT_NEAR(train::learning_rate(s, 1.0, 109, 110), 0.1, 1e-12);
  s.type = config::ScheduleType::constant;
  EXPECT_DOUBLE_EQ(train::learning_rate(s, 1.0, 100, 110), 1.0);
}
