// deepthin: the command-line entry point. The only place that prints errors and picks exit codes:
// 0 success, 2 bad input or config, 1 failure at run time.
#include <c10/util/Exception.h>

#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "util/error.h"
#include "util/strings.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const deepthin::cli::Argv&);
};

const Command kCommands[] = {
    {"config", "Print the fully resolved config (base: files merged, --set applied)",
     deepthin::cli::run_config},
    {"params", "Count parameters and training FLOPs per token of a model config",
     deepthin::cli::run_params},
    {"init", "Write a freshly initialised model directory (safetensors + config.json)",
     deepthin::cli::run_init},
    {"score", "Per-position next-token log-probabilities of token sequences, as JSON",
     deepthin::cli::run_score},
    {"tokenizer", "Train a SentencePiece tokenizer; encode and decode text",
     deepthin::cli::run_tokenizer},
    {"train", "Train a model from a config (bf16 on GPU, exact resume, metrics, checkpoints)",
     deepthin::cli::run_train},
    {"generate", "Continue a prompt with a trained model (KV cache per effective layer)",
     deepthin::cli::run_generate},
    {"bench", "Time the parts of a training step (forward, backward, loss, optimizer)",
     deepthin::cli::run_bench},
    {"eval",
     "Zero-shot accuracy on the paper's eight tasks (as lm-eval computes it), perplexity, W8A8",
     deepthin::cli::run_eval},
    {"export",
     "Export for phones and other runtimes: llama.cpp GGUF, ExecuTorch .pte, HF directory",
     deepthin::cli::run_export},
    {"data", "Prepare token shards from text, JSONL or token JSONL; inspect datasets",
     deepthin::cli::run_data},
    {"sweep", "Expand an experiment into runs (budget solver for depth vs width) and train them",
     deepthin::cli::run_sweep},
    {"report", "Tables (CSV, markdown) and plots of a sweep's results", deepthin::cli::run_report},
    {"kd", "Distillation tools: cache a teacher's top-k log-probabilities once for many students",
     deepthin::cli::run_kd},
};

void print_usage() {
  std::printf("usage: deepthin COMMAND [options]   (deepthin COMMAND --help for its options)\n\n");
  for (const auto& c : kCommands) std::printf("  %-9s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  std::string name = argv[1];
  deepthin::cli::Argv rest(argv + 2, argv + argc);
  try {
    for (const auto& c : kCommands)
      if (name == c.name) return c.run(rest);
    std::vector<std::string> names;
    for (const auto& c : kCommands) names.push_back(c.name);
    std::string msg = "unknown command '" + name + "'";
    if (auto near = deepthin::nearest(name, names)) msg += "; did you mean '" + *near + "'?";
    throw deepthin::Error(deepthin::ErrorKind::input,
                          msg + " (commands: " + deepthin::join(names, ", ") + ")");
  } catch (const deepthin::Error& e) {
    std::fprintf(stderr, "deepthin: error: %s\n", e.what());
    return e.exit_code();
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "deepthin: error in torch: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "deepthin: error: %s\n", e.what());
    return 1;
  }
}
