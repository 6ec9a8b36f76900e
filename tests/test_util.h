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

#include <gtest/gtest.h>

#include <functional>

#include "data/prepare.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json_io.h"

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

// Runs f, which must throw a deepthin input error; returns its message (and fails the test
// otherwise).
inline std::string input_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::input) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an input error";
  return "";
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

// A prepared token dataset in `dir` (train and val splits) of `docs` documents of 100 token ids
// below `vocab` (a power of two): a deterministic process with some structure to learn.
inline fs::path write_token_dataset(const fs::path& dir, int vocab, int docs, uint32_t seed) {
  int shift = 32;
  for (int v = vocab; v > 1; v >>= 1) --shift;
  std::string jsonl;
  uint32_t x = seed;
  for (int d = 0; d < docs; ++d) {
    Json ids = Json::array();
    int prev = 1;
    for (int k = 0; k < 100; ++k) {
      x = x * 1664525u + 1013904223u;
      prev = (x >> 29) < 5 ? (prev * 7 + 3) % vocab : static_cast<int>(x >> shift);
      ids.push_back(prev);
    }
    Json j = Json::object();
    j["token_ids"] = ids;
    jsonl += json::dump(j) + "\n";
  }
  write_text(dir / "tokens.jsonl", jsonl);
  data::PrepareOptions p;
  p.vocab_size = vocab;
  p.inputs = {(dir / "tokens.jsonl").string()};
  p.format = data::InputFormat::jsonl_tokens;
  p.out = dir / "data";
  p.val_fraction = 0.1;
  data::prepare_dataset(p);
  return p.out;
}

}  // namespace deepthin::test
