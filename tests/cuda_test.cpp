// GPU checks: run on the GPU machine (scripts/gpu_check.sh); skipped where torch has no CUDA
// device.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>

#include "config/config.h"
#include "model/decoder.h"
#include "test_util.h"
#include "train/precision.h"

using namespace deepthin;

TEST(Cuda, DeviceNamesResolveToAConcreteIndex) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  EXPECT_EQ(train::parse_device("cuda").index(), 0);
  EXPECT_EQ(train::parse_device("auto").index(), 0);
  EXPECT_EQ(train::parse_device("cuda:0").index(), 0);
}

// The fused CUDA RMSNorm equals the reference formula (used on the CPU), values and gradients.
TEST(Cuda, FusedRmsNormMatchesReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  config::NormConfig nc;
  model::Norm norm(nc, 576);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  {
    torch::NoGradGuard ng;
    norm->weight.copy_(1.0 + 0.1 * torch::randn({576}, gen));
  }
  auto x = (3.0 * torch::randn({4, 33, 576}, gen)).requires_grad_(true);
  auto up = torch::randn({4, 33, 576}, gen);
  auto ref = norm(x);
  (ref * up).sum().backward();
  auto gx_ref = x.grad().clone(), gw_ref = norm->weight.grad().clone();
  norm->to(torch::kCUDA);
  norm->weight.mutable_grad().reset();
  auto xc = x.detach().to(torch::kCUDA).requires_grad_(true);
  auto got = norm(xc);
  (got * up.to(torch::kCUDA)).sum().backward();
  EXPECT_TRUE(torch::allclose(got.cpu(), ref, 1e-5, 1e-5))
      << (got.cpu() - ref).abs().max().item<double>();
  EXPECT_TRUE(torch::allclose(xc.grad().cpu(), gx_ref, 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(norm->weight.grad().cpu(), gw_ref, 1e-3, 1e-3))
      << (norm->weight.grad().cpu() - gw_ref).abs().max().item<double>();
}

// A bf16-autocast CUDA forward of MobileLLM-125M agrees with the fp32 CPU forward within bf16
// rounding.
TEST(Cuda, Bf16ForwardOf125MMatchesFp32Cpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto cfg = config::load_config(test::preset("mobilellm-125m")).model;
  model::Decoder m(cfg);
  m->reset_parameters(0);
  m->eval();
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto tokens = torch::randint(cfg.vocab_size, {2, 512}, gen, torch::kInt64);

  auto ref = torch::log_softmax(m->forward(tokens), -1);
  m->to(torch::kCUDA);
  torch::Tensor got;
  {
    train::AutocastScope autocast(torch::Device(torch::kCUDA), train::Precision::bf16);
    auto logits = m->forward(tokens.to(torch::kCUDA));
    EXPECT_EQ(logits.scalar_type(), torch::kBFloat16);  // the head ran in bf16
    got = torch::log_softmax(logits.to(torch::kFloat32), -1).cpu();
  }
  double rel = ((got - ref).norm() / ref.norm()).item<double>();
  double max_abs = (got - ref).abs().max().item<double>();
  auto nll_ref = -ref.narrow(1, 0, 511).gather(-1, tokens.narrow(1, 1, 511).unsqueeze(-1)).mean();
  auto nll_got = -got.narrow(1, 0, 511).gather(-1, tokens.narrow(1, 1, 511).unsqueeze(-1)).mean();
  std::printf(
      "125M bf16 CUDA vs fp32 CPU log-probs: rel %.3e, max |d| %.3e, mean NLL %.6f vs %.6f\n", rel,
      max_abs, nll_got.item<double>(), nll_ref.item<double>());
  EXPECT_LT(rel, 1e-2);  // bf16 operands land between 1e-3 and 1e-2
  EXPECT_NEAR(nll_got.item<double>(), nll_ref.item<double>(), 1e-2);
}
