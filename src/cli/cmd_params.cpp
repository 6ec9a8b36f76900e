// deepthin params CONFIG [--json] [--seq-len N]
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "config/config.h"
#include "model/param_count.h"
#include "util/error.h"
#include "util/json_io.h"
#include "util/strings.h"

namespace deepthin::cli {

namespace {
const char* kFlopsConvention =
    "6*N + 12*L_eff*(n_heads*head_dim)*seq_len per token; N = weights multiplied per token (each "
    "block once per time it runs, plus the vocab*dim output projection); attention counted without "
    "causal halving";
}

int run_params(const Argv& argv) {
  Args args(
      "params", "deepthin params CONFIG [--json] [--seq-len N] [--set KEY=VALUE]...",
      "Parameter counts by part and training FLOPs per token, from the config alone.", {"CONFIG"},
      {set_option(),
       {"json", "", "Print JSON instead of a table"},
       {"seq-len", "N", "Context length for the FLOP estimate (default: model.max_seq_len)"}});
  if (!args.parse(argv)) return 0;
  auto cfg = config::load_config(args.positional(0), args.all("set"));
  const auto& m = cfg.model;
  int64_t seq_len = args.get_int("seq-len", m.max_seq_len, 1, 1LL << 30);
  if (seq_len < 1) fail_input("deepthin params: --seq-len must be >= 1");
  auto c = model::count_params(m);
  int64_t flops = model::training_flops_per_token(m, seq_len);

  if (args.has("json")) {
    Json j = Json::object();
    j["config"] = args.positional(0);
    j["total"] = c.total;
    j["embedding"] = c.embedding;
    j["lm_head"] = c.lm_head;
    j["attention"] = c.attention;
    j["ffn"] = c.ffn;
    j["norm"] = c.norm;
    j["non_embedding"] = c.non_embedding;
    j["physical_layers"] = c.physical_layers;
    j["effective_layers"] = c.effective_layers;
    j["tied_embeddings"] = m.tie_embeddings;
    j["matmul_params_per_token"] = c.matmul_params_per_token;
    j["seq_len"] = seq_len;
    j["flops_per_token"] = flops;
    j["flops_convention"] = kFlopsConvention;
    std::printf("%s\n", json::dump(j, 2).c_str());
    return 0;
  }
  auto row = [](const char* name, int64_t v, const std::string& note = "") {
    std::printf("  %-16s %15s  %s\n", name, group_digits(v).c_str(), note.c_str());
  };
  std::printf("%s\n", args.positional(0).c_str());
  row("total", c.total, "(" + human_count(static_cast<double>(c.total)) + ")");
  row("embedding", c.embedding, m.tie_embeddings ? "(shared with the LM head)" : "");
  row("lm_head", c.lm_head, m.tie_embeddings ? "(tied)" : "");
  row("attention", c.attention);
  row("ffn", c.ffn);
  row("norm", c.norm);
  row("non_embedding", c.non_embedding);
  std::printf("  %-16s %15lld  physical, %lld effective\n", "layers",
              static_cast<long long>(c.physical_layers),
              static_cast<long long>(c.effective_layers));
  row("flops/token", flops,
      "at seq_len " + std::to_string(seq_len) + " (" + human_count(static_cast<double>(flops)) +
          "FLOP)");
  std::printf("  convention: %s\n", kFlopsConvention);
  return 0;
}

}  // namespace deepthin::cli
