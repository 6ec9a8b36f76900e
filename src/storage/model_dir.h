// Model directories: what `deepthin init` and checkpoints write, and what every command that takes
// a model reads.
//
//   model.safetensors  HF Llama tensor names (model.layers.N.self_attn.q_proj.weight, …)
//   config.json        LlamaConfig fields, so transformers / llama.cpp converters can read it
//   deepthin.yaml      the resolved deepthin config (absent in directories transformers wrote)
//
// A layer-shared model is stored with each physical block once; config.json then says model_type
// "deepthin" so that Llama tools refuse it instead of running the wrong depth. With expand_shared
// every effective layer is written as its own block: a plain Llama model any tool can load.
#pragma once

#include <filesystem>
#include <string>

#include "config/config.h"
#include "model/decoder.h"
#include "storage/safetensors.h"
#include "util/json_io.h"
#include "util/paths.h"

namespace deepthin::storage {

struct SaveOptions {
  bool expand_shared = false;
  at::ScalarType dtype = at::kFloat;  // weights are stored in this dtype
};

// Parameter tensors under their HF names (shared blocks once, or expanded per effective layer).
TensorList model_tensors(const model::Decoder& m, bool expand_shared);
// The config a directory written with these options describes (expanded: scheme none, L_eff
// layers).
config::Config saved_config(const config::Config& c, bool expand_shared);
// config.json for a model config.
Json hf_config_json(const config::ModelConfig& m);
// A ModelConfig from a transformers config.json (Llama family); `where` names the file in errors.
config::ModelConfig model_config_from_hf(const Json& j, const std::string& where);

// What `deepthin init` writes, for --force (util/paths.h): a directory of model.safetensors,
// config.json, deepthin.yaml and optionally tokenizer.model, nothing else.
OutputKind model_dir_output();

// Writes model.safetensors, config.json and deepthin.yaml into `dir` (created; files replaced
// atomically one by one).
void save_model_files(const std::filesystem::path& dir, const model::Decoder& m,
                      const config::Config& c, const SaveOptions& opts = {});
// The files of save_model_files from tensors already in host memory, for writers that run apart
// from the model (asynchronous checkpoints copy them with train/checkpoint.h's HostStaging).
// With weights_sha256, model.safetensors' SHA-256 (computed as it is written).
void write_model_files(const std::filesystem::path& dir, const TensorList& tensors,
                       const config::Config& c, const SaveOptions& opts = {},
                       std::string* weights_sha256 = nullptr);

// Copies `tensors` into the model's parameters; every parameter must be present with its shape.
// Tensors the model does not have are an error, except rotary caches older transformers saved.
void load_weights(model::Decoder& m, const TensorList& tensors, const std::string& where);

struct LoadedModel {
  config::Config config;
  model::Decoder model{nullptr};
};
// Reads a deepthin or transformers directory onto the CPU in fp32.
LoadedModel load_model_dir(const std::filesystem::path& dir);

}  // namespace deepthin::storage
