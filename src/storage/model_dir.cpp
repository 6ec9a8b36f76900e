#include "storage/model_dir.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <set>

#include "model/memory.h"
#include "util/error.h"
#include "util/fs.h"

namespace deepthin::storage {

namespace {

std::string layer_prefix(int64_t i) {
  return "model.layers." + std::to_string(i) + ".";
}

bool is_llama_compatible(const config::ModelConfig& m) {
  return m.ffn.type == config::FfnType::swiglu && m.norm.type == config::NormType::rmsnorm;
}

}  // namespace

TensorList model_tensors(const model::Decoder& m, bool expand_shared) {
  TensorList all;
  for (const auto& item : m->named_parameters(/*recurse=*/true))
    all.emplace_back(item.key(), item.value());
  if (!expand_shared) return all;
  // Expanded: HF's order (embedding, effective layers, final norm, head), each effective layer a
  // copy of the physical block it runs, renamed to its own index.
  TensorList out;
  for (const auto& t : all)
    if (t.first.rfind("model.embed_tokens", 0) == 0) out.push_back(t);
  const auto& sched = m->schedule();
  for (size_t e = 0; e < sched.size(); ++e) {
    const std::string from = layer_prefix(sched[e]);
    for (const auto& [name, t] : all)
      if (name.rfind(from, 0) == 0)
        out.emplace_back(layer_prefix(static_cast<int64_t>(e)) + name.substr(from.size()), t);
  }
  for (const auto& t : all)
    if (t.first.rfind("model.embed_tokens", 0) != 0 && t.first.rfind("model.layers.", 0) != 0)
      out.push_back(t);
  return out;
}

config::Config saved_config(const config::Config& c, bool expand_shared) {
  config::Config out = c;
  if (expand_shared) {
    out.model.n_layers = c.model.effective_layers();
    out.model.layer_sharing.scheme = config::SharingScheme::none;
    out.model.layer_sharing.repeats = 1;
  }
  return out;
}

Json hf_config_json(const config::ModelConfig& m) {
  const bool shared = m.layer_sharing.repeats > 1;
  const bool llama = is_llama_compatible(m) && !shared;
  Json j = Json::object();
  j["architectures"] = Json::array({llama ? "LlamaForCausalLM" : "DeepthinForCausalLM"});
  j["model_type"] = llama ? "llama" : "deepthin";
  j["vocab_size"] = m.vocab_size;
  j["hidden_size"] = m.dim;
  j["intermediate_size"] = m.ffn.hidden_dim;
  j["num_hidden_layers"] = m.n_layers;
  j["num_attention_heads"] = m.n_heads;
  j["num_key_value_heads"] = m.n_kv_heads;
  j["head_dim"] = m.head_dim;
  j["hidden_act"] = m.ffn.type == config::FfnType::gelu   ? "gelu"
                    : m.ffn.type == config::FfnType::relu ? "relu"
                                                          : "silu";
  j["max_position_embeddings"] = m.max_seq_len;
  j["initializer_range"] = m.init.std;
  j["rms_norm_eps"] = m.norm.eps;
  j["rope_theta"] = m.rope.theta;
  Json rope = Json::object();
  rope["rope_theta"] = m.rope.theta;
  rope["rope_type"] = "default";
  j["rope_parameters"] = std::move(rope);
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["tie_word_embeddings"] = m.tie_embeddings;
  j["bos_token_id"] = 1;
  j["eos_token_id"] = 2;
  j["torch_dtype"] = "float32";
  if (!llama) {
    // What a Llama reader would get wrong; deepthin.yaml beside this file is the full description.
    Json d = Json::object();
    d["ffn_type"] = std::string(config::kFfnTypes[static_cast<int>(m.ffn.type)]);
    d["norm_type"] = std::string(config::kNormTypes[static_cast<int>(m.norm.type)]);
    d["layer_sharing_scheme"] =
        std::string(config::kSharingSchemes[static_cast<int>(m.layer_sharing.scheme)]);
    d["layer_sharing_repeats"] = m.layer_sharing.repeats;
    d["effective_layers"] = m.effective_layers();
    j["deepthin"] = std::move(d);
  }
  return j;
}

config::ModelConfig model_config_from_hf(const Json& j, const std::string& where) {
  if (!j.is_object()) fail_input(where + ": expected a JSON object");
  auto str = [&](const char* k, const char* def) {
    const Json* v = json::find(j, k);
    return v && !v->is_null() ? json::as_string(*v, where + ": " + k) : std::string(def);
  };
  auto integer = [&](const char* k) {
    return json::as_int(json::at(j, k, where), where + ": " + k);
  };
  auto integer_or = [&](const char* k, int64_t def) {
    const Json* v = json::find(j, k);
    return v && !v->is_null() ? json::as_int(*v, where + ": " + k) : def;
  };
  auto real_or = [&](const char* k, double def) {
    const Json* v = json::find(j, k);
    return v && !v->is_null() ? json::as_double(*v, where + ": " + k) : def;
  };
  std::string type = str("model_type", "");
  if (type == "deepthin")
    fail_input(
        where +
        ": model_type 'deepthin' needs the deepthin.yaml written beside it, which is missing");
  if (type != "llama")
    fail_input(where + ": model_type '" + type +
               "' is not supported; deepthin reads Llama-family models (model_type llama)");
  if (str("hidden_act", "silu") != "silu")
    fail_input(where + ": hidden_act '" + str("hidden_act", "") +
               "' is not supported; Llama uses silu");
  for (const char* k : {"attention_bias", "mlp_bias"})
    if (const Json* v = json::find(j, k); v && v->is_boolean() && json::as_bool(*v))
      fail_input(where + ": " + k + " is true; deepthin models have no biases");
  double theta = real_or("rope_theta", 10000.0);
  if (const Json* rp = json::find(j, "rope_parameters"); rp && rp->is_object()) {
    if (const Json* t = json::find(*rp, "rope_theta"))
      theta = json::as_double(*t, where + ": rope_parameters.rope_theta");
    if (const Json* rt = json::find(*rp, "rope_type");
        rt && rt->is_string() && json::as_string(*rt) != "default")
      fail_input(where + ": rope_type '" + json::as_string(*rt) +
                 "' is not supported (only default RoPE)");
  }
  if (const Json* rs = json::find(j, "rope_scaling"); rs && !rs->is_null())
    fail_input(where + ": rope_scaling is set; deepthin supports only unscaled RoPE");

  config::ModelConfig m;
  m.vocab_size = integer("vocab_size");
  m.dim = integer("hidden_size");
  m.n_layers = integer("num_hidden_layers");
  m.n_heads = integer("num_attention_heads");
  m.n_kv_heads = integer_or("num_key_value_heads", m.n_heads);
  m.head_dim = integer_or("head_dim", 0);
  m.ffn.type = config::FfnType::swiglu;
  m.ffn.hidden_dim = integer("intermediate_size");
  m.norm.type = config::NormType::rmsnorm;
  m.norm.eps = real_or("rms_norm_eps", 1e-6);  // LlamaConfig's defaults where keys are absent
  m.rope.theta = theta;
  m.max_seq_len = integer_or("max_position_embeddings", 2048);
  const Json* tie = json::find(j, "tie_word_embeddings");
  m.tie_embeddings = tie && tie->is_boolean() ? json::as_bool(*tie) : false;
  m.init.std = real_or("initializer_range", 0.02);
  return m;
}

OutputKind model_dir_output() {
  return {"a model directory",
          true,
          {"model.safetensors", "config.json", "deepthin.yaml", "tokenizer.model"},
          "model.safetensors",
          {}};
}

void save_model_files(const std::filesystem::path& dir, const model::Decoder& m,
                      const config::Config& c, const SaveOptions& opts) {
  TensorList tensors;
  for (auto& [name, t] : model_tensors(m, opts.expand_shared))
    tensors.emplace_back(name, t.detach().to(at::kCPU, opts.dtype));
  write_model_files(dir, tensors, c, opts);
}

void write_model_files(const std::filesystem::path& dir, const TensorList& tensors,
                       const config::Config& c, const SaveOptions& opts,
                       std::string* weights_sha256) {
  std::filesystem::create_directories(dir);
  config::Config saved = saved_config(c, opts.expand_shared);
  save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}}, weights_sha256);
  write_file_atomic(dir / "config.json", json::dump(hf_config_json(saved.model), 2) + "\n");
  write_file_atomic(dir / "deepthin.yaml", config::to_yaml(saved));
}

void load_weights(model::Decoder& m, const TensorList& tensors, const std::string& where) {
  torch::NoGradGuard no_grad;
  auto params = m->named_parameters(/*recurse=*/true);
  std::set<std::string> loaded;
  for (const auto& [name, t] : tensors) {
    if (name.find("rotary_emb.inv_freq") != std::string::npos)
      continue;  // older transformers saved it
    torch::Tensor* p = params.find(name);
    if (!p) {
      if (name == "lm_head.weight" && m->config().tie_embeddings) {
        if (!at::equal(t.to(at::kFloat), params["model.embed_tokens.weight"].to(at::kCPU)))
          fail_input(where +
                     ": lm_head.weight is stored and differs from the embedding, but the "
                     "config ties them (tie_word_embeddings true)");
        continue;
      }
      fail_input(where + ": tensor '" + name + "' does not belong to this model (" +
                 std::to_string(m->config().n_layers) + " layers" +
                 (m->config().tie_embeddings ? ", tied embeddings" : "") + ")");
    }
    if (p->sizes() != t.sizes())
      fail_input(where + ": tensor '" + name + "' has shape " + c10::str(t.sizes()) +
                 ", the model expects " + c10::str(p->sizes()));
    // A weight that is NaN or infinite gives only NaN downstream: refused here, by name.
    if (at::isFloatingType(t.scalar_type()) && !at::isfinite(t).all().item<bool>())
      fail_input(where + ": tensor '" + name + "' holds " +
                 std::to_string(at::logical_not(at::isfinite(t)).sum().item<int64_t>()) +
                 " non-finite values (NaN or ±inf); the model cannot be used");
    p->copy_(t);
    loaded.insert(name);
  }
  for (const auto& item : params)
    if (!loaded.count(item.key())) fail_input(where + ": tensor '" + item.key() + "' is missing");
}

LoadedModel load_model_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    fail_input("model directory not found: " + dir.string());
  LoadedModel out;
  std::filesystem::path described_by = dir / "deepthin.yaml";
  if (std::filesystem::exists(dir / "deepthin.yaml")) {
    out.config = config::load_config(dir / "deepthin.yaml");
  } else if (std::filesystem::exists(dir / "config.json")) {
    described_by = dir / "config.json";
    std::string where = described_by.string();
    out.config.model =
        model_config_from_hf(json::parse(read_file(dir / "config.json"), where), where);
    out.config = config::validated(out.config, where);
  } else {
    fail_input(dir.string() +
               ": neither deepthin.yaml nor config.json found; not a model directory");
  }
  // The sizes in a model directory's config are checked before anything is allocated.
  model::check_memory_fits(out.config, c10::Device(c10::kCPU), /*training=*/false, 1,
                           "the model " + described_by.string() + " describes");
  out.model = model::Decoder(out.config.model);

  TensorList tensors;
  if (std::filesystem::exists(dir / "model.safetensors")) {
    tensors = load_safetensors(dir / "model.safetensors").tensors;
  } else if (std::filesystem::exists(dir / "model.safetensors.index.json")) {
    std::string where = (dir / "model.safetensors.index.json").string();
    Json index = json::parse(read_file(dir / "model.safetensors.index.json"), where);
    std::set<std::string> files;
    for (const auto& [name, file] :
         json::as_object(json::at(index, "weight_map", where), where).items()) {
      const std::string f = json::as_string(file, where);
      // Shards live beside the index: a name with a separator or ".." would read elsewhere.
      check_path_component(f, where + ": weight_map." + name);
      files.insert(f);
    }
    for (const auto& f : files)
      for (auto& t : load_safetensors(dir / f).tensors) tensors.push_back(std::move(t));
  } else {
    fail_input(dir.string() + ": no model.safetensors (or model.safetensors.index.json) found");
  }
  load_weights(out.model, tensors, (dir / "model.safetensors").string());
  return out;
}

}  // namespace deepthin::storage
