// Device and precision as the trainer and evaluators apply them from outside the model.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

#include "config/train_config.h"

namespace deepthin::train {

enum class Precision { fp32, bf16 };

// "cpu", "cuda", "cuda:1", or "auto" (CUDA when available). Input error for anything else, or for
// CUDA on a machine without it.
c10::Device parse_device(const std::string& text);
Precision parse_precision(const std::string& text);
// train.precision resolved for a device: auto is bf16 on CUDA and fp32 on the CPU.
Precision resolve_precision(config::PrecisionChoice choice, const c10::Device& device);
const char* precision_name(Precision p);

// bf16 autocast for the scope's thread on the given device; a no-op for fp32. Parameters stay fp32:
// matmuls run in bf16, norms and softmax-type ops in fp32, as torch's autocast lists decide.
class AutocastScope {
 public:
  AutocastScope(c10::Device device, Precision precision);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  c10::DeviceType type_;
  bool prev_enabled_ = false;
  c10::ScalarType prev_dtype_ = c10::ScalarType::Float;
};

}  // namespace deepthin::train
