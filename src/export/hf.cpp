#include "export/hf.h"

#include "export/hf_tokenizer.h"

#include "data/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json_io.h"

namespace deepthin::exports {

OutputKind hf_dir_output() {
  return {"a Hugging Face model directory",
          true,
          {"model.safetensors", "config.json", "deepthin.yaml", "tokenizer.model", "tokenizer.json",
           "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"},
          "config.json",
          {}};
}

void write_hf_dir(const std::filesystem::path& out, const storage::LoadedModel& model,
                  const HfExportOptions& opts) {
  const auto& m = model.config.model;
  if (m.norm.type != config::NormType::rmsnorm || m.ffn.type != config::FfnType::swiglu)
    fail_input(std::string("model.") +
               (m.norm.type != config::NormType::rmsnorm ? "norm.type is layernorm"
                                                         : "ffn.type is a plain FFN") +
               ": transformers' LlamaForCausalLM has RMSNorm and a SwiGLU feed-forward only");
  if (m.layer_sharing.repeats > 1 && !opts.expand_shared)
    fail_input("model.layer_sharing.repeats is " + std::to_string(m.layer_sharing.repeats) +
               ": transformers' LlamaForCausalLM runs each block once; pass --expand-shared to "
               "write every effective layer as its own block (" +
               std::to_string(m.effective_layers()) + " layers)");
  if (opts.dtype != at::kFloat && opts.dtype != at::kBFloat16)
    fail_input("--quant for the hf format is fp32 or bf16");

  AtomicDir dir(out);
  storage::SaveOptions so;
  so.expand_shared = opts.expand_shared;
  so.dtype = opts.dtype;
  storage::save_model_files(dir.path(), model.model, model.config, so);
  if (opts.dtype == at::kBFloat16) {  // what transformers' dtype="auto" reads
    Json cfg = json::parse(read_file(dir.path() / "config.json", "config.json"));
    cfg["torch_dtype"] = "bfloat16";
    cfg["dtype"] = "bfloat16";
    write_file_atomic(dir.path() / "config.json", json::dump(cfg, 2) + "\n");
  }

  int64_t bos = 1, eos = 2;
  if (!opts.tokenizer.empty()) {
    auto tok = data::Tokenizer::load(opts.tokenizer);
    bos = tok.bos_id();
    eos = tok.eos_id();
    const std::string model_bytes = read_file(tok.path(), "tokenizer");
    // tokenizer.json encodes exactly as the SentencePiece model (export/hf_tokenizer.h); the
    // .model travels with it for tools that read SentencePiece directly.
    const Json tj =
        hf_tokenizer_json(parse_sp_model(model_bytes, tok.path().string()), tok.path().string());
    write_file_atomic(dir.path() / "tokenizer.json", json::dump(tj, 1) + "\n");
    write_file_atomic(dir.path() / "tokenizer.model", model_bytes);
    Json special = Json::object();
    if (bos >= 0) special["bos_token"] = tok.piece(tok.bos_id());
    if (eos >= 0) special["eos_token"] = tok.piece(tok.eos_id());
    special["unk_token"] = tok.piece(tok.unk_id());
    write_file_atomic(dir.path() / "special_tokens_map.json", json::dump(special, 2) + "\n");
    Json tc = special;
    tc["tokenizer_class"] = "PreTrainedTokenizerFast";
    tc["add_bos_token"] = bos >= 0;
    tc["add_eos_token"] = false;
    // SentencePiece reads "<s>" in text as three characters, never as the control token.
    tc["split_special_tokens"] = true;
    tc["model_max_length"] = m.max_seq_len;
    tc["clean_up_tokenization_spaces"] = false;
    write_file_atomic(dir.path() / "tokenizer_config.json", json::dump(tc, 2) + "\n");
  }
  if (bos != 1 || eos != 2) {  // config.json was written with LLaMA's ids
    Json cfg = json::parse(read_file(dir.path() / "config.json", "config.json"));
    cfg["bos_token_id"] = bos >= 0 ? Json(bos) : Json(nullptr);
    cfg["eos_token_id"] = eos >= 0 ? Json(eos) : Json(nullptr);
    write_file_atomic(dir.path() / "config.json", json::dump(cfg, 2) + "\n");
  }
  Json gen = Json::object();
  gen["bos_token_id"] = bos >= 0 ? Json(bos) : Json(nullptr);
  gen["eos_token_id"] = eos >= 0 ? Json(eos) : Json(nullptr);
  gen["max_length"] = m.max_seq_len;
  gen["do_sample"] = false;
  write_file_atomic(dir.path() / "generation_config.json", json::dump(gen, 2) + "\n");
  dir.commit();
}

}  // namespace deepthin::exports
