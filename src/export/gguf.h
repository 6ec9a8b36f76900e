// GGUF files for llama.cpp, written directly: a deepthin model as architecture `llama`, with its
// SentencePiece tokenizer embedded, in f32, f16, bf16, q8_0 or q4_0.
//
// Layout (GGUF version 3, little-endian): magic, version, tensor and key counts; the metadata
// key/value pairs; one info record per tensor (name, dimensions innermost first, ggml type,
// offset); padding to general.alignment (32); then the tensor data, each tensor at its offset.
//
// What llama.cpp needs that a Hugging Face checkpoint does not give as is:
// - q_proj / k_proj rows reordered per head from rotate-half pairs (i, i + hd/2) to adjacent pairs
//   (2i, 2i+1), which is the rotation llama.cpp's llama architecture applies;
// - one block per effective layer: shared blocks are written once per use (a GGUF runs its blocks
// in
//   order), so a layer-shared file is as large as its unshared twin;
// - quantized types: 2-D weights in the asked-for type; norms stay f32 (as llama.cpp's own
// converter
//   and quantizer keep 1-D tensors); with q4_0 the token embedding (and an untied output) is q8_0,
//   where llama.cpp's quantizer picks q6_K, which deepthin does not write.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "storage/model_dir.h"
#include "util/paths.h"

namespace deepthin::exports {

enum class GgufType { f32, f16, bf16, q8_0, q4_0 };
// "f32", "f16", "bf16", "q8_0", "q4_0" → type; input error listing them otherwise.
GgufType parse_gguf_type(const std::string& name);
const char* gguf_type_name(GgufType t);

// Input error (naming the config key and why) when llama.cpp's llama architecture cannot express
// the model at this type: LayerNorm, a plain relu/gelu FFN, or widths that are not multiples of the
// 32-element quantization block.
void check_gguf_expressible(const config::ModelConfig& m, GgufType type);

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // innermost first (ggml's ne)
  GgufType type;
  int64_t bytes = 0;
};

struct GgufReport {
  int64_t file_bytes = 0;
  int64_t block_count = 0;      // effective layers written
  int64_t physical_layers = 0;  // blocks in the model
  std::vector<GgufTensorInfo> tensors;
};

// Writes `out` (through a temporary file in the same directory, renamed when complete).
// A GGUF file (it starts with the magic "GGUF"), for --force.
OutputKind gguf_output();

GgufReport write_gguf(const std::filesystem::path& out, const storage::LoadedModel& model,
                      const std::filesystem::path& tokenizer, GgufType type,
                      const std::string& name);

// ggml's block quantizations of `n` floats (n a multiple of 32): q8_0 blocks are an fp16 scale and
// 32 int8 values; q4_0 blocks an fp16 scale and 16 bytes of 4-bit values (element j in the low
// nibble of byte j, element j + 16 in its high nibble).
std::vector<uint8_t> quantize_q8_0(const float* x, int64_t n);
std::vector<uint8_t> quantize_q4_0(const float* x, int64_t n);
// The inverse, for tests.
std::vector<float> dequantize_q8_0(const uint8_t* data, int64_t n);
std::vector<float> dequantize_q4_0(const uint8_t* data, int64_t n);

}  // namespace deepthin::exports
