// What the trainer needs to know about its device: peak memory, a sync point, and peak FLOP/s for
// MFU.
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "config/config.h"

namespace deepthin::train {

// Peak bytes allocated since the last reset (CUDA), or the process's peak resident set (CPU), in
// GB.
double peak_memory_gb(const c10::Device& d);
void reset_peak_memory(const c10::Device& d);
void synchronize(const c10::Device& d);
// Makes d the current CUDA device of this thread (no-op on the CPU).
void set_current_device(const c10::Device& d);
std::string device_name(const c10::Device& d);
// Dense bf16 TFLOP/s of known GPUs (H100/H200 SXM 989, A100 312); 0 when unknown (then no MFU).
double known_peak_tflops(const c10::Device& d);

// Bytes the device has: the GPU's memory, or the machine's physical memory for the CPU.
double device_memory_bytes(const c10::Device& d);

// Before anything is allocated: a lower bound of the memory a job needs — the weights (fp32), and
// for training their gradients, the AdamW moments (sharded over `world` ranks under ZeRO-1) and the
// fp32 residual stream every effective layer keeps for one micro-batch (kept even under activation
// checkpointing). When even that exceeds the device, an input error that names the keys and the
// numbers. `what` names the job ("training", "the model").
void check_memory_fits(const config::Config& cfg, const c10::Device& d, bool training, int world,
                       const std::string& what);

}  // namespace deepthin::train
