// The safetensors format, read and written directly: 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the raw little-endian
// tensor bytes.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace deepthin::storage {

// Ordered name → CPU tensor list (the order is the file's order).
using TensorList = std::vector<std::pair<std::string, at::Tensor>>;

// Writes atomically (temporary file, fsync, rename). Tensors are written contiguous, in their
// dtype, straight from their memory; with sha256 the file's SHA-256 is computed as it is written.
void save_safetensors(const std::filesystem::path& path, const TensorList& tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      std::string* sha256 = nullptr);

struct SafetensorsFile {
  TensorList tensors;
  std::map<std::string, std::string> metadata;
};
// Reads every tensor onto the CPU in its stored dtype. A bad header, an unknown dtype or a body
// shorter than the header promises is an input error naming the file and the tensor.
SafetensorsFile load_safetensors(const std::filesystem::path& path);

// "F32", "BF16", … for a torch dtype; input error for dtypes safetensors cannot hold.
std::string safetensors_dtype(at::ScalarType t);

}  // namespace deepthin::storage
