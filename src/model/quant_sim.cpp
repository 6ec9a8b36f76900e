#include "model/quant_sim.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <atomic>

#include "util/error.h"

namespace deepthin::model {

namespace {

std::atomic<int> g_activation_bits{0};  // 0: off

// round(x / s) clamped to [lo, hi], times s; s from `amax` (the max |x| of each group) / qmax.
at::Tensor quant_dequant(const at::Tensor& x, const at::Tensor& amax, int qmax, int lo, int hi) {
  auto scale = (amax / qmax).clamp_min(1e-12);
  return (x / scale).round().clamp(lo, hi) * scale;
}

}  // namespace

QuantSim parse_quant_sim(const std::string& name) {
  if (name == "none") return QuantSim::none;
  if (name == "w8a8") return QuantSim::w8a8;
  if (name == "w8a16") return QuantSim::w8a16;
  if (name == "w4a16-g32") return QuantSim::w4a16_g32;
  fail_input("unknown quantization '" + name + "'; expected none, w8a8, w8a16 or w4a16-g32");
}

const char* quant_sim_name(QuantSim q) {
  switch (q) {
    case QuantSim::none:
      return "none";
    case QuantSim::w8a8:
      return "w8a8";
    case QuantSim::w8a16:
      return "w8a16";
    case QuantSim::w4a16_g32:
      return "w4a16-g32";
  }
  return "?";
}

at::Tensor fake_quant_per_channel(const at::Tensor& w, int bits) {
  const int qmax = (1 << (bits - 1)) - 1;
  auto wf = w.to(at::kFloat);
  return quant_dequant(wf, wf.abs().amax(1, /*keepdim=*/true), qmax, -qmax, qmax)
      .to(w.scalar_type());
}

at::Tensor fake_quant_grouped(const at::Tensor& w, int bits, int64_t group) {
  const int qmax = (1 << (bits - 1)) - 1;
  auto g = w.to(at::kFloat).reshape({w.size(0), w.size(1) / group, group});
  return quant_dequant(g, g.abs().amax(2, true), qmax, -qmax - 1, qmax)
      .reshape(w.sizes())
      .to(w.scalar_type());
}

at::Tensor fake_quant_per_token(const at::Tensor& x, int bits) {
  const int qmax = (1 << (bits - 1)) - 1;
  auto xf = x.to(at::kFloat);
  return quant_dequant(xf, xf.abs().amax(-1, true), qmax, -qmax, qmax).to(x.scalar_type());
}

at::Tensor quantize_activations(const at::Tensor& x) {
  const int bits = g_activation_bits.load();
  return bits > 0 ? fake_quant_per_token(x, bits) : x;
}

void apply_quant_sim(Decoder& m, QuantSim q) {
  g_activation_bits = q == QuantSim::w8a8 ? 8 : 0;
  if (q == QuantSim::none) return;
  torch::NoGradGuard no_grad;
  for (auto& item : m->named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    at::Tensor& p = item.value();
    if (name.rfind("model.layers.", 0) != 0 || p.dim() != 2) continue;  // block linears only
    if (q == QuantSim::w4a16_g32) {
      if (p.size(1) % 32 != 0)
        fail_input("w4a16-g32 quantizes in groups of 32 inputs, and " + name + " has " +
                   std::to_string(p.size(1)) +
                   " (model.dim / ffn.hidden_dim must be multiples of 32)");
      p.copy_(fake_quant_grouped(p, 4, 32));
    } else {
      p.copy_(fake_quant_per_channel(p, 8));
    }
  }
}

}  // namespace deepthin::model
