// What the trainer needs to know about its device: peak memory, a sync point, and peak FLOP/s for
// MFU.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>

#include "config/config.h"
#include "model/memory.h"

namespace deepthin::train {

// Peak bytes allocated since the last reset (CUDA), or the process's peak resident set (CPU), in
// GB.
double peak_memory_gb(const c10::Device& d);
void reset_peak_memory(const c10::Device& d);
void synchronize(const c10::Device& d);
// Makes d the current CUDA device of this thread (no-op on the CPU).
void set_current_device(const c10::Device& d);
std::string device_name(const c10::Device& d);
// n bytes of host memory the device d copies to and from at full speed: page-locked (one
// cudaHostAlloc, not rounded up as the caching host allocator rounds) for a GPU, plain for the CPU.
at::Tensor host_bytes_for(const c10::Device& d, int64_t n);
// Dense bf16 TFLOP/s of known GPUs (H100/H200 SXM 989, A100 312); 0 when unknown (then no MFU).
double known_peak_tflops(const c10::Device& d);

// The memory checks live with the model (model/memory.h) so that every command loading one can
// ask them; the trainer uses them under these names.
using model::check_memory_fits;
using model::device_memory_bytes;

}  // namespace deepthin::train
