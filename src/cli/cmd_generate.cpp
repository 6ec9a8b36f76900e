// deepthin generate RUN_OR_DIR --prompt TEXT [sampling options]
#include <cstdint>
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/tokenizer.h"
#include "eval/generate.h"
#include "storage/model_dir.h"
#include "train/checkpoint.h"
#include "util/error.h"
#include "util/json_io.h"
#include "util/log.h"

namespace deepthin::cli {

int run_generate(const Argv& argv) {
  Args args("generate",
            "deepthin generate RUN_OR_DIR --prompt TEXT [--max-new-tokens N] [--temperature T] "
            "[--top-k K] "
            "[--top-p P] [--seed S]",
            "Continue a prompt with a trained model: a run directory (its newest valid checkpoint) "
            "or a model "
            "directory. Decodes with a KV cache that gives every effective layer its own slot.",
            {"RUN_OR_DIR"},
            {{"prompt", "TEXT", "Text to continue"},
             {"max-new-tokens", "N", "Tokens to generate (default 64)"},
             {"temperature", "T", "Sampling temperature; 0 is greedy (default 0.8)"},
             {"top-k", "K", "Sample among the K most likely tokens (default off)"},
             {"top-p", "P", "Nucleus sampling mass (default 1 = off)"},
             {"seed", "S", "Sampling seed (default 0)"},
             {"tokenizer", "M", "SentencePiece model (default: the one in the checkpoint)"},
             {"device", "D", "cpu, cuda or auto (default cpu)"},
             {"precision", "P", "fp32 or bf16 (default fp32)"},
             {"no-cache", "", "Recompute the whole prefix each step (reference path)"},
             {"json", "", "Print JSON: the prompt's token ids, the generated ids and the text"}});
  if (!args.parse(argv)) return 0;
  const std::filesystem::path dir = train::model_dir_of(args.positional(0), "deepthin generate");
  auto loaded = storage::load_model_dir(dir);
  std::filesystem::path tok_path = args.has("tokenizer")
                                       ? std::filesystem::path(args.get("tokenizer"))
                                       : dir / "tokenizer.model";
  if (!std::filesystem::exists(tok_path))
    fail_input(dir.string() + " holds no tokenizer.model; pass --tokenizer");
  auto tok = data::Tokenizer::load(tok_path);
  if (tok.vocab_size() > loaded.config.model.vocab_size)
    fail_input("tokenizer " + tok_path.string() + " has " + std::to_string(tok.vocab_size()) +
               " pieces but the model's vocabulary is " +
               std::to_string(loaded.config.model.vocab_size));
  eval::SampleOptions o;
  o.max_new_tokens = args.get_int("max-new-tokens", 64, 0, INT64_MAX);
  o.temperature = args.get_double("temperature", 0.8, 0.0, 1e4);
  o.top_k = args.get_int("top-k", 0, 0, INT64_MAX);
  o.top_p = args.get_double("top-p", 1.0, 0.0, 1.0, /*lo_open=*/true);
  o.seed = static_cast<uint64_t>(args.get_int("seed", 0, 0, INT64_MAX));
  o.stop_id = tok.eos_id();
  o.use_cache = !args.has("no-cache");
  o.precision = train::parse_precision(args.get("precision", "fp32"));
  auto device = train::parse_device(args.get("device", "cpu"));
  loaded.model->to(device);
  loaded.model->eval();
  std::string prompt = args.get("prompt", "");
  std::vector<int64_t> ids{tok.bos_id()};
  for (int32_t t : tok.encode(prompt)) ids.push_back(t);
  const int64_t window = loaded.config.model.max_seq_len;
  if (static_cast<int64_t>(ids.size()) >= window)
    fail_input("deepthin generate: the prompt is " + std::to_string(ids.size()) +
               " tokens with BOS, and the model's window (model.max_seq_len) is " +
               std::to_string(window) + ": no token can follow it; shorten the prompt to at most " +
               std::to_string(window - 2) + " tokens");
  auto out = eval::generate(loaded.model, ids, o);
  const bool stopped = !out.empty() && out.back() == tok.eos_id();
  if (!stopped && static_cast<int64_t>(out.size()) < o.max_new_tokens)
    log::warn("generated {} of the {} tokens asked for: the model's window of {} tokens is full",
              out.size(), o.max_new_tokens, window);
  std::vector<int32_t> all(ids.begin() + 1, ids.end());
  for (int64_t t : out)
    if (t != tok.eos_id()) all.push_back(static_cast<int32_t>(t));
  if (args.has("json")) {
    Json j = Json::object();
    Json p = Json::array(), g = Json::array();
    for (int64_t t : ids) p.push_back(t);
    for (int64_t t : out) g.push_back(t);
    j["prompt_ids"] = std::move(p);
    j["ids"] = std::move(g);
    j["text"] = tok.decode(all);
    std::printf("%s\n", json::dump(j).c_str());
    return 0;
  }
  std::printf("%s\n", tok.decode(all).c_str());
  return 0;
}

}  // namespace deepthin::cli
