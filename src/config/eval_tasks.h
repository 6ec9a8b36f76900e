// The names of the zero-shot tasks deepthin evaluates (eval/tasks.h reads them; experiments name
// them in `eval: {tasks: [...]}`), in the paper's order.
#pragma once

#include <string>
#include <vector>

namespace deepthin::config {

inline const std::vector<std::string>& eval_task_names() {
  static const std::vector<std::string> names = {"arc_easy",   "arc_challenge", "boolq",
                                                 "piqa",       "siqa",          "hellaswag",
                                                 "openbookqa", "winogrande"};
  return names;
}

}  // namespace deepthin::config
