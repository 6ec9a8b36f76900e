// deepthin config FILE [--set …] | deepthin config --reference
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "config/config.h"
#include "util/error.h"

namespace deepthin::cli {

int run_config(const Argv& argv) {
  bool reference = false;
  for (const auto& a : argv) reference = reference || a == "--reference";
  if (reference) {
    if (argv.size() != 1) fail_input("deepthin config --reference takes no other arguments");
    std::fputs(config::reference_markdown().c_str(), stdout);
    return 0;
  }
  Args args("config", "deepthin config FILE [--set KEY=VALUE]... | deepthin config --reference",
            "Print the fully resolved config: base: files merged, --set overrides applied, derived "
            "defaults filled in. --reference prints the markdown table of every key.",
            {"FILE"}, {set_option(), {"reference", "", "Print the reference of every config key"}});
  if (!args.parse(argv)) return 0;
  auto cfg = config::load_config(args.positional(0), args.all("set"));
  std::fputs(config::to_yaml(cfg).c_str(), stdout);
  return 0;
}

}  // namespace deepthin::cli
