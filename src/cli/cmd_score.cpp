// deepthin score DIR --tokens FILE [--device D] [--precision fp32|bf16]
#include <cmath>
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "eval/score.h"
#include "storage/model_dir.h"
#include "util/error.h"
#include "util/json_io.h"

namespace deepthin::cli {

int run_score(const Argv& argv) {
  Args args("score", "deepthin score DIR --tokens FILE [--device cpu|cuda] [--precision fp32|bf16]",
            "Per-position log-probability of each next token, and their sum, for every sequence in "
            "FILE (one line of whitespace-separated token ids each). Prints JSON.",
            {"DIR"},
            {{"tokens", "FILE", "Token sequences, one per line"},
             {"device", "D", "cpu, cuda, cuda:N or auto (default cpu)"},
             {"precision", "P", "fp32 or bf16 autocast (default fp32)"}});
  if (!args.parse(argv)) return 0;
  if (!args.has("tokens")) fail_input("deepthin score: --tokens FILE is required");
  auto device = train::parse_device(args.get("device", "cpu"));
  auto precision = train::parse_precision(args.get("precision", "fp32"));
  auto loaded = storage::load_model_dir(args.positional(0));
  const auto& m = loaded.config.model;
  auto sequences = eval::read_token_lines(args.get("tokens"), m.vocab_size, m.max_seq_len);
  loaded.model->to(device);
  loaded.model->eval();

  Json out = Json::object();
  out["model"] = args.positional(0);
  out["device"] = device.str();
  out["precision"] = train::precision_name(precision);
  Json seqs = Json::array();
  for (const auto& seq : sequences) {
    auto s = eval::score_sequence(loaded.model, seq, precision);
    if (!std::isfinite(s.sum))
      fail_runtime("deepthin score: sequence " + std::to_string(seqs.size() + 1) + " of " +
                   args.get("tokens") + " has a non-finite log-probability (" +
                   std::to_string(s.sum) +
                   "): the model's precision overflows; nothing is written");
    Json j = Json::object();
    j["n_tokens"] = static_cast<int64_t>(seq.size());
    Json lp = Json::array();
    for (double v : s.logprobs) lp.push_back(v);
    j["logprobs"] = std::move(lp);
    j["sum"] = s.sum;
    seqs.push_back(std::move(j));
  }
  out["sequences"] = std::move(seqs);
  std::printf("%s\n", json::dump(out, 1).c_str());
  return 0;
}

}  // namespace deepthin::cli
