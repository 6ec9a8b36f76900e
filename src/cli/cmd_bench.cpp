// deepthin bench CONFIG [--set …] [--steps N] [--warmup W] [--profile N] [--step-only]
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "config/config.h"
#include "train/bench.h"

namespace deepthin::cli {

int run_bench(const Argv& argv) {
  Args args("bench",
            "deepthin bench CONFIG [--set KEY=VALUE]... [--steps N] [--warmup W] [--profile N] "
            "[--step-only]",
            "Time the parts of one training step (forward, forward+backward, fused loss, "
            "optimizer, whole "
            "step) on random tokens at the config's micro-batch, length, device and precision. "
            "Prints JSON.",
            {"CONFIG"},
            {set_option(),
             {"steps", "N", "Timed repetitions per part (default 10; median reported)"},
             {"warmup", "W", "Untimed repetitions first (default 3)"},
             {"profile", "N",
              "Also profile N steps (CUDA) and report GPU time per step by kernel family"},
             {"step-only", "", "Time only the whole step, not its parts"}});
  if (!args.parse(argv)) return 0;
  auto cfg = config::load_config(args.positional(0), args.all("set"));
  train::BenchOptions o;
  o.steps = args.get_int("steps", 10, 1, 1000000);
  o.warmup = args.get_int("warmup", 3, 0, 1000000);
  o.profile_steps = args.get_int("profile", 0, 0, 1000);
  o.step_only = args.has("step-only");
  std::printf("%s\n", json::dump(train::bench_step(cfg, o), 2).c_str());
  return 0;
}

}  // namespace deepthin::cli
