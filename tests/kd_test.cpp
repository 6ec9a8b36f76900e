// Distillation: the chunked loss against naive full-logit maths (values and gradients, every
// divergence, masks, mixing), and the trainer end to end: ratio 0 is plain training bit for bit, a
// vocabulary mismatch stops before any step, and a sweep trains its teacher first.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "data/prepare.h"
#include "test_util.h"
#include "train/kd.h"
#include "util/json_io.h"
#include "util/strings.h"

using namespace deepthin;
using namespace deepthin::test;

namespace {

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat));
}

struct Naive {
  at::Tensor loss, grad_h, grad_w;
};

// Full logits, torch autograd: the reference.
Naive naive(const at::Tensor& h0, const at::Tensor& w0, const at::Tensor& ht, const at::Tensor& wt,
            const at::Tensor& targets, config::KdLossType type, double T, double ratio,
            int64_t ignore) {
  auto h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
  auto zs = at::matmul(h, w.t()), zt = at::matmul(ht, wt.t());
  auto mask = targets.ne(ignore).to(at::kFloat);
  auto count = mask.sum();
  auto ls = at::log_softmax(zs / T, 1), lt = at::log_softmax(zt / T, 1);
  at::Tensor rows;
  switch (type) {
    case config::KdLossType::forward_kl:
      rows = -(lt.exp() * ls).sum(1);
      break;
    case config::KdLossType::reverse_kl:
      rows = (ls.exp() * (ls - lt)).sum(1);
      break;
    case config::KdLossType::symmetric_kl:
      rows = 0.5 * ((lt.exp() * (lt - ls)).sum(1) + (ls.exp() * (ls - lt)).sum(1));
      break;
    case config::KdLossType::js: {
      auto m = 0.5 * (ls.exp() + lt.exp());
      rows = 0.5 * ((lt.exp() * (lt - m.log())).sum(1) + (ls.exp() * (ls - m.log())).sum(1));
      break;
    }
  }
  auto ce_rows = at::cross_entropy_loss(zs, targets.masked_fill(targets.eq(ignore), 0),
                                        std::nullopt, at::Reduction::None);
  auto loss = ((1 - ratio) * (ce_rows * mask).sum() + ratio * T * T * (rows * mask).sum()) / count;
  loss.backward();
  return {loss.detach(), h.grad(), w.grad()};
}

TEST(Distillation, ForwardKlIsSoftLabelCrossEntropyWithItsGradients) {
  const int64_t N = 10, V = 17, D = 8, Dt = 12;
  auto h = randn({N, D}, 1), w = randn({V, D}, 2) * 0.5, ht = randn({N, Dt}, 3),
       wt = randn({V, Dt}, 4) * 0.5;
  auto targets = at::randint(V, {N}, at::detail::createCPUGenerator(5), at::kLong);
  train::KdLossOptions o;
  o.temperature = 2.0;
  o.ratio = 1.0;
  o.chunk_rows = 4;
  auto hr = h.clone().requires_grad_(true), wr = w.clone().requires_grad_(true);
  auto parts = train::distillation_loss(hr, wr, ht, wt, targets, o);
  parts.total.backward();
  // Soft-label cross-entropy by hand: −Σ_v p_teacher(v) log p_student(v), mean over rows, × T².
  auto pt = at::softmax(at::matmul(ht, wt.t()) / 2.0, 1);
  auto ls = at::log_softmax(at::matmul(h, w.t()) / 2.0, 1);
  const double by_hand = -(pt * ls).sum(1).mean().item<double>() * 4.0;
  EXPECT_NEAR(parts.total.item<double>(), by_hand, 1e-5);
  EXPECT_NEAR(parts.kd.item<double>(), by_hand / 4.0, 1e-5);
  auto ref = naive(h, w, ht, wt, targets, config::KdLossType::forward_kl, 2.0, 1.0, -100);
  EXPECT_TRUE(at::allclose(hr.grad(), ref.grad_h, 1e-4, 1e-6));
  EXPECT_TRUE(at::allclose(wr.grad(), ref.grad_w, 1e-4, 1e-6));
  // The CE part is the ordinary next-token loss.
  EXPECT_NEAR(parts.ce.item<double>(),
              at::cross_entropy_loss(at::matmul(h, w.t()), targets).item<double>(), 1e-5);
}

TEST(Distillation, EveryLossChunkedEqualsFullLogitsWithMasksAndMixing) {
  const int64_t N = 13, V = 29, D = 6, Dt = 9;
  auto h = randn({N, D}, 11), w = randn({V, D}, 12) * 0.7, ht = randn({N, Dt}, 13),
       wt = randn({V, Dt}, 14) * 0.7;
  auto targets = at::randint(V, {N}, at::detail::createCPUGenerator(15), at::kLong);
  targets[3] = -100;
  targets[8] = -100;
  for (auto type : {config::KdLossType::forward_kl, config::KdLossType::reverse_kl,
                    config::KdLossType::symmetric_kl, config::KdLossType::js}) {
    for (int64_t chunk : {3, 5, 1000}) {
      train::KdLossOptions o;
      o.loss = type;
      o.temperature = 1.5;
      o.ratio = 0.3;
      o.chunk_rows = chunk;
      auto hr = h.clone().requires_grad_(true), wr = w.clone().requires_grad_(true);
      auto parts = train::distillation_loss(hr, wr, ht, wt, targets, o);
      (parts.total * 2.0).backward();  // backward scales by the incoming gradient
      auto ref = naive(h, w, ht, wt, targets, type, 1.5, 0.3, -100);
      const std::string what = std::string(config::kKdLosses[static_cast<int>(type)]) + " chunk " +
                               std::to_string(chunk);
      EXPECT_NEAR(parts.total.item<double>(), ref.loss.item<double>(), 1e-5) << what;
      EXPECT_TRUE(at::allclose(hr.grad(), 2.0 * ref.grad_h, 1e-4, 1e-6)) << what;
      EXPECT_TRUE(at::allclose(wr.grad(), 2.0 * ref.grad_w, 1e-4, 1e-6)) << what;
      // Masked rows get no gradient.
      EXPECT_EQ(hr.grad()[3].abs().max().item<double>(), 0.0) << what;
    }
    // A divergence of a distribution from itself is zero (forward_kl: its entropy).
    auto z = randn({4, V}, 20);
    auto d = train::kd_divergence(z, z, type, 1.0);
    if (type == config::KdLossType::forward_kl) {
      auto p = at::softmax(z, 1);
      EXPECT_TRUE(at::allclose(d, -(p * p.log()).sum(1), 1e-5, 1e-6));
    } else {
      EXPECT_LT(d.abs().max().item<double>(), 1e-6);
    }
  }
}

// The closed-form gradients (the GPU's path) against autograd over each chunk (the CPU's
// reference): every divergence, temperatures 1 and 2.5, pure and mixed, masked rows, a vocabulary
// that is not a multiple of 128, fp32 and bf16 matmuls.
TEST(Distillation, ClosedFormGradientsEqualAutogradPerChunk) {
  const int64_t N = 23, V = 300, D = 16, Dt = 24;
  auto h = randn({N, D}, 31), w = randn({V, D}, 32) * 0.4, ht = randn({N, Dt}, 33),
       wt = randn({V, Dt}, 34) * 0.4;
  auto targets = at::randint(V, {N}, at::detail::createCPUGenerator(35), at::kLong);
  targets[0] = -100;
  targets[17] = -100;
  for (auto dtype : {at::kFloat, at::kBFloat16})
    for (auto type : {config::KdLossType::forward_kl, config::KdLossType::reverse_kl,
                      config::KdLossType::symmetric_kl, config::KdLossType::js})
      for (double T : {1.0, 2.5})
        for (double ratio : {1.0, 0.4}) {
          at::Tensor loss[2], ce[2], kd[2], gh[2], gw[2];
          for (int closed = 0; closed < 2; ++closed) {
            train::KdLossOptions o;
            o.loss = type;
            o.temperature = T;
            o.ratio = ratio;
            o.chunk_rows = 7;
            o.compute_dtype = dtype;
            o.closed_form = closed == 1;
            auto hr = h.clone().requires_grad_(true), wr = w.clone().requires_grad_(true);
            auto parts = train::distillation_loss(hr, wr, ht, wt, targets, o);
            parts.total.backward();
            loss[closed] = parts.total.detach();
            ce[closed] = parts.ce;
            kd[closed] = parts.kd;
            gh[closed] = hr.grad();
            gw[closed] = wr.grad();
          }
          const std::string what = std::string(config::kKdLosses[static_cast<int>(type)]) + " T " +
                                   std::to_string(T) + " ratio " + std::to_string(ratio) +
                                   (dtype == at::kFloat ? " fp32" : " bf16");
          // bf16 matmuls round the logits' gradient to 8 bits before the head's matmul in both.
          const double rtol = dtype == at::kFloat ? 1e-4 : 2e-2,
                       atol = dtype == at::kFloat ? 1e-6 : 1e-4;
          EXPECT_NEAR(loss[1].item<double>(), loss[0].item<double>(), 1e-5) << what;
          EXPECT_NEAR(ce[1].item<double>(), ce[0].item<double>(), 1e-5) << what;
          EXPECT_NEAR(kd[1].item<double>(), kd[0].item<double>(), 1e-5) << what;
          EXPECT_GT(gh[0].abs().max().item<double>(), 1e-4) << what;  // not a vacuous comparison
          EXPECT_TRUE(at::allclose(gh[1], gh[0], rtol, atol))
              << what << ": max |Δ| " << (gh[1] - gh[0]).abs().max().item<double>();
          EXPECT_TRUE(at::allclose(gw[1], gw[0], rtol, atol))
              << what << ": max |Δ| " << (gw[1] - gw[0]).abs().max().item<double>();
          EXPECT_EQ(gh[1][17].abs().max().item<double>(), 0.0) << what;  // a masked row
        }
}

// GPU: the whole chunked loss with the CUDA kernel (closed form, fp32 and bf16 heads) against the
// CPU's autograd reference on the same inputs, every divergence, T 2, a mix with the CE, masked
// rows, vocabularies of 300 (no vector loads in bf16) and 1000.
TEST(Distillation, GpuKernelLossEqualsCpuReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t N = 41, D = 16, Dt = 24;
  for (int64_t V : {300, 1000}) {
    auto h = randn({N, D}, 41), w = randn({V, D}, 42) * 0.4, ht = randn({N, Dt}, 43),
         wt = randn({V, Dt}, 44) * 0.4;
    auto targets = at::randint(V, {N}, at::detail::createCPUGenerator(45), at::kLong);
    targets[3] = -100;
    for (auto dtype : {at::kFloat, at::kBFloat16})
      for (auto type : {config::KdLossType::forward_kl, config::KdLossType::reverse_kl,
                        config::KdLossType::symmetric_kl, config::KdLossType::js}) {
        at::Tensor loss[2], kd[2], gh[2], gw[2];
        for (int gpu = 0; gpu < 2; ++gpu) {
          const c10::Device dev = gpu ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
          train::KdLossOptions o;
          o.loss = type;
          o.temperature = 2.0;
          o.ratio = 0.6;
          o.chunk_rows = 16;
          o.compute_dtype = dtype;
          o.closed_form = gpu == 1;
          // detach(): on the CPU .to() returns h itself, whose requires_grad would stick to the GPU
          // pass.
          auto hr = h.detach().to(dev).requires_grad_(true),
               wr = w.detach().to(dev).requires_grad_(true);
          auto parts = train::distillation_loss(hr, wr, ht.to(dev), wt.to(dev), targets.to(dev), o);
          parts.total.backward();
          loss[gpu] = parts.total.detach().cpu();
          kd[gpu] = parts.kd.cpu();
          gh[gpu] = hr.grad().cpu();
          gw[gpu] = wr.grad().cpu();
        }
        const std::string what = std::string(config::kKdLosses[static_cast<int>(type)]) + " V " +
                                 std::to_string(V) + (dtype == at::kFloat ? " fp32" : " bf16");
        // GPU and CPU matmuls round differently; bf16 rounds the logits and their gradient.
        const double rtol = dtype == at::kFloat ? 1e-3 : 3e-2,
                     atol = dtype == at::kFloat ? 1e-5 : 2e-4;
        EXPECT_NEAR(loss[1].item<double>(), loss[0].item<double>(),
                    (dtype == at::kFloat ? 1e-4 : 2e-2) * std::abs(loss[0].item<double>()))
            << what;
        EXPECT_NEAR(kd[1].item<double>(), kd[0].item<double>(),
                    (dtype == at::kFloat ? 1e-4 : 2e-2) * std::abs(kd[0].item<double>()))
            << what;
        EXPECT_TRUE(at::allclose(gh[1], gh[0], rtol, atol))
            << what << ": max |Δ| " << (gh[1] - gh[0]).abs().max().item<double>();
        EXPECT_TRUE(at::allclose(gw[1], gw[0], rtol, atol))
            << what << ": max |Δ| " << (gw[1] - gw[0]).abs().max().item<double>();
        EXPECT_EQ(gh[1][3].abs().max().item<double>(), 0.0) << what;
      }
  }
}

// The top-k loss (kd.cache) with k = V is the full-logit forward KL: the same loss, parts and
// gradients, at T 2, mixed with the CE, with masked rows. With a smaller k it differs, and a cache
// cannot give another divergence.
TEST(Distillation, TopKWithEveryTokenIsTheFullLogitForwardKl) {
  const int64_t N = 19, V = 50, D = 12, Dt = 20;
  auto h = randn({N, D}, 51), w = randn({V, D}, 52) * 0.5, ht = randn({N, Dt}, 53),
       wt = randn({V, Dt}, 54) * 0.5;
  auto targets = at::randint(V, {N}, at::detail::createCPUGenerator(55), at::kLong);
  targets[4] = -100;
  train::KdLossOptions o;
  o.temperature = 2.0;
  o.ratio = 0.7;
  o.chunk_rows = 6;
  auto run = [&](auto&& loss) {
    auto hr = h.clone().requires_grad_(true), wr = w.clone().requires_grad_(true);
    train::KdLossParts p = loss(hr, wr);
    p.total.backward();
    return std::make_tuple(p.total.item<double>(), p.kd.item<double>(), hr.grad(), wr.grad());
  };
  auto [l0, k0, gh0, gw0] =
      run([&](auto& hr, auto& wr) { return train::distillation_loss(hr, wr, ht, wt, targets, o); });
  auto logp = at::log_softmax(at::matmul(ht, wt.t()), 1);
  auto top = at::topk(logp, V, 1);
  auto [l1, k1, gh1, gw1] = run([&](auto& hr, auto& wr) {
    return train::distillation_loss_topk(hr, wr, std::get<1>(top), std::get<0>(top), targets, o);
  });
  EXPECT_NEAR(l1, l0, 1e-5 * std::abs(l0));
  EXPECT_NEAR(k1, k0, 1e-5 * std::abs(k0));
  EXPECT_TRUE(at::allclose(gh1, gh0, 1e-4, 1e-6)) << (gh1 - gh0).abs().max().item<double>();
  EXPECT_TRUE(at::allclose(gw1, gw0, 1e-4, 1e-6)) << (gw1 - gw0).abs().max().item<double>();
  EXPECT_EQ(gh1[4].abs().max().item<double>(), 0.0);
  auto top5 = at::topk(logp, 5, 1);
  auto [l5, k5, gh5, gw5] = run([&](auto& hr, auto& wr) {
    return train::distillation_loss_topk(hr, wr, std::get<1>(top5), std::get<0>(top5), targets, o);
  });
  EXPECT_TRUE(std::isfinite(l5));
  EXPECT_GT(std::abs(k5 - k0), 1e-3);
  o.loss = config::KdLossType::js;
  auto msg = test::input_error([&] {
    train::distillation_loss_topk(h, w, std::get<1>(top5), std::get<0>(top5), targets, o);
  });
  EXPECT_NE(msg.find("forward_kl only"), std::string::npos) << msg;
}

// With k < V the cache loss is the forward KL over the teacher's k tokens plus its remaining mass
// as one outcome: a student that already predicts the teacher's distribution has nothing to learn
// (zero gradient; the loss is the teacher's entropy over those k + 1 outcomes). Renormalising the
// k probabilities instead would push the student's mass off every other token, and its CE on the
// true next tokens up.
TEST(Distillation, TopKLossKeepsTheTeachersRemainingMass) {
  const int64_t N = 23, V = 64, D = 16, k = 5;
  auto h = randn({N, D}, 61), w = randn({V, D}, 62) * 0.3;  // flat enough: the tail holds mass
  auto targets = at::randint(V, {N}, at::detail::createCPUGenerator(63), at::kLong);
  auto logp = at::log_softmax(at::matmul(h, w.t()), 1);
  auto top = at::topk(logp, k, 1);
  const auto& lq = std::get<0>(top);
  auto q = lq.exp();
  auto rest = 1 - q.sum(1);
  ASSERT_GT(rest.min().item<double>(), 0.2);
  train::KdLossOptions o;
  o.ratio = 1.0;
  o.chunk_rows = 7;
  auto hr = h.clone().requires_grad_(true), wr = w.clone().requires_grad_(true);
  auto parts = train::distillation_loss_topk(hr, wr, std::get<1>(top), lq, targets, o);
  parts.total.backward();
  const double entropy = (-(q * lq).sum(1) - rest * rest.log()).mean().item<double>();
  EXPECT_NEAR(parts.kd.item<double>(), entropy, 1e-5 * entropy);
  EXPECT_LT(hr.grad().abs().max().item<double>(), 1e-6);
  EXPECT_LT(wr.grad().abs().max().item<double>(), 1e-6);
  // Another student is pulled towards the teacher: one small step lowers the KD term.
  auto h2 = (h + 0.3 * randn({N, D}, 64)).requires_grad_(true);
  auto before = train::distillation_loss_topk(h2, w, std::get<1>(top), lq, targets, o);
  before.total.backward();
  EXPECT_GT(h2.grad().abs().max().item<double>(), 1e-4);
  auto after = train::distillation_loss_topk(h2.detach() - 0.5 * h2.grad(), w, std::get<1>(top), lq,
                                             targets, o);
  EXPECT_LT(after.kd.item<double>(), before.kd.item<double>());
}

class KdTrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_token_dataset(tmp_.path(), 128, 80, 5);
    write_text(tmp_ / "cfg.yaml", R"(
run: {root: )" + (tmp_ / "runs").string() +
                                      R"(}
model: {vocab_size: 128, dim: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, max_seq_len: 32}
data: {path: )" + (tmp_ / "data").string() +
                                      R"(}
train: {micro_batch_size: 2, seq_len: 16, max_steps: 6, device: cpu}
optimizer: {lr: 1.0e-2}
schedule: {warmup_steps: 1}
eval: {every: 0, batches: 2}
checkpoint: {every: 0}
log: {every: 2}
)");
    auto t = train("teacher", "--set model.dim=64 --set model.n_layers=3");
    ASSERT_EQ(t.status, 0) << t.err;
  }
  CliResult train(const std::string& name, const std::string& extra) {
    return run_cli("train " + (tmp_ / "cfg.yaml").string() + " --set run.name=" + name + " " +
                   extra);
  }
  std::string weights(const std::string& name) {
    return read_text(tmp_ / "runs" / name / "checkpoints/step_6/model.safetensors");
  }
  std::string teacher() { return (tmp_ / "runs" / "teacher").string(); }
  TempDir tmp_;
};

TEST_F(KdTrainTest, RatioZeroIsPlainTrainingBitForBit) {
  ASSERT_EQ(train("plain", "").status, 0);
  auto zero = train("zero", "--set kd.teacher=" + teacher() + " --set kd.ratio=0");
  ASSERT_EQ(zero.status, 0) << zero.err;
  EXPECT_NE(zero.err.find("kd.ratio is 0"), std::string::npos) << zero.err;
  EXPECT_EQ(weights("plain"), weights("zero"));
  // With the teacher in the loss, the run differs and logs both parts.
  auto kd = train("kd", "--set kd.teacher=" + teacher() + " --set kd.ratio=0.5 --set kd.loss=js");
  ASSERT_EQ(kd.status, 0) << kd.err;
  EXPECT_NE(weights("plain"), weights("kd"));
  EXPECT_NE(kd.err.find("distillation: teacher"), std::string::npos) << kd.err;
  auto lines = split(read_text(tmp_ / "runs/kd/metrics.jsonl"), '\n');
  auto j = json::parse(lines.front());
  ASSERT_TRUE(json::find(j, "ce") && json::find(j, "kd") && json::find(j, "teacher_ms"))
      << lines.front();
  // The logged loss is the mix of its parts.
  EXPECT_NEAR(
      json::as_double(json::at(j, "loss", "t")),
      0.5 * json::as_double(json::at(j, "ce", "t")) + 0.5 * json::as_double(json::at(j, "kd", "t")),
      1e-6);
}

TEST_F(KdTrainTest, VocabularyMismatchIsAnErrorBeforeAnyStep) {
  auto other = train("big-vocab", "--set model.vocab_size=200");
  ASSERT_EQ(other.status, 0) << other.err;
  auto r = train("student", "--set kd.teacher=" + (tmp_ / "runs" / "big-vocab").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("has a vocabulary of 200 tokens, the student 128"), std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(tmp_ / "runs" / "student" / "metrics.jsonl"));
  auto missing = train("student2", "--set kd.teacher=" + (tmp_ / "nowhere").string());
  EXPECT_EQ(missing.status, 2);
  EXPECT_NE(missing.err.find("does not exist"), std::string::npos) << missing.err;
}

TEST_F(KdTrainTest, SweepTrainsTheTeacherFirstAndReportsBothStudents) {
  write_text(tmp_ / "kd.yaml", R"(
base: cfg.yaml
seeds: [3]
teacher: {name: big, set: {model.dim: 64, train.max_steps: 4}}
zip:
  names: [no-kd, kd, no-kd-long]
  kd.ratio: [0.0, 1.0, 0.0]
  train.max_steps: [4, 4, 8]
  eval.every: [2, 2, 2]
)");
  auto r = run_cli("sweep " + (tmp_ / "kd.yaml").string() + " --runs-root " +
                   (tmp_ / "sweeps").string() + " --parallel 2");
  ASSERT_EQ(r.status, 0) << r.err;
  // The teacher finished before any student started.
  const auto big = r.err.find("big: done"), first_student = r.err.find("no-kd_s3: started");
  ASSERT_NE(big, std::string::npos) << r.err;
  EXPECT_LT(big, first_student) << r.err;
  auto log = read_text(tmp_ / "sweeps/kd/kd_s3/train.log");
  EXPECT_NE(log.find("distillation: teacher " + (tmp_ / "sweeps/kd/big").string()),
            std::string::npos)
      << log;
  auto rep = run_cli("report " + (tmp_ / "sweeps/kd").string());
  ASSERT_EQ(rep.status, 0) << rep.err;
  auto md = read_text(tmp_ / "sweeps/kd/results.md");
  EXPECT_NE(md.find("## Distillation: with and without the teacher"), std::string::npos) << md;
  EXPECT_NE(md.find("| 3 | 4, "), std::string::npos) << md;
}

}  // namespace

// A sweep whose teacher has cache_k: the teacher trains, its top-k cache is written once, and the
// distilling student reads the cache instead of running the teacher; the student without KD is as
// before. A student distilling with another loss than forward_kl is refused when the sweep loads.
TEST_F(KdTrainTest, SweepWritesTheTeachersCacheOnceForItsStudents) {
  write_text(tmp_ / "kdc.yaml", R"(
base: cfg.yaml
seeds: [3]
teacher: {name: big, set: {model.dim: 64, train.max_steps: 4}, cache_k: 8}
zip:
  names: [no-kd, kd]
  kd.ratio: [0.0, 1.0]
  train.max_steps: [4, 4]
)");
  auto r = run_cli("sweep " + (tmp_ / "kdc.yaml").string() + " --runs-root " +
                   (tmp_ / "sweeps").string());
  ASSERT_EQ(r.status, 0) << r.err;
  const fs::path root = tmp_ / "sweeps/kdc";
  EXPECT_TRUE(fs::exists(root / "big_topk8/kd_cache.json")) << r.err;
  EXPECT_NE(r.err.find("writing the teacher's top-8 cache"), std::string::npos) << r.err;
  auto kd_log = read_text(root / "kd_s3/train.log");
  EXPECT_NE(kd_log.find("distillation: from the top-k cache " + (root / "big_topk8").string()),
            std::string::npos)
      << kd_log;
  EXPECT_EQ(kd_log.find("distillation: teacher"), std::string::npos) << kd_log;
  auto plain_log = read_text(root / "no-kd_s3/train.log");
  EXPECT_EQ(plain_log.find("top-k cache"), std::string::npos) << plain_log;

  write_text(tmp_ / "kdjs.yaml", R"(
base: cfg.yaml
seeds: [3]
teacher: {name: big, set: {model.dim: 64}, cache_k: 8}
zip:
  names: [kd]
  kd.ratio: [1.0]
  kd.loss: [js]
)");
  auto js = run_cli("sweep " + (tmp_ / "kdjs.yaml").string() + " --runs-root " +
                    (tmp_ / "sweeps").string() + " --dry-run");
  EXPECT_EQ(js.status, 2);
  EXPECT_NE(js.err.find("run kd_s3 distills with kd.loss js"), std::string::npos) << js.err;
}

namespace {

double last_train(const fs::path& metrics, const std::string& key) {
  double v = NAN;
  for (const auto& line : split(read_text(metrics), '\n')) {
    if (line.empty()) continue;
    auto j = json::parse(line);
    if (json::find(j, key) && json::find(j, "step")) v = json::as_double(json::at(j, key, "m"));
  }
  return v;
}

}  // namespace

// kd.cache: the teacher's top-k written once by `deepthin kd cache`; a student distilled from a
// cache of every token (k = V) follows the one distilled from the teacher itself (the cache keeps
// log-probabilities in fp16), a cache of 8 tokens a token comes close, and a cache that does not
// fit the run is refused before any step.
TEST_F(KdTrainTest, CacheWrittenOnceDistillsLikeTheTeacher) {
  const std::string cfg = (tmp_ / "cfg.yaml").string(),
                    kd = " --set kd.temperature=2 --set kd.ratio=0.7";
  auto full = run_cli("kd cache " + cfg + " --set kd.teacher=" + teacher() + " --k 128 --out " +
                      (tmp_ / "cache128").string());
  ASSERT_EQ(full.status, 0) << full.err;
  EXPECT_NE(full.err.find("512.0 bytes a token"), std::string::npos) << full.err;
  // 80 windows? The dataset's windows of 17 tokens, 16 positions each, 128 × (2 + 2) bytes.
  const auto manifest = json::parse(read_text(tmp_ / "cache128/kd_cache.json"));
  const int64_t windows =
      json::as_int(json::at(json::at(manifest, "sources", "m")[0], "windows", "m"));
  EXPECT_GT(windows, 10);
  EXPECT_EQ(fs::file_size(tmp_ / "cache128/0.ids"), static_cast<uintmax_t>(windows * 16 * 128 * 2));
  EXPECT_EQ(fs::file_size(tmp_ / "cache128/0.logp"),
            static_cast<uintmax_t>(windows * 16 * 128 * 2));
  auto small = run_cli("kd cache " + cfg + " --set kd.teacher=" + teacher() + " --k 8 --out " +
                       (tmp_ / "cache8").string());
  ASSERT_EQ(small.status, 0) << small.err;
  EXPECT_NE(small.err.find("32.0 bytes a token"), std::string::npos) << small.err;

  auto t = train("from-teacher", "--set kd.teacher=" + teacher() + kd);
  ASSERT_EQ(t.status, 0) << t.err;
  auto c = train("from-cache", "--set kd.cache=" + (tmp_ / "cache128").string() + kd);
  ASSERT_EQ(c.status, 0) << c.err;
  EXPECT_NE(c.err.find("distillation: from the top-k cache"), std::string::npos) << c.err;
  auto c8 = train("from-cache8", "--set kd.cache=" + (tmp_ / "cache8").string() + kd);
  ASSERT_EQ(c8.status, 0) << c8.err;
  const auto m = [&](const std::string& run) { return tmp_ / "runs" / run / "metrics.jsonl"; };
  const double lt = last_train(m("from-teacher"), "loss"), lc = last_train(m("from-cache"), "loss"),
               l8 = last_train(m("from-cache8"), "loss");
  const double ct = last_train(m("from-teacher"), "ce"), c8ce = last_train(m("from-cache8"), "ce");
  std::printf(
      "loss after 6 steps: teacher %.5f, cache k=128 %.5f, cache k=8 %.5f (CE %.4f vs %.4f)\n", lt,
      lc, l8, ct, c8ce);
  EXPECT_NEAR(lc, lt, 2e-3 * lt);
  EXPECT_NEAR(last_train(m("from-cache"), "kd"), last_train(m("from-teacher"), "kd"), 2e-3 * lt);
  EXPECT_NEAR(c8ce, ct, 0.05 * ct);  // the student learns nearly the same

  auto wrong_len =
      train("bad", "--set kd.cache=" + (tmp_ / "cache8").string() + " --set train.seq_len=8");
  EXPECT_EQ(wrong_len.status, 2);
  EXPECT_NE(wrong_len.err.find("train.seq_len 16, this run has 8"), std::string::npos)
      << wrong_len.err;
  auto js = train("bad2", "--set kd.cache=" + (tmp_ / "cache8").string() + " --set kd.loss=js");
  EXPECT_EQ(js.status, 2);
  EXPECT_NE(js.err.find("forward_kl alone"), std::string::npos) << js.err;
  EXPECT_FALSE(fs::exists(tmp_ / "runs/bad/metrics.jsonl"));
  auto again = run_cli("kd cache " + cfg + " --set kd.teacher=" + teacher() + " --k 8 --out " +
                       (tmp_ / "cache8").string());
  EXPECT_EQ(again.status, 2) << again.err;
  auto forced = run_cli("kd cache " + cfg + " --set kd.teacher=" + teacher() + " --k 8 --out " +
                        (tmp_ / "cache8").string() + " --force");
  EXPECT_EQ(forced.status, 0) << forced.err;
}
