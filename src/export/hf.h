// `deepthin export --format hf`: a Hugging Face Llama directory that transformers loads without
// custom code — the model files (storage/model_dir.h), the SentencePiece tokenizer with its
// tokenizer_config.json and special_tokens_map.json, and a generation_config.json.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>

#include "storage/model_dir.h"

namespace deepthin::exports {

struct HfExportOptions {
  bool expand_shared = false;         // required for layer-shared models
  at::ScalarType dtype = at::kFloat;  // fp32 or bf16 weights
  std::filesystem::path tokenizer;    // empty: no tokenizer files
};

// What write_hf_dir writes, for --force: the model files, tokenizer files and generation config,
// nothing else.
OutputKind hf_dir_output();

// Builds the directory under a temporary name and renames it to `out` when complete. Input error
// for a layer-shared model without expand_shared, or a model transformers' Llama cannot run
// (LayerNorm, a plain FFN).
void write_hf_dir(const std::filesystem::path& out, const storage::LoadedModel& model,
                  const HfExportOptions& opts);

}  // namespace deepthin::exports
