// `deepthin export --format executorch`: an ExecuTorch program (.pte) for phones, lowered to the
// XNNPACK backend by ExecuTorch's own Python exporter (torch.export → to_edge_transform_and_lower →
// to_executorch), which runs from scripts/export/executorch_export.py in .venv-export
// (scripts/setup_export.sh). The program decodes one token per call with a static KV cache, one
// slot per effective layer; a layer-shared model keeps one copy of each shared block's weights.
#pragma once

#include <filesystem>
#include <string>

#include "config/model_config.h"
#include "util/json_io.h"
#include "util/paths.h"

namespace deepthin::exports {

struct ExecutorchOptions {
  std::string quant = "fp32";    // fp32, or 8da4w (8-bit dynamic activations, 4-bit weights in
                                 // groups of 32: torchao's scheme for Llama on phones)
  int64_t max_seq_len = 0;       // KV-cache length; 0: the model's max_seq_len
  bool expand_shared = false;    // write shared blocks once per effective layer
  std::string python;            // the interpreter with executorch (.venv-export)
  std::filesystem::path script;  // executorch_export.py
};

// Input error for an unknown quantization or a model the quantization cannot take (8da4w groups
// of 32 along every linear layer's input).
void check_executorch_options(const config::ModelConfig& m, const ExecutorchOptions& o);

// An ExecuTorch program (a FlatBuffer whose file identifier, bytes 4-7, is "ET" and two digits),
// for --force.
OutputKind pte_output();

// Runs the exporter into a temporary file beside `out` and renames it when complete; returns the
// exporter's report (bytes, quantization, KV slots, seconds).
Json write_executorch(const std::filesystem::path& out, const std::filesystem::path& model_dir,
                      const config::ModelConfig& m, const ExecutorchOptions& o);

}  // namespace deepthin::exports
