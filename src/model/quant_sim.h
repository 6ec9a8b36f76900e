// Simulated post-training quantization for evaluation (the paper's W8A8 check): weights and
// activations are quantized and immediately dequantized, so the model computes in floating point on
// the values an integer kernel would see.
//
//   w8a8       every linear layer inside the blocks (q, k, v, o, gate, up, down): int8 weights,
//              symmetric per output channel (scale = max|row| / 127, values in −127…127), and int8
//              inputs, symmetric per token, computed on the fly (scale = max|x_token| / 127)
//   w8a16      the same weights, inputs in full precision
//   w4a16-g32  int4 weights, symmetric per group of 32 inputs in each row (scale = max|group| / 7,
//              values in −8…7), inputs in full precision
//
// The token embedding, the norms and the LM head (tied or not) stay in full precision.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "model/decoder.h"

namespace deepthin::model {

enum class QuantSim { none, w8a8, w8a16, w4a16_g32 };

// "none", "w8a8", "w8a16", "w4a16-g32"; input error listing them otherwise.
QuantSim parse_quant_sim(const std::string& name);
const char* quant_sim_name(QuantSim q);

// Replaces the block linear weights by their quantize-dequantize image and switches the
// activation quantization on or off (process-wide) to match. Input error when w4a16-g32 meets an
// input width that is not a multiple of 32.
void apply_quant_sim(Decoder& m, QuantSim q);

// The inputs of the block linear layers go through this: per-token int8 when w8a8 is applied,
// the identity otherwise.
at::Tensor quantize_activations(const at::Tensor& x);

// The quantize-dequantize images themselves.
at::Tensor fake_quant_per_channel(const at::Tensor& w, int bits);
at::Tensor fake_quant_grouped(const at::Tensor& w, int bits, int64_t group);
at::Tensor fake_quant_per_token(const at::Tensor& x, int bits);

}  // namespace deepthin::model
