#include "export/hf.h"

#include "data/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json_io.h"

namespace deepthin::exports {

void write_hf_dir(const std::filesystem::path& out, const LoadedModel& model,
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
  SaveOptions so;
  so.expand_shared = opts.expand_shared;
  so.dtype = opts.dtype;
  save_model_files(dir.path(), model.model, model.config, so);
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
    write_file_atomic(dir.path() / "tokenizer.model", read_file(opts.tokenizer, "tokenizer"));
    Json special = Json::object();
    special["bos_token"] = tok.piece(tok.bos_id());
    special["eos_token"] = tok.piece(tok.eos_id());
    special["unk_token"] = tok.piece(tok.unk_id());
    write_file_atomic(dir.path() / "special_tokens_map.json", json::dump(special, 2) + "\n");
    Json tc = special;
    tc["tokenizer_class"] = "LlamaTokenizer";
    tc["add_bos_token"] = true;
    tc["add_eos_token"] = false;
    tc["add_prefix_space"] = tok.adds_space_prefix();
    tc["legacy"] = false;
    tc["model_max_length"] = m.max_seq_len;
    tc["clean_up_tokenization_spaces"] = false;
    write_file_atomic(dir.path() / "tokenizer_config.json", json::dump(tc, 2) + "\n");
  }
  Json gen = Json::object();
  gen["bos_token_id"] = bos;
  gen["eos_token_id"] = eos;
  gen["max_length"] = m.max_seq_len;
  gen["do_sample"] = false;
  write_file_atomic(dir.path() / "generation_config.json", json::dump(gen, 2) + "\n");
  dir.commit();
}

}  // namespace deepthin::exports
