// One function per subcommand; each parses its own arguments and returns the exit status.
#pragma once

#include <string>
#include <vector>

namespace deepthin::cli {

using Argv = std::vector<std::string>;

int run_config(const Argv& argv);
int run_params(const Argv& argv);
int run_init(const Argv& argv);
int run_score(const Argv& argv);
int run_tokenizer(const Argv& argv);
int run_data(const Argv& argv);
int run_sweep(const Argv& argv);
int run_report(const Argv& argv);
int run_train(const Argv& argv);
int run_generate(const Argv& argv);
int run_bench(const Argv& argv);
int run_export(const Argv& argv);
int run_eval(const Argv& argv);
int run_kd(const Argv& argv);

}  // namespace deepthin::cli
