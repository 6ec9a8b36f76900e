// The memory a job needs at least, checked against the device before anything is allocated: a
// model directory's config.json, a training config or a preset can name sizes no machine holds,
// and the check turns that into an error naming the keys instead of an abort in the allocator.
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "config/config.h"

namespace deepthin::model {

// Bytes the device has: the GPU's memory, or the machine's physical memory for the CPU.
double device_memory_bytes(const c10::Device& d);

// Before anything is allocated: a lower bound of the memory a job needs — the weights (fp32), and
// for training their gradients, the AdamW moments (sharded over `world` ranks under ZeRO-1) and the
// fp32 residual stream every effective layer keeps for one micro-batch (kept even under activation
// checkpointing). When even that exceeds the device, an input error that names the keys and the
// numbers. `what` names the job ("training", "the model").
void check_memory_fits(const config::Config& cfg, const c10::Device& d, bool training, int world,
                       const std::string& what);

}  // namespace deepthin::model
