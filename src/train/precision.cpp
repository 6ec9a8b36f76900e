// Parsing devices and precisions, and the autocast scope the trainer and evaluators use.
#include "train/precision.h"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include "util/error.h"

namespace deepthin::train {

c10::Device parse_device(const std::string& text) {
  if (text == "auto") return at::hasCUDA() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  c10::Device d(c10::kCPU);
  try {
    d = c10::Device(text);
  } catch (const std::exception&) {
    fail_input("unknown device '" + text + "'; expected cpu, cuda, cuda:N or auto");
  }
  if (d.is_cuda() && !at::hasCUDA())
    fail_input("device '" + text + "' requested, but this build or machine has no CUDA");
  // "cuda" names the first GPU: the index must be concrete for set_device and the allocator's
  // stats.
  if (d.is_cuda() && !d.has_index()) d = c10::Device(c10::kCUDA, 0);
  if (!d.is_cuda() && !d.is_cpu())
    fail_input("device '" + text + "' is not supported; expected cpu, cuda, cuda:N or auto");
  return d;
}

Precision parse_precision(const std::string& text) {
  if (text == "fp32") return Precision::fp32;
  if (text == "bf16") return Precision::bf16;
  fail_input("unknown precision '" + text + "'; expected fp32 or bf16");
}

Precision resolve_precision(config::PrecisionChoice choice, const c10::Device& device) {
  switch (choice) {
    case config::PrecisionChoice::auto_:
      return device.is_cuda() ? Precision::bf16 : Precision::fp32;
    case config::PrecisionChoice::bf16:
      return Precision::bf16;
    case config::PrecisionChoice::fp32:
      return Precision::fp32;
  }
  return Precision::fp32;
}

const char* precision_name(Precision p) {
  return p == Precision::bf16 ? "bf16" : "fp32";
}

AutocastScope::AutocastScope(c10::Device device, Precision precision) : type_(device.type()) {
  if (precision != Precision::bf16) return;
  active_ = true;
  prev_enabled_ = at::autocast::is_autocast_enabled(type_);
  prev_dtype_ = at::autocast::get_autocast_dtype(type_);
  at::autocast::set_autocast_enabled(type_, true);
  at::autocast::set_autocast_dtype(type_, c10::ScalarType::BFloat16);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // Leaving the outermost scope frees the casted-weight cache, as torch.autocast's __exit__ does.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(type_, prev_enabled_);
  at::autocast::set_autocast_dtype(type_, prev_dtype_);
}

}  // namespace deepthin::train
