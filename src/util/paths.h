// Where a command may write. Two rules every command follows:
//
// 1. A name that becomes a path component (a run name, an experiment, its points and its teacher,
//    a checkpoint) is one component: 1 to 128 bytes of valid UTF-8, not "." or "..", no '/', '\\',
//    NUL or other control character. It is checked where it enters (config or experiment loading),
//    with the key named, so nothing is ever written outside the root the name lives under.
// 2. An output that already exists is replaced only with --force, and --force replaces only what
//    deepthin itself made and can recognise as the same kind of output: a directory whose entries
//    are all files that kind of output holds (a user's file inside it, a run's checkpoints, a lock
//    are not), or a file whose contents carry the format's signature. Never a special file or a
//    symbolic link, never a directory a live process has locked, never a path that is, contains
//    or lies inside one of the command's inputs.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace deepthin {

namespace fs = std::filesystem;

inline constexpr size_t kMaxNameBytes = 128;

// Empty when `name` is a valid single path component, else why not ("contains '/'").
std::string path_component_problem(std::string_view name);
// Input error "<what>: '<name>' is not a valid name: <why> (…)" unless it is one.
void check_path_component(std::string_view name, const std::string& what);

// Absolute and lexically normal, with symbolic links resolved along the part that exists.
fs::path resolved(const fs::path& p);
// Whether `p` is `root` or lies under it (both resolved).
bool is_within(const fs::path& p, const fs::path& root);

// What a kind of output looks like, for recognising one deepthin made.
struct OutputKind {
  std::string name;  // "a model directory", "a GGUF file"
  bool directory = false;
  // Directory kinds: the entries such a directory may hold (exact names, or a prefix and suffix
  // written "train_*.bin"); `required` must be among them.
  std::vector<std::string> entries;
  std::string required;
  // File kinds (and, optionally, directory kinds): true when the path's contents are the kind's.
  std::function<bool(const fs::path&)> recognise;
};

struct OutputRules {
  std::string command;  // "deepthin export"
  std::string option;   // "--out"
  bool force = false;
  std::vector<fs::path> inputs;  // what the command reads
};

// Before writing `out`: returns when `out` does not exist, or exists and may be replaced under the
// rules above; otherwise an input error naming the option, the path and the reason. Also refuses
// an `out` whose parent directory is missing.
void check_output(const fs::path& out, const OutputKind& kind, const OutputRules& rules);

// The file's first bytes (fewer when it is shorter); empty when it cannot be read.
std::string read_prefix(const fs::path& p, size_t n);

// Whether a live process holds the flock of `dir`/.lock (a running trainer); the holder's
// "pid host" in `holder` when so.
bool dir_lock_held(const fs::path& dir, std::string* holder = nullptr);

}  // namespace deepthin
