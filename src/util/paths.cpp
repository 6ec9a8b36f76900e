// The path rules of paths.h: single-component names and replaceable outputs.
#include "util/paths.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "util/error.h"
#include "util/unicode.h"

namespace deepthin {

std::string path_component_problem(std::string_view name) {
  if (name.empty()) return "it is empty";
  if (name.size() > kMaxNameBytes)
    return "it is " + std::to_string(name.size()) + " bytes long, the limit is " +
           std::to_string(kMaxNameBytes);
  if (name == "." || name == "..") return "it names a directory relative to its parent";
  for (unsigned char c : name) {
    if (c == '/') return "it contains '/'";
    if (c == '\\') return "it contains '\\'";
    if (c == 0) return "it contains a NUL byte";
    if (c < 0x20 || c == 0x7F) return "it contains a control character";
  }
  for (char32_t c : unicode::decode(name))
    if (c >= 0xDC80 && c <= 0xDCFF) return "it is not valid UTF-8";
  return "";
}

void check_path_component(std::string_view name, const std::string& what) {
  const std::string why = path_component_problem(name);
  if (!why.empty()) {
    std::string shown(name.substr(0, std::min<size_t>(name.size(), 80)));
    for (char& c : shown)
      if (static_cast<unsigned char>(c) < 0x20) c = '?';
    fail_input(what + ": '" + shown + (name.size() > 80 ? "…" : "") +
               "' is not a valid name: " + why +
               " (a name becomes one directory or file name: 1-" +
               std::to_string(kMaxNameBytes) +
               " bytes, no '/', '\\', control characters, '.' or '..')");
  }
}

fs::path resolved(const fs::path& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  if (ec) abs = p;
  fs::path r = fs::weakly_canonical(abs, ec);
  return (ec ? abs : r).lexically_normal();
}

bool is_within(const fs::path& p, const fs::path& root) {
  const fs::path a = resolved(p), b = resolved(root);
  auto ai = a.begin();
  for (auto bi = b.begin(); bi != b.end(); ++bi, ++ai) {
    if (bi->empty()) continue;  // a trailing separator
    if (ai == a.end() || *ai != *bi) return false;
  }
  return true;
}

std::string read_prefix(const fs::path& p, size_t n) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return "";
  std::string buf(n, '\0');
  ssize_t got = ::read(fd, buf.data(), n);
  ::close(fd);
  buf.resize(got > 0 ? static_cast<size_t>(got) : 0);
  return buf;
}

bool dir_lock_held(const fs::path& dir, std::string* holder) {
  const fs::path lock = dir / ".lock";
  struct stat st {};
  if (::lstat(lock.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  int fd = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0;
  ::close(fd);  // releases the shared lock taken when it was free
  if (held && holder) {
    *holder = read_prefix(lock, 256);
    while (!holder->empty() && (holder->back() == '\n' || holder->back() == ' '))
      holder->pop_back();
  }
  return held;
}

namespace {

bool entry_matches(const std::string& name, const std::string& pattern) {
  const auto star = pattern.find('*');
  if (star == std::string::npos) return name == pattern;
  const std::string pre = pattern.substr(0, star), post = pattern.substr(star + 1);
  return name.size() >= pre.size() + post.size() && name.compare(0, pre.size(), pre) == 0 &&
         name.compare(name.size() - post.size(), post.size(), post) == 0;
}

}  // namespace

void check_output(const fs::path& out_arg, const OutputKind& kind, const OutputRules& rules) {
  fs::path out = out_arg;
  while (!out.empty() && out.filename().empty() && out.has_parent_path() && out != out.root_path())
    out = out.parent_path();  // "dir/" is "dir"
  const std::string head = rules.command + ": " + rules.option + " " + out.string();
  auto refuse = [&](const std::string& why) { fail_input(head + ": " + why); };
  if (out.empty()) fail_input(rules.command + ": " + rules.option + " is empty");
  for (const auto& in : rules.inputs) {
    if (in.empty()) continue;
    if (is_within(in, out))
      refuse(resolved(in) == resolved(out) ? "is the input being read (" + in.string() + ")"
                                           : "contains the input being read (" + in.string() + ")");
    if (is_within(out, in))
      refuse("lies inside the input being read (" + in.string() +
             "); write the output somewhere else");
  }
  struct stat st {};
  if (::lstat(out.c_str(), &st) != 0) {
    const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
    std::error_code ec;
    if (!fs::is_directory(parent, ec))
      refuse("cannot be written: its directory " + parent.string() + " does not exist");
    return;
  }
  if (S_ISLNK(st.st_mode))
    refuse("exists and is a symbolic link; deepthin does not replace links (remove it first)");
  if (!rules.force)
    refuse("already exists; pass --force to replace it (--force replaces only " + kind.name +
           " that deepthin wrote there)");
  const bool is_dir = S_ISDIR(st.st_mode);
  if (!is_dir && !S_ISREG(st.st_mode))
    refuse("exists and is not a regular file or directory (a device, FIFO or socket); "
           "--force replaces only " + kind.name);
  if (is_dir != kind.directory)
    refuse(std::string("exists and is a ") + (is_dir ? "directory" : "file") + "; --force replaces only " +
           kind.name);
  if (is_dir) {
    std::string holder;
    if (dir_lock_held(out, &holder))
      refuse("is in use by a running deepthin process" +
             (holder.empty() ? std::string() : " (" + holder + ")") + "; it is not replaced");
    bool has_required = kind.required.empty();
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(out, ec)) {
      const std::string n = e.path().filename().string();
      const bool known = std::any_of(kind.entries.begin(), kind.entries.end(),
                                     [&](const std::string& p) { return entry_matches(n, p); });
      struct stat es {};
      if (!known || ::lstat(e.path().c_str(), &es) != 0 || !S_ISREG(es.st_mode))
        refuse("holds '" + n + "', which " + kind.name +
               " written by deepthin does not; --force replaces only such outputs, so nothing "
               "was changed");
      if (n == kind.required) has_required = true;
    }
    if (ec) refuse("cannot be listed: " + ec.message());
    if (!has_required)
      refuse("does not hold " + kind.required + ", so it is not " + kind.name +
             " deepthin wrote; nothing was changed");
  }
  if (kind.recognise && !kind.recognise(out))
    refuse("is not " + kind.name + " (its contents do not carry the format's signature); "
           "--force replaces only such outputs, so nothing was changed");
}

}  // namespace deepthin
