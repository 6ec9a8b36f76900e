// Running another program: argv passed as is (no shell, no quoting), its stdout captured, its
// stderr passed through to ours.
#pragma once

#include <string>
#include <vector>

namespace deepthin {

struct ProcessResult {
  int status = -1;  // exit status; 128 + signal when killed; -1 when it could not be started
  std::string out;  // everything it wrote to stdout
};

// Runs argv[0] (looked up in PATH when it has no slash) with argv[1…] and waits for it.
ProcessResult run_process(const std::vector<std::string>& argv);

}  // namespace deepthin
