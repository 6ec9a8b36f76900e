// The device facts the trainer logs and checks: peak memory, syncs, known peak FLOP/s, and the
// memory lower bound checked before anything is allocated.
#include "train/device_info.h"

#include <sys/resource.h>

#include <unistd.h>
#include <cstdio>

#include "model/param_count.h"
#include "util/error.h"

#include <ATen/ATen.h>

#ifdef DEEPTHIN_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

namespace deepthin::train {

double peak_memory_gb(const c10::Device& d) {
#ifdef DEEPTHIN_CUDA
  if (d.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(d.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / 1e9;
  }
#endif
  (void)d;
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) * 1024.0 / 1e9;
}

void reset_peak_memory(const c10::Device& d) {
#ifdef DEEPTHIN_CUDA
  if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(d.index());
#endif
  (void)d;
}

void synchronize(const c10::Device& d) {
#ifdef DEEPTHIN_CUDA
  if (d.is_cuda()) at::cuda::getCurrentCUDAStream(d.index()).synchronize();
#endif
  (void)d;
}

at::Tensor host_bytes_for(const c10::Device& d, int64_t n) {
#ifdef DEEPTHIN_CUDA
  if (d.is_cuda() && n > 0) {
    void* p = nullptr;
    const cudaError_t e = cudaHostAlloc(&p, static_cast<size_t>(n), cudaHostAllocDefault);
    if (e != cudaSuccess)
      fail_runtime("could not allocate " + std::to_string(n / (1 << 20)) +
                   " MiB of page-locked host memory for checkpoints (" + cudaGetErrorString(e) +
                   "); set checkpoint.async: false to write checkpoints without it");
    return at::from_blob(
        p, {n}, [](void* q) { cudaFreeHost(q); }, at::TensorOptions().dtype(at::kByte));
  }
#endif
  (void)d;
  return at::empty({n}, at::kByte);
}

void set_current_device(const c10::Device& d) {
#ifdef DEEPTHIN_CUDA
  if (d.is_cuda()) c10::cuda::set_device(d.index());
#endif
  (void)d;
}

std::string device_name(const c10::Device& d) {
#ifdef DEEPTHIN_CUDA
  if (d.is_cuda()) return at::cuda::getDeviceProperties(d.index())->name;
#endif
  return d.str();
}

double known_peak_tflops(const c10::Device& d) {
  if (!d.is_cuda()) return 0;
  std::string name = device_name(d);
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos)
    return 989.4;
  if (name.find("A100") != std::string::npos) return 312.0;
  if (name.find("B200") != std::string::npos) return 2250.0;
  return 0;
}

}  // namespace deepthin::train
