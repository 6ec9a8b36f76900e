// deepthin init CONFIG --out DIR [--seed S] [--expand-shared] [--dtype fp32|bf16] [--force]
#include <cstdint>
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "config/config.h"
#include "model/decoder.h"
#include "storage/model_dir.h"
#include "train/device_info.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/paths.h"
#include "util/strings.h"

namespace deepthin::cli {

int run_init(const Argv& argv) {
  Args args(
      "init",
      "deepthin init CONFIG --out DIR [--seed S] [--expand-shared] [--dtype fp32|bf16] [--force]",
      "Write a freshly initialised model: DIR/model.safetensors (HF Llama names), "
      "DIR/config.json and DIR/deepthin.yaml.",
      {"CONFIG"},
      {set_option(),
       {"out", "DIR", "Directory to write (must not exist unless --force)"},
       {"seed", "S", "Initialisation seed (default 0)"},
       {"expand-shared", "", "Write every effective layer as its own block (plain Llama)"},
       {"dtype", "fp32|bf16", "Stored weight dtype (default fp32)"},
       {"force", "", "Replace DIR if it exists"}});
  if (!args.parse(argv)) return 0;
  auto cfg = config::load_config(args.positional(0), args.all("set"));
  if (!args.has("out")) fail_input("deepthin init: --out DIR is required");
  fs::path out = args.get("out");
  int64_t seed = args.get_int("seed", 0, 0, INT64_MAX);
  if (seed < 0) fail_input("deepthin init: --seed must be >= 0");
  std::string dtype = args.get("dtype", "fp32");
  if (dtype != "fp32" && dtype != "bf16")
    fail_input("deepthin init: --dtype must be fp32 or bf16, got '" + dtype + "'");
  check_output(out, storage::model_dir_output(),
               OutputRules{"deepthin init", "--out", args.has("force"), {args.positional(0)}});

  train::check_memory_fits(cfg, c10::Device(c10::kCPU), /*training=*/false, 1, "deepthin init");
  model::Decoder m(cfg.model);
  m->reset_parameters(static_cast<uint64_t>(seed));
  storage::SaveOptions opts;
  opts.expand_shared = args.has("expand-shared");
  opts.dtype = dtype == "bf16" ? at::kBFloat16 : at::kFloat;

  AtomicDir dir(out);
  storage::save_model_files(dir.path(), m, cfg, opts);
  dir.commit();
  log::info("wrote {} ({} parameters, {} effective layers{})", out.string(),
            group_digits(model::numel(*m)), cfg.model.effective_layers(),
            opts.expand_shared ? ", expanded" : "");
  return 0;
}

}  // namespace deepthin::cli
