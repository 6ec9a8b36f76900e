// The memory a model or a training step needs at least, checked against the device before
// anything is allocated.
#include "model/memory.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#ifdef DEEPTHIN_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

#include "model/param_count.h"
#include "util/error.h"

namespace deepthin::model {

double device_memory_bytes(const c10::Device& d) {
#ifdef DEEPTHIN_CUDA
  if (d.is_cuda())
    return static_cast<double>(at::cuda::getDeviceProperties(d.index())->totalGlobalMem);
#endif
  (void)d;
  return static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

void check_memory_fits(const config::Config& cfg, const c10::Device& d, bool training, int world,
                       const std::string& what) {
  const auto& m = cfg.model;
  auto gb = [](double bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f GB", bytes / 1e9);
    return std::string(buf);
  };
  const double params = static_cast<double>(model::count_params(m).total);
  double need = params * 4;
  std::string parts = "weights " + gb(params * 4) + "";
  if (training) {
    const double adam = params * 8 / (cfg.distributed.zero1 ? std::max(1, world) : 1);
    const double T = static_cast<double>(cfg.train.seq_len > 0 ? cfg.train.seq_len : m.max_seq_len);
    const double acts = static_cast<double>(cfg.train.micro_batch_size) * T *
                        static_cast<double>(m.effective_layers()) * static_cast<double>(m.dim) * 4;
    need += params * 4 + adam + acts;
    parts += ", gradients " + gb(params * 4) + ", AdamW moments " + gb(adam) +
             ", the residual stream of one micro-batch " + gb(acts) + " (train.micro_batch_size " +
             std::to_string(cfg.train.micro_batch_size) + " × seq_len " +
             std::to_string(static_cast<int64_t>(T)) + " × " +
             std::to_string(m.effective_layers()) + " effective layers × model.dim " +
             std::to_string(m.dim) + ")";
  }
  const double have = device_memory_bytes(d);
  if (have > 0 && need > have)
    fail_input(what + " needs at least " + gb(need) + " on " + d.str() + ", which has " + gb(have) +
               ": " + parts + "; the model has " + std::to_string(static_cast<int64_t>(params)) +
               " parameters (model.vocab_size " + std::to_string(m.vocab_size) + ", model.dim " +
               std::to_string(m.dim) + ", model.n_layers " + std::to_string(m.n_layers) +
               ", model.ffn.hidden_dim " + std::to_string(m.ffn.hidden_dim) + ")");
}

}  // namespace deepthin::model
