// File helpers: whole-file reads, crash-safe writes, directory locks and SHA-256 checksums
// (OpenSSL's libcrypto).
//
// Anything deepthin writes that another run will read (weights, configs, manifests, checkpoints)
// goes through write_file_atomic or AtomicDir: the data lands under a temporary name, is fsynced,
// and only then renamed into place, so a crash never leaves a file that looks complete but is not.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace deepthin {

namespace fs = std::filesystem;

// The whole file; an input error naming the path when it cannot be read, or when it is larger than
// max_bytes (default: half the machine's memory), checked before anything is allocated.
std::string read_file(const fs::path& path, std::string_view what = "file", uint64_t max_bytes = 0);
// Writes `data` to path.tmp.<pid>, fsyncs it, renames it over `path`, and fsyncs the directory.
void write_file_atomic(const fs::path& path, std::string_view data);
// The same for data in several pieces, written in order straight from where they lie (no copy
// into one buffer); with sha256 the pieces are hashed as they are written, and the file's SHA-256
// (as sha256_file would give it) is returned, else "".
std::string write_file_atomic(const fs::path& path, const std::vector<std::string_view>& parts,
                              bool sha256);
void fsync_path(const fs::path& path);

// SHA-256 as 64 lowercase hex digits, through OpenSSL's EVP interface. sha256_file streams the file
// (an input error naming it when it is missing, not a regular file, or unreadable).
std::string sha256_hex(std::string_view data);
std::string sha256_file(const fs::path& path);
// Deletes a file or a directory tree; no error if it does not exist. Used instead of
// std::filesystem::remove_all, whose copy exported by some LibTorch builds (the CUDA 13 wheel)
// crashes when it binds ahead of libstdc++'s.
void remove_tree(const fs::path& path);

// A directory built under a temporary sibling name and renamed into place by commit(). If commit()
// is never reached (an exception, a crash), the destructor removes the temporary directory; a
// directory already at the destination is replaced only at commit time.
class AtomicDir {
 public:
  explicit AtomicDir(fs::path final_path);
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  const fs::path& path() const { return tmp_; }  // write files here
  const fs::path& final_path() const { return final_; }
  void commit();

 private:
  fs::path final_;
  fs::path tmp_;
  bool committed_ = false;
};

// An exclusive lock on a directory (flock on <dir>/.lock, which holds "pid host" of the holder),
// held until destruction or the process's death. Input error naming the holder when another process
// has it.
class DirLock {
 public:
  DirLock(const fs::path& dir, std::string_view what);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace deepthin
