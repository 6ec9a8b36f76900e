// The path rules of util/paths.h under arbitrary names and --out paths. The first byte picks what
// is fuzzed:
//   even: the rest is a name. Accepted names must stay one component under a root: root / name
//         is inside the root and its filename is the name, whatever the bytes.
//   odd:  the rest is an --out path (and byte 1 picks the kind and --force) checked against a
//         scratch tree holding a model directory, a run directory locked by this process, a GGUF
//         file, a user's file and a FIFO. check_output may only refuse with deepthin::Error, must
//         never change the tree, and may accept an existing path only when it is the kind asked
//         for and --force was given.
#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "util/fs.h"
#include "util/paths.h"

namespace {

namespace fs = std::filesystem;

std::string listing(const fs::path& root) {
  std::string out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    struct stat st {};
    ::lstat(it->path().c_str(), &st);
    out += it->path().string() + " " + std::to_string(st.st_size) + " " +
           std::to_string(st.st_mtim.tv_nsec) + "\n";
  }
  return out;
}

const fs::path& tree() {
  static const fs::path root = [] {
    const fs::path r = deepthin::fuzz::scratch() / "tree";
    fs::create_directories(r / "model");
    for (const char* f : {"model.safetensors", "config.json", "deepthin.yaml"})
      deepthin::write_file_atomic(r / "model" / f, "x");
    fs::create_directories(r / "run" / "checkpoints");
    deepthin::write_file_atomic(r / "run" / "config.yaml", "x");
    deepthin::write_file_atomic(r / "model.gguf", "GGUF....");
    deepthin::write_file_atomic(r / "notes.txt", "mine");
    ::mkfifo((r / "fifo").c_str(), 0644);
    return r;
  }();
  static deepthin::DirLock lock(root / "run", "run directory");  // a live trainer's run
  return root;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 2, size - 2);
  if (data[0] % 2 == 0) {
    const std::string name(reinterpret_cast<const char*>(data) + 1, size - 1);
    if (deepthin::path_component_problem(name).empty()) {
      const fs::path root = "/fuzz-root/runs";
      const fs::path p = root / name;
      if (p.filename() != name || !deepthin::is_within(p, root) ||
          p.lexically_normal().parent_path() != root)
        __builtin_trap();  // an accepted name escaped its root
    }
    return 0;
  }
  const fs::path& root = tree();
  const std::string before = listing(root);
  const bool force = data[1] & 1;
  const std::vector<deepthin::OutputKind> kinds = {
      {"a model directory", true, {"model.safetensors", "config.json", "deepthin.yaml"},
       "model.safetensors", {}},
      {"a GGUF file", false, {}, "",
       [](const fs::path& p) { return deepthin::read_prefix(p, 4) == "GGUF"; }}};
  const auto& kind = kinds[(data[1] >> 1) % kinds.size()];
  const fs::path out = rest.find('\0') == std::string::npos ? root / rest : root / "x";
  bool accepted = false;
  deepthin::fuzz::expect_clean([&] {
    deepthin::check_output(out, kind,
                           deepthin::OutputRules{"fuzz", "--out", force, {root / "model"}});
    accepted = true;
  });
  if (listing(root) != before) __builtin_trap();  // the check changed the tree
  struct stat st {};
  if (accepted && ::lstat(out.c_str(), &st) == 0) {
    if (!force || S_ISLNK(st.st_mode) || S_ISFIFO(st.st_mode)) __builtin_trap();
    if (deepthin::is_within(root / "model", out)) __builtin_trap();  // it would replace the input
    if (deepthin::is_within(out, root / "run")) __builtin_trap();    // inside a locked run
  }
  return 0;
}
