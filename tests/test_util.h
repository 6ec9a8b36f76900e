// Helpers shared by the test suites: scratch directories, files, and running the deepthin binary.
#pragma once

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "util/fs.h"

namespace deepthin::test {

namespace fs = std::filesystem;

inline fs::path source_dir() {
  return DEEPTHIN_SOURCE_DIR;
}
inline fs::path preset(const std::string& name) {
  return source_dir() / "configs" / "models" / (name + ".yaml");
}

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "deepthin-test-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  ~TempDir() { remove_tree(path_); }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline fs::path write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
  return path;
}

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct CliResult {
  int status = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs build/deepthin with the given argument string (shell-quoted by the caller), with extra
// environment assignments ("A=1 B=2") in front.
inline CliResult run_cli_with_env(const std::string& env, const std::string& args) {
  TempDir tmp;
  std::string cmd = env + " " + std::string(DEEPTHIN_CLI) + " " + args + " >" +
                    (tmp / "out").string() + " 2>" + (tmp / "err").string();
  int rc = std::system(cmd.c_str());
  CliResult r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = read_text(tmp / "out");
  r.err = read_text(tmp / "err");
  return r;
}

inline CliResult run_cli(const std::string& args) {
  return run_cli_with_env("", args);
}

}  // namespace deepthin::test
