#include "util/fs.h"

#include <sys/file.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include <openssl/evp.h>

#include <memory>
#include <optional>

#include "util/error.h"
#include "util/strings.h"

namespace deepthin {

std::string read_file(const fs::path& path, std::string_view what, uint64_t max_bytes) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail_input(std::string(what) + " not found: " + path.string());
  if (fs::is_directory(path, ec))
    fail_input(std::string(what) + " is a directory, expected a file: " + path.string());
  // A device or a FIFO (/dev/zero, a named pipe) would be read forever or block.
  if (!fs::is_regular_file(path, ec))
    fail_input(std::string(what) + " is not a regular file: " + path.string());
  if (max_bytes == 0)
    max_bytes = static_cast<uint64_t>(::sysconf(_SC_PHYS_PAGES)) *
                static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)) / 2;
  if (const auto size = fs::file_size(path, ec); !ec && size > max_bytes)
    fail_input(std::string(what) + " " + path.string() + " is " + std::to_string(size) +
               " bytes, more than the " + std::to_string(max_bytes) +
               " bytes it may have (it is read into memory whole)");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    fail_input("cannot read " + std::string(what) + " " + path.string() + ": " +
               std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      fail_runtime("OpenSSL could not start a SHA-256 digest");
  }
  void update(const void* data, size_t n) {
    if (EVP_DigestUpdate(ctx_.get(), data, n) != 1) fail_runtime("OpenSSL SHA-256 update failed");
  }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), md, &len) != 1) fail_runtime("OpenSSL SHA-256 failed");
    return hex_encode(md, len);
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

}  // namespace

std::string sha256_hex(std::string_view data) {
  Sha256 h;
  h.update(data.data(), data.size());
  return h.hex();
}

std::string sha256_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    fail_input("cannot checksum " + path.string() + ": not found or not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_input("cannot read " + path.string() + ": " + std::strerror(errno));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  return h.hex();
}

void fsync_path(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;  // best effort for directories on filesystems that refuse it
  ::fsync(fd);
  ::close(fd);
}

void remove_tree(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    if (DIR* d = ::opendir(path.c_str())) {
      std::vector<std::string> names;
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(n);
      }
      ::closedir(d);
      for (const auto& n : names) remove_tree(path / n);
    }
    ::rmdir(path.c_str());
  } else {
    ::unlink(path.c_str());
  }
}

void write_file_atomic(const fs::path& path, std::string_view data) {
  write_file_atomic(path, std::vector<std::string_view>{data}, /*sha256=*/false);
}

std::string write_file_atomic(const fs::path& path, const std::vector<std::string_view>& parts,
                              bool sha256) {
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail_runtime("cannot write " + tmp.string() + ": " + std::strerror(errno));
  std::optional<Sha256> hash;
  if (sha256) hash.emplace();
  constexpr size_t kBlock = size_t{8} << 20;  // hashed while it is still in the cache
  for (std::string_view data : parts) {
    size_t done = 0;
    while (done < data.size()) {
      const size_t want = std::min(kBlock, data.size() - done);
      ssize_t n = ::write(fd, data.data() + done, want);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::string err = std::strerror(errno);
        ::close(fd);
        ::unlink(tmp.c_str());
        fail_runtime("cannot write " + tmp.string() + ": " + err);
      }
      if (hash) hash->update(data.data() + done, static_cast<size_t>(n));
      done += static_cast<size_t>(n);
    }
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    fail_runtime("cannot flush " + tmp.string() + ": " + err);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    ::unlink(tmp.c_str());
    fail_runtime("cannot rename " + tmp.string() + " to " + path.string() + ": " + ec.message());
  }
  fsync_path(path.has_parent_path() ? path.parent_path() : fs::path("."));
  return hash ? hash->hex() : std::string();
}

AtomicDir::AtomicDir(fs::path final_path) : final_(std::move(final_path)) {
  if (final_.filename().empty()) final_ = final_.parent_path();
  tmp_ = final_;
  tmp_ += ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  remove_tree(tmp_);
  if (final_.has_parent_path()) fs::create_directories(final_.parent_path(), ec);
  fs::create_directories(tmp_, ec);
  if (ec) fail_runtime("cannot create directory " + tmp_.string() + ": " + ec.message());
}

AtomicDir::~AtomicDir() {
  if (!committed_) {
    std::error_code ec;
    remove_tree(tmp_);
  }
}

void AtomicDir::commit() {
  for (const auto& entry : fs::directory_iterator(tmp_))
    if (entry.is_regular_file()) fsync_path(entry.path());
  fsync_path(tmp_);
  std::error_code ec;
  fs::path old = final_;
  old += ".old." + std::to_string(::getpid());
  bool had_old = fs::exists(final_, ec);
  if (had_old) {
    fs::rename(final_, old, ec);
    if (ec) fail_runtime("cannot move aside " + final_.string() + ": " + ec.message());
  }
  fs::rename(tmp_, final_, ec);
  if (ec)
    fail_runtime("cannot rename " + tmp_.string() + " to " + final_.string() + ": " + ec.message());
  committed_ = true;
  if (had_old) remove_tree(old);
  fsync_path(final_.has_parent_path() ? final_.parent_path() : fs::path("."));
}

DirLock::DirLock(const fs::path& dir, std::string_view what) {
  const fs::path path = dir / ".lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_input("cannot open " + path.string() + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    std::string holder = read_file(path, "lock file");
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(fd_);
    fd_ = -1;
    const auto sp = holder.find(' ');
    fail_input(std::string(what) + " " + dir.string() + " is in use by another deepthin process" +
               (sp == std::string::npos
                    ? std::string()
                    : " (pid " + holder.substr(0, sp) + " on host " + holder.substr(sp + 1) + ")") +
               "; wait for it to finish or stop it first");
  }
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const std::string me = std::to_string(::getpid()) + " " + host + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) < 0) {
    // The lock holds without the note; only the message to a second process is poorer.
  }
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

}  // namespace deepthin
