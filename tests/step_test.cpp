// The training step's three launches (train/step.h) against one another.
//
// On the CPU (every run): the device step — clipping and the non-finite skip as tensors fed to
// AdamW, no host synchronisation — follows the eager reference step, and skips a non-finite step
// leaving every weight and moment untouched. On a GPU (skipped elsewhere): CUDA-graph replays equal
// the same device step run uncaptured, step for step, and the graph skips a non-finite step too.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "config/config.h"
#include "dist/comm.h"
#include "model/decoder.h"
#include "test_util.h"
#include "train/optimizer.h"
#include "train/step.h"

using namespace deepthin;

namespace {

config::Config small_config(int64_t grad_accum, double clip) {
  config::Config cfg;
  auto& m = cfg.model;
  m.vocab_size = 97;
  m.dim = 48;
  m.n_layers = 3;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.ffn.hidden_dim = 80;
  m.max_seq_len = 32;
  cfg.train.micro_batch_size = 3;
  cfg.train.seq_len = 16;
  cfg.train.grad_accum_steps = grad_accum;
  cfg.train.grad_clip = clip;
  cfg.train.loss_chunk_tokens = 20;
  cfg.optimizer.lr = 3e-3;
  m.init.std = 0.1;
  m.finalize();
  cfg.finalize();
  return cfg;
}

// A model, its optimizer and a step, on one device.
struct Trainee {
  Trainee(const config::Config& cfg, const c10::Device& device, train::Precision precision,
          train::Teacher* teacher = nullptr, bool teacher_cache = false)
      : m(cfg.model), kd(cfg.kd) {
    m->reset_parameters(5);
    m->to(device);
    train::configure_for_training(m, cfg.train);
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (const auto& item : m->named_parameters()) named.emplace_back(item.key(), item.value());
    opt = std::make_unique<train::AdamW>(named, cfg.optimizer);
    auto tc = cfg.train;
    tc.cuda_graph = config::GraphChoice::off;
    step = std::make_unique<train::TrainStep>(
        train::TrainStep::Parts{m, opt.get(), &comm, nullptr, teacher, &kd, device, precision,
                                teacher_cache},
        tc);
  }
  model::Decoder m;
  config::KdConfig kd;
  dist::Comm comm;
  std::unique_ptr<train::AdamW> opt;
  std::unique_ptr<train::TrainStep> step;
};

// Batches [B, T + 1] that each step draws in order, the same for every trainee.
std::vector<at::Tensor> batches(int64_t n, const config::Config& cfg) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(17);
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < n; ++i)
    out.push_back(at::randint(cfg.model.vocab_size,
                              {cfg.train.micro_batch_size, cfg.train.seq_len + 1}, gen, at::kLong));
  return out;
}

// Batches with kd.cache's rows: a random teacher's top-k log-probabilities at each position.
std::vector<train::StepBatch> cached_batches(int64_t n, const config::Config& cfg, int64_t k) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(29);
  std::vector<train::StepBatch> out;
  for (const auto& tokens : batches(n, cfg)) {
    auto logits = 3.0 * at::randn({tokens.size(0), tokens.size(1) - 1, cfg.model.vocab_size}, gen);
    auto top = at::topk(at::log_softmax(logits, -1), k, -1);
    train::StepBatch b(tokens);
    b.teacher_ids = std::get<1>(top);
    b.teacher_logp = std::get<0>(top);
    out.push_back(b);
  }
  return out;
}

template <typename Batch>
std::vector<train::StepResult> run_steps(Trainee& t, const std::vector<Batch>& data,
                                         int64_t steps) {
  size_t next = 0;
  std::vector<train::StepResult> out;
  for (int64_t s = 0; s < steps; ++s)
    out.push_back(
        t.step->run([&] { return data.at(next++); }, 2e-3 * (1.0 + 0.1 * s), s + 1, false));
  return out;
}

double max_param_diff(Trainee& a, Trainee& b) {
  double worst = 0;
  auto pa = a.m->named_parameters(), pb = b.m->named_parameters();
  for (const auto& item : pa) {
    auto d = (item.value().detach().cpu() - pb[item.key()].detach().cpu()).abs().max();
    worst = std::max(worst, d.item<double>());
  }
  return worst;
}

bool have_cuda() {
  return torch::cuda::is_available();
}

// Distillation: the config asks for a teacher mix (ratio 0.6, T 2, reverse KL), and a wider,
// shallower teacher of the same vocabulary, frozen, on `device` (bf16 on GPUs, as kd.teacher
// loads).
config::Config with_kd(config::Config cfg) {
  cfg.kd.ratio = 0.6;
  cfg.kd.temperature = 2.0;
  cfg.kd.loss = config::KdLossType::reverse_kl;
  return cfg;
}
train::Teacher make_teacher(const config::Config& student, const c10::Device& device) {
  auto tc = student.model;
  tc.dim = 64;
  tc.n_layers = 2;
  tc.finalize();
  train::Teacher t;
  t.model = model::Decoder(tc);
  t.model->reset_parameters(23);
  for (auto& p : t.model->parameters()) p.requires_grad_(false);
  t.model->eval();
  if (device.is_cuda())
    t.model->to(device, at::kBFloat16);
  else
    t.model->to(device);
  t.device = device;
  return t;
}

}  // namespace

// The device step against the eager one over five steps with two micro-batches and a clipping
// threshold the early gradients exceed: the same losses (bit for bit: the forward and backward are
// the same kernels) and gradient norms, weights within fp32 rounding of the division by
// (norm + 1e-6) / clip instead of the multiplication by its inverse.
TEST(TrainStepLaunch, DeviceStepFollowsTheEagerStepOnCpu) {
  const auto cfg = small_config(/*grad_accum=*/2, /*clip=*/0.5);
  const c10::Device cpu(c10::kCPU);
  Trainee eager(cfg, cpu, train::Precision::fp32), device(cfg, cpu, train::Precision::fp32);
  device.step->set_launch(train::Launch::device);
  EXPECT_EQ(device.step->launch(), train::Launch::device);
  const auto data = batches(10, cfg);
  auto re = run_steps(eager, data, 5), rd = run_steps(device, data, 5);
  int clipped = 0;
  for (size_t s = 0; s < re.size(); ++s) {
    EXPECT_TRUE(rd[s].applied);
    EXPECT_NEAR(rd[s].loss, re[s].loss, 1e-5 * std::abs(re[s].loss)) << "step " << s + 1;
    EXPECT_NEAR(rd[s].grad_norm, re[s].grad_norm, 1e-4 * re[s].grad_norm) << "step " << s + 1;
    clipped += re[s].grad_norm > 0.5;
  }
  EXPECT_GE(clipped, 2) << "the test must exercise clipping";
  EXPECT_EQ(device.opt->steps(), 5);
  // The host's time between one step's synchronisation and the next launch: four gaps in five
  // steps (none before the first), none counted for the eager step.
  EXPECT_EQ(device.step->host_gaps(), 4);
  EXPECT_GT(device.step->host_gap_s(), 0.0);
  EXPECT_EQ(eager.step->host_gaps(), 0);
  const double diff = max_param_diff(eager, device);
  std::printf("device vs eager step after 5 steps: max |Δ weight| %.3e\n", diff);
  EXPECT_LT(diff, 1e-5);
  EXPECT_GT(re.back().loss, 0.0);
  EXPECT_LT(re.back().loss, re.front().loss);  // it trains
}

// Distillation in the device step (what the CUDA graph captures): the same losses, CE and KD parts,
// norms and weights as the eager step, with a teacher on the same device.
TEST(TrainStepLaunch, DeviceStepWithATeacherFollowsTheEagerStepOnCpu) {
  const auto cfg = with_kd(small_config(/*grad_accum=*/2, /*clip=*/0.5));
  const c10::Device cpu(c10::kCPU);
  auto teacher = make_teacher(cfg, cpu);
  Trainee eager(cfg, cpu, train::Precision::fp32, &teacher),
      device(cfg, cpu, train::Precision::fp32, &teacher);
  device.step->set_launch(train::Launch::device);
  const auto data = batches(10, cfg);
  auto re = run_steps(eager, data, 5), rd = run_steps(device, data, 5);
  for (size_t s = 0; s < re.size(); ++s) {
    EXPECT_TRUE(rd[s].applied);
    EXPECT_NEAR(rd[s].loss, re[s].loss, 1e-5 * std::abs(re[s].loss)) << "step " << s + 1;
    EXPECT_NEAR(rd[s].ce, re[s].ce, 1e-5 * std::abs(re[s].ce)) << "step " << s + 1;
    EXPECT_NEAR(rd[s].kd, re[s].kd, 1e-5 * std::abs(re[s].kd)) << "step " << s + 1;
    EXPECT_GT(re[s].kd, 0.0);
    EXPECT_NEAR(rd[s].grad_norm, re[s].grad_norm, 1e-4 * re[s].grad_norm) << "step " << s + 1;
  }
  // The reported loss is the mix of its parts.
  EXPECT_NEAR(re[0].loss, 0.4 * re[0].ce + 0.6 * 4.0 * re[0].kd, 1e-6 * re[0].loss);
  EXPECT_LT(max_param_diff(eager, device), 1e-5);
}

// Distillation from kd.cache's rows in the device step: the same losses, parts, norms and weights
// as the eager step.
TEST(TrainStepLaunch, DeviceStepFromACacheFollowsTheEagerStepOnCpu) {
  auto cfg = with_kd(small_config(2, 0.5));
  cfg.kd.loss = config::KdLossType::forward_kl;
  const c10::Device cpu(c10::kCPU);
  Trainee eager(cfg, cpu, train::Precision::fp32, nullptr, true),
      device(cfg, cpu, train::Precision::fp32, nullptr, true);
  device.step->set_launch(train::Launch::device);
  const auto data = cached_batches(10, cfg, 7);
  auto re = run_steps(eager, data, 5), rd = run_steps(device, data, 5);
  for (size_t s = 0; s < re.size(); ++s) {
    EXPECT_NEAR(rd[s].loss, re[s].loss, 1e-5 * std::abs(re[s].loss)) << "step " << s + 1;
    EXPECT_NEAR(rd[s].kd, re[s].kd, 1e-5 * std::abs(re[s].kd)) << "step " << s + 1;
    EXPECT_GT(re[s].kd, 0.0);
  }
  EXPECT_LT(max_param_diff(eager, device), 1e-5);
}

// A non-finite loss makes the device step a no-op: weights, moments and the step count stay.
TEST(TrainStepLaunch, DeviceStepSkipsANonFiniteStep) {
  const auto cfg = small_config(1, 1.0);
  const c10::Device cpu(c10::kCPU);
  Trainee t(cfg, cpu, train::Precision::fp32);
  t.step->set_launch(train::Launch::device);
  const auto data = batches(4, cfg);
  run_steps(t, data, 2);
  std::vector<at::Tensor> before;
  for (const auto& p : t.m->parameters()) before.push_back(p.detach().clone());
  auto moments = t.opt->exp_avg_flat().clone();
  {
    torch::NoGradGuard ng;
    t.m->parameters().back().view(-1)[0] = NAN;  // the final norm's weight: the loss is NaN
  }
  before.back().view(-1)[0] = NAN;
  size_t next = 2;
  auto r = t.step->run([&] { return data.at(next++); }, 1e-3, 3, false);
  EXPECT_FALSE(r.applied);
  EXPECT_TRUE(std::isnan(r.loss));
  EXPECT_EQ(t.opt->steps(), 2);
  auto params = t.m->parameters();
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_TRUE(at::equal(params[i].detach().nan_to_num(0), before[i].nan_to_num(0))) << i;
  EXPECT_TRUE(at::equal(t.opt->exp_avg_flat(), moments));
}

TEST(TrainStepLaunch, GraphOnWhereItCannotApplyIsAnInputError) {
  auto cfg = small_config(1, 1.0);
  cfg.train.cuda_graph = config::GraphChoice::on;
  model::Decoder m(cfg.model);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& item : m->named_parameters()) named.emplace_back(item.key(), item.value());
  train::AdamW opt(named, cfg.optimizer);
  dist::Comm comm;
  const auto msg = test::input_error([&] {
    train::TrainStep step(
        {m, &opt, &comm, nullptr, nullptr, nullptr, c10::Device(c10::kCPU), train::Precision::fp32},
        cfg.train);
  });
  EXPECT_NE(msg.find("train.cuda_graph is 'on'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cpu"), std::string::npos) << msg;
  // auto quietly keeps the eager step there.
  cfg.train.cuda_graph = config::GraphChoice::auto_;
  train::TrainStep step(
      {m, &opt, &comm, nullptr, nullptr, nullptr, c10::Device(c10::kCPU), train::Precision::fp32},
      cfg.train);
  EXPECT_EQ(step.launch(), train::Launch::eager);
}

// GPU: eight CUDA-graph steps (two warm device steps, the capture, six replays) with two
// micro-batches, clipping and a learning rate that changes every step, against the same device
// step run uncaptured: the same losses, norms and weights. Then a non-finite replay is skipped.
TEST(TrainStepLaunch, CudaGraphStepsEqualUncapturedSteps) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device";
  const c10::Device cuda(c10::kCUDA, 0);
  for (auto precision : {train::Precision::fp32, train::Precision::bf16}) {
    const auto cfg = small_config(2, 0.5);
    Trainee uncaptured(cfg, cuda, precision), graphed(cfg, cuda, precision);
    uncaptured.step->set_launch(train::Launch::device);
    graphed.step->set_launch(train::Launch::graph);
    // Two batches in turn: the model must learn them, so the losses fall.
    auto two = batches(2, cfg);
    std::vector<at::Tensor> data;
    for (int i = 0; i < 20; ++i) data.push_back(two[i % 2]);
    auto ru = run_steps(uncaptured, data, 8), rg = run_steps(graphed, data, 8);
    double worst_loss = 0;
    for (size_t s = 0; s < ru.size(); ++s) {
      EXPECT_TRUE(rg[s].applied);
      worst_loss = std::max(worst_loss, std::abs(rg[s].loss - ru[s].loss));
      EXPECT_NEAR(rg[s].loss, ru[s].loss, 1e-5 * std::abs(ru[s].loss)) << "step " << s + 1;
      EXPECT_NEAR(rg[s].grad_norm, ru[s].grad_norm, 1e-4 * ru[s].grad_norm) << "step " << s + 1;
    }
    const double diff = max_param_diff(uncaptured, graphed);
    std::printf(
        "%s: graph vs uncaptured after 8 steps: max |Δ loss| %.3e, max |Δ weight| %.3e; loss "
        "%.4f -> %.4f\n",
        train::precision_name(precision), worst_loss, diff, rg.front().loss, rg.back().loss);
    EXPECT_LT(diff, precision == train::Precision::fp32 ? 1e-5 : 1e-4);
    EXPECT_LT(rg.back().loss, rg.front().loss);
    EXPECT_EQ(graphed.opt->steps(), 8);

    std::vector<at::Tensor> before;
    for (const auto& p : graphed.m->parameters()) before.push_back(p.detach().clone());
    {
      torch::NoGradGuard ng;
      graphed.m->parameters().back().view(-1)[0] = NAN;
    }
    before.back().view(-1)[0] = NAN;
    size_t next = 16;
    auto r = graphed.step->run([&] { return data.at(next++); }, 1e-3, 9, false);
    EXPECT_FALSE(r.applied);
    EXPECT_EQ(graphed.opt->steps(), 8);
    auto params = graphed.m->parameters();
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_TRUE(at::equal(params[i].detach().nan_to_num(0), before[i].nan_to_num(0))) << i;
  }
}

// GPU: distillation captured — the teacher's forward and the KD loss inside the CUDA graph — equals
// the same device step run uncaptured, step for step (losses, CE and KD parts, norms, weights);
// with train.cuda_graph auto a KD step on one GPU is captured.
TEST(TrainStepLaunch, CapturedDistillationStepsEqualUncapturedSteps) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device";
  const c10::Device cuda(c10::kCUDA, 0);
  for (auto precision : {train::Precision::fp32, train::Precision::bf16}) {
    const auto cfg = with_kd(small_config(2, 0.5));
    auto teacher = make_teacher(cfg, cuda);
    Trainee uncaptured(cfg, cuda, precision, &teacher), graphed(cfg, cuda, precision, &teacher);
    uncaptured.step->set_launch(train::Launch::device);
    graphed.step->set_launch(train::Launch::graph);
    auto two = batches(2, cfg);
    std::vector<at::Tensor> data;
    for (int i = 0; i < 20; ++i) data.push_back(two[i % 2]);
    auto ru = run_steps(uncaptured, data, 8), rg = run_steps(graphed, data, 8);
    for (size_t s = 0; s < ru.size(); ++s) {
      EXPECT_TRUE(rg[s].applied);
      EXPECT_NEAR(rg[s].loss, ru[s].loss, 1e-5 * std::abs(ru[s].loss)) << "step " << s + 1;
      EXPECT_NEAR(rg[s].ce, ru[s].ce, 1e-5 * std::abs(ru[s].ce)) << "step " << s + 1;
      EXPECT_NEAR(rg[s].kd, ru[s].kd, 1e-5 * std::abs(ru[s].kd)) << "step " << s + 1;
      EXPECT_GT(rg[s].kd, 0.0);
      EXPECT_NEAR(rg[s].grad_norm, ru[s].grad_norm, 1e-4 * ru[s].grad_norm) << "step " << s + 1;
    }
    const double diff = max_param_diff(uncaptured, graphed);
    std::printf(
        "%s distillation: graph vs uncaptured after 8 steps: max |Δ weight| %.3e; loss "
        "%.4f -> %.4f\n",
        train::precision_name(precision), diff, rg.front().loss, rg.back().loss);
    EXPECT_LT(diff, precision == train::Precision::fp32 ? 1e-5 : 1e-4);
    EXPECT_LT(rg.back().loss, rg.front().loss);
    // The teacher's forward, timed on its own for the log.
    size_t next = 16;
    graphed.step->run([&] { return data.at(next++); }, 1e-3, 9, false, /*time_teacher=*/true);
    EXPECT_GT(graphed.step->teacher_ms(), 0.0);
  }
  // From kd.cache's rows: captured equals uncaptured too.
  {
    auto cc = with_kd(small_config(2, 0.5));
    cc.kd.loss = config::KdLossType::forward_kl;
    Trainee uncaptured(cc, cuda, train::Precision::bf16, nullptr, true),
        graphed(cc, cuda, train::Precision::bf16, nullptr, true);
    uncaptured.step->set_launch(train::Launch::device);
    graphed.step->set_launch(train::Launch::graph);
    const auto data = cached_batches(16, cc, 7);
    auto ru = run_steps(uncaptured, data, 8), rg = run_steps(graphed, data, 8);
    for (size_t s = 0; s < ru.size(); ++s) {
      EXPECT_NEAR(rg[s].loss, ru[s].loss, 1e-5 * std::abs(ru[s].loss)) << "cache step " << s + 1;
      EXPECT_NEAR(rg[s].kd, ru[s].kd, 1e-5 * std::abs(ru[s].kd)) << "cache step " << s + 1;
    }
    EXPECT_LT(max_param_diff(uncaptured, graphed), 1e-4);
  }
  auto cfg = with_kd(small_config(1, 1.0));
  cfg.train.cuda_graph = config::GraphChoice::auto_;
  auto teacher = make_teacher(cfg, cuda);
  model::Decoder m(cfg.model);
  m->to(cuda);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& item : m->named_parameters()) named.emplace_back(item.key(), item.value());
  train::AdamW opt(named, cfg.optimizer);
  dist::Comm comm;
  train::TrainStep step({m, &opt, &comm, nullptr, &teacher, &cfg.kd, cuda, train::Precision::bf16},
                        cfg.train);
  EXPECT_EQ(step.launch(), train::Launch::graph);
}
