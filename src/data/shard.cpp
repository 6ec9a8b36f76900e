#include "data/shard.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <atomic>
#include <mutex>
#include <thread>

#include "util/error.h"
#include "util/fs.h"
#include "util/paths.h"

namespace deepthin::data {

void write_shard(const std::filesystem::path& path, const std::vector<uint32_t>& tokens,
                 int bytes_per_token) {
  std::string blob(kShardHeaderBytes + tokens.size() * bytes_per_token, '\0');
  std::memcpy(blob.data(), kShardMagic, 8);
  auto put = [&](size_t off, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) blob[off + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  };
  put(8, kShardVersion, 4);
  put(12, static_cast<uint64_t>(bytes_per_token), 4);
  put(16, tokens.size(), 8);
  char* p = blob.data() + kShardHeaderBytes;
  for (uint32_t t : tokens) {
    for (int i = 0; i < bytes_per_token; ++i) *p++ = static_cast<char>((t >> (8 * i)) & 0xFF);
  }
  write_file_atomic(path, blob);
}

namespace {
std::string shard_header(int bytes_per_token, uint64_t tokens) {
  std::string h(kShardHeaderBytes, '\0');
  std::memcpy(h.data(), kShardMagic, 8);
  auto put = [&](size_t off, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) h[off + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  };
  put(8, kShardVersion, 4);
  put(12, static_cast<uint64_t>(bytes_per_token), 4);
  put(16, tokens, 8);
  return h;
}

void write_all(int fd, const char* p, size_t n, off_t at, const std::filesystem::path& where) {
  while (n > 0) {
    const ssize_t w = at >= 0 ? ::pwrite(fd, p, n, at) : ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail_runtime("cannot write " + where.string() + ": " + std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
    if (at >= 0) at += w;
  }
}
}  // namespace

ShardFileWriter::ShardFileWriter(std::filesystem::path path, int bytes_per_token)
    : path_(std::move(path)), bytes_(bytes_per_token) {
  tmp_ = path_;
  tmp_ += ".tmp." + std::to_string(::getpid());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_runtime("cannot create " + tmp_.string() + ": " + std::strerror(errno));
  const std::string h = shard_header(bytes_, 0);  // the count is written by close()
  write_all(fd_, h.data(), h.size(), -1, tmp_);
  buf_.reserve(kBuffer);
}

ShardFileWriter::~ShardFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    std::error_code ec;
    std::filesystem::remove(tmp_, ec);
  }
}

void ShardFileWriter::drain() {
  bytes_buf_.resize(buf_.size() * static_cast<size_t>(bytes_));
  char* p = bytes_buf_.data();
  for (uint32_t t : buf_)
    for (int i = 0; i < bytes_; ++i) *p++ = static_cast<char>((t >> (8 * i)) & 0xFF);
  write_all(fd_, bytes_buf_.data(), bytes_buf_.size(), -1, tmp_);
  written_ += static_cast<int64_t>(buf_.size());
  buf_.clear();
}

void ShardFileWriter::close() {
  drain();
  const std::string h = shard_header(bytes_, static_cast<uint64_t>(written_));
  write_all(fd_, h.data(), h.size(), 0, tmp_);
  if (::fsync(fd_) != 0) fail_runtime("cannot fsync " + tmp_.string() + ": " + std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  std::filesystem::rename(tmp_, path_);
}

Shard::Shard(const std::filesystem::path& path) : path_(path) {
  try {
    open_and_validate();
  } catch (...) {
    release();  // a rejected shard keeps neither its descriptor nor its mapping
    throw;
  }
}

void Shard::open_and_validate() {
  const std::string where = path_.string();
  // Non-blocking: a FIFO named as a shard must not block the open; it is refused below.
  fd_ = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd_ < 0) fail_input("cannot open shard " + where + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode))
    fail_input(where + ": not a regular file (a shard is a .bin file)");
  map_bytes_ = static_cast<size_t>(st.st_size);
  if (map_bytes_ < 16)
    fail_input(where + ": too short to be a token shard (" + std::to_string(map_bytes_) +
               " bytes)");
  map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_SHARED, fd_, 0);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail_runtime("cannot map shard " + where + ": " + std::strerror(errno));
  }
  ::madvise(map_, map_bytes_, MADV_RANDOM);
  const uint8_t* b = static_cast<const uint8_t*>(map_);
  auto get = [&](size_t off, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(b[off + i]) << (8 * i);
    return v;
  };
  size_t header = 0;
  if (std::memcmp(b, kShardMagic, 8) == 0) {
    if (map_bytes_ < kShardHeaderBytes) fail_input(where + ": truncated shard header");
    uint64_t version = get(8, 4);
    if (version != kShardVersion)
      fail_input(where + ": shard version " + std::to_string(version) +
                 " is not supported (expected " + std::to_string(kShardVersion) + ")");
    bytes_ = static_cast<int>(get(12, 4));
    if (bytes_ != 2 && bytes_ != 4)
      fail_input(where + ": bad bytes-per-token " + std::to_string(bytes_) +
                 " in header (expected 2 or 4)");
    const uint64_t count = get(16, 8);
    if (count > (map_bytes_ - kShardHeaderBytes) / static_cast<uint64_t>(bytes_))
      fail_input(where + ": header promises " + std::to_string(count) +
                 " tokens but the file holds only " + std::to_string(map_bytes_) +
                 " bytes; the shard is truncated or corrupt");
    n_tokens_ = static_cast<int64_t>(count);
    header = kShardHeaderBytes;
  } else if (static_cast<int32_t>(get(0, 4)) == kLlmcMagic) {
    if (map_bytes_ < kLlmcHeaderBytes) fail_input(where + ": truncated llm.c shard header");
    uint64_t version = get(4, 4);
    if (version != 1)
      fail_input(where + ": llm.c shard version " + std::to_string(version) +
                 " is not supported (expected 1, uint16 tokens)");
    llmc_ = true;
    bytes_ = 2;
    n_tokens_ = static_cast<int64_t>(get(8, 4));
    header = kLlmcHeaderBytes;
  } else {
    fail_input(where + ": not a token shard (bad magic; expected a deepthin or llm.c .bin file)");
  }
  size_t expected = header + static_cast<size_t>(n_tokens_) * bytes_;
  if (map_bytes_ != expected)
    fail_input(where + ": header promises " + std::to_string(n_tokens_) + " tokens (" +
               std::to_string(expected) + " bytes) but the file has " + std::to_string(map_bytes_) +
               " bytes; the shard is " + (map_bytes_ < expected ? "truncated" : "corrupt"));
  tokens_ = b + header;
}

void Shard::release() {
  if (map_) ::munmap(map_, map_bytes_);
  if (fd_ >= 0) ::close(fd_);
  map_ = nullptr;
  fd_ = -1;
}

Shard::~Shard() {
  release();
}

uint32_t Shard::at(int64_t i) const {
  const uint8_t* p = tokens_ + i * bytes_;
  return bytes_ == 2
             ? static_cast<uint32_t>(p[0] | (p[1] << 8))
             : static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                   (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

void Shard::read(int64_t begin, int64_t n, int64_t* out) const {
  if (bytes_ == 2) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(tokens_) + begin;  // little-endian hosts
    for (int64_t i = 0; i < n; ++i) out[i] = p[i];
  } else {
    const uint32_t* p = reinterpret_cast<const uint32_t*>(tokens_) + begin;
    for (int64_t i = 0; i < n; ++i) out[i] = p[i];
  }
}

std::shared_ptr<TokenDataset> TokenDataset::open(const std::string& path,
                                                 const std::string& split) {
  auto ds = std::make_shared<TokenDataset>();
  std::error_code ec;
  std::vector<std::filesystem::path> files;
  if (std::filesystem::is_directory(path, ec)) {
    auto mpath = std::filesystem::path(path) / "manifest.json";
    if (!std::filesystem::exists(mpath, ec))
      fail_input(path +
                 ": no manifest.json; not a prepared dataset (an interrupted `deepthin data "
                 "prepare` leaves none; run it again)");
    ds->manifest_ = json::parse(read_file(mpath, "manifest"), mpath.string());
    const Json* splits = json::find(ds->manifest_, "splits");
    const Json* s = splits ? json::find(*splits, split) : nullptr;
    if (!s) fail_input(mpath.string() + ": the dataset has no '" + split + "' split");
    for (const auto& sh :
         json::as_array(json::at(*s, "shards", mpath.string()), mpath.string() + " shards")) {
      const std::string name = json::as_string(json::at(sh, "file", mpath.string()));
      // Shards live beside their manifest: a name with a separator or ".." would read elsewhere.
      check_path_component(name, mpath.string() + ": splits." + split + ".shards[].file");
      auto f = std::filesystem::path(path) / name;
      files.push_back(f);
    }
    ds->description_ = path + " [" + split + "]";
  } else if (path.find_first_of("*?[") != std::string::npos) {
    glob_t g{};
    if (::glob(path.c_str(), 0, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
    globfree(&g);
    if (files.empty()) fail_input("data path pattern matches no files: " + path);
    std::sort(files.begin(), files.end());
    ds->description_ = path;
  } else if (std::filesystem::is_regular_file(path, ec)) {
    files.emplace_back(path);
    ds->description_ = path;
  } else {
    fail_input("data path not found: " + path);
  }
  for (const auto& f : files) {
    ds->shards_.push_back(std::make_unique<Shard>(f));
    ds->total_tokens_ += ds->shards_.back()->size();
  }
  if (ds->total_tokens_ == 0) fail_input(ds->description_ + ": holds no tokens");
  // Token counts must agree with the manifest: a shard replaced by another run is caught here.
  if (!ds->manifest_.is_null()) {
    const auto& arr = json::as_array(*ds->manifest_.find("splits")->find(split)->find("shards"));
    for (size_t i = 0; i < arr.size(); ++i) {
      int64_t want = json::as_int(json::at(arr[i], "tokens", "manifest"));
      if (ds->shards_[i]->size() != want)
        fail_input(files[i].string() + ": holds " + std::to_string(ds->shards_[i]->size()) +
                   " tokens but the manifest says " + std::to_string(want));
    }
  }
  return ds;
}

int64_t TokenDataset::num_windows(int64_t seq_len) const {
  int64_t n = 0;
  for (const auto& s : shards_) n += std::max<int64_t>(0, (s->size() - 1) / seq_len);
  return n;
}

void TokenDataset::read_window(int64_t w, int64_t seq_len, int64_t* out) const {
  for (const auto& s : shards_) {
    int64_t n = std::max<int64_t>(0, (s->size() - 1) / seq_len);
    if (w < n) {
      s->read(w * seq_len, seq_len + 1, out);
      return;
    }
    w -= n;
  }
  fail_runtime("window index out of range");
}

TokenDataset::TokenScan TokenDataset::scan_tokens() const {
  // Chunks of every shard, scanned by all cores; each chunk keeps its maximum and where it is.
  struct Chunk {
    const Shard* shard;
    int64_t begin, end;
    uint32_t max = 0;
    int64_t at = -1;
  };
  std::vector<Chunk> chunks;
  const int64_t step = int64_t{1} << 24;
  for (const auto& s : shards_)
    for (int64_t b = 0; b < s->size(); b += step)
      chunks.push_back({s.get(), b, std::min(s->size(), b + step)});
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t c = next++; c < chunks.size(); c = next++) {
      Chunk& k = chunks[c];
      uint32_t mx = 0;
      for (int64_t i = k.begin; i < k.end; ++i) mx = std::max(mx, k.shard->at(i));
      for (int64_t i = k.begin; i < k.end && k.at < 0; ++i)
        if (k.shard->at(i) == mx) k.at = i;
      k.max = mx;
    }
  };
  const unsigned n = std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(),
                                                     static_cast<unsigned>(chunks.size())));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < n; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  TokenScan out;
  for (const auto& k : chunks)
    if (static_cast<int64_t>(k.max) > out.max_id) {
      out.max_id = k.max;
      out.shard = k.shard->path();
      out.position = k.at;
    }
  return out;
}

void TokenDataset::check_vocab(int64_t vocab_size, const std::string& what) const {
  const TokenScan s = scan_tokens();
  if (s.max_id >= vocab_size)
    fail_input(s.shard.string() + " holds token id " + std::to_string(s.max_id) + " (token " +
               std::to_string(s.position) + " of the shard), but " + what + " is " +
               std::to_string(vocab_size) + ": the data were prepared for a larger vocabulary (" +
               description_ + ")");
}

double TokenDataset::unigram_entropy() const {
  std::vector<int64_t> counts;
  for (const auto& s : shards_)
    for (int64_t i = 0; i < s->size(); ++i) {
      uint32_t t = s->at(i);
      if (t >= counts.size()) counts.resize(t + 1, 0);
      ++counts[t];
    }
  double h = 0, n = static_cast<double>(total_tokens_);
  for (int64_t c : counts)
    if (c > 0) h -= (c / n) * std::log(c / n);
  return h;
}

void TokenDataset::check_tokenizer(const std::string& tokenizer_sha256,
                                   const std::string& tokenizer_path) const {
  const Json* t = json::find(manifest_, "tokenizer");
  const Json* sha = t ? json::find(*t, "sha256") : nullptr;
  if (!sha || !sha->is_string()) return;
  if (json::as_string(*sha) != tokenizer_sha256)
    fail_input("tokenizer " + tokenizer_path + " does not match the dataset " + description_ +
               ": it was prepared with " + json::as_string(*t->find("path")) + " (sha256 " +
               json::as_string(*sha).substr(0, 12) + "…), this one has sha256 " +
               tokenizer_sha256.substr(0, 12) + "…");
}

}  // namespace deepthin::data
