// Token shards on disk, and the datasets the loader reads.
//
// deepthin shard (.bin): a 64-byte header — magic "DTSHARD\0", u32 version (1), u32 bytes per token
// (2 = uint16, 4 = uint32), u64 token count, zero padding — then the tokens, little-endian.
// llm.c / nanoGPT shard (.bin): 256 int32 header (magic 20240520, version 1, token count), then
// uint16 tokens; read as is, no conversion. A prepared directory holds shards plus manifest.json
// (splits, counts, tokenizer checksum, sources).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "util/json_io.h"

namespace deepthin::data {

inline constexpr char kShardMagic[8] = {'D', 'T', 'S', 'H', 'A', 'R', 'D', '\0'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 64;
inline constexpr int32_t kLlmcMagic = 20240520;
inline constexpr size_t kLlmcHeaderBytes = 256 * 4;

// Writes a deepthin shard atomically (temporary name, fsync, rename).
// A shard written as its tokens arrive: a temporary file next to `path` takes them through a small
// buffer; close() writes the header's count, fsyncs and renames it into place. Memory stays at the
// buffer whatever the shard's size. Destroyed without close() (an error), it removes its file.
class ShardFileWriter {
 public:
  ShardFileWriter(std::filesystem::path path, int bytes_per_token);
  ~ShardFileWriter();
  ShardFileWriter(const ShardFileWriter&) = delete;
  ShardFileWriter& operator=(const ShardFileWriter&) = delete;
  void append(uint32_t token) {
    buf_.push_back(token);
    if (buf_.size() >= kBuffer) drain();
  }
  int64_t tokens() const { return written_ + static_cast<int64_t>(buf_.size()); }
  void close();

 private:
  static constexpr size_t kBuffer = size_t{1} << 20;
  void drain();
  std::filesystem::path path_, tmp_;
  int bytes_;
  int fd_ = -1;
  std::vector<uint32_t> buf_;
  std::string bytes_buf_;
  int64_t written_ = 0;
};

void write_shard(const std::filesystem::path& path, const std::vector<uint32_t>& tokens,
                 int bytes_per_token);

// A read-only memory map of one shard (either format), validated on open.
class Shard {
 public:
  explicit Shard(const std::filesystem::path& path);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  int64_t size() const { return n_tokens_; }
  int bytes_per_token() const { return bytes_; }
  uint32_t at(int64_t i) const;
  // Copies tokens [begin, begin + n) as int64 into out.
  void read(int64_t begin, int64_t n, int64_t* out) const;
  const std::filesystem::path& path() const { return path_; }
  bool is_llmc() const { return llmc_; }

 private:
  void open_and_validate();
  void release();
  std::filesystem::path path_;
  int fd_ = -1;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint8_t* tokens_ = nullptr;
  int64_t n_tokens_ = 0;
  int bytes_ = 2;
  bool llmc_ = false;
};

// The tokens of one split: a list of shards, cut into windows of seq_len + 1 tokens (consecutive
// windows overlap by the one token that is both a target and the next input). Windows never cross a
// shard boundary.
class TokenDataset {
 public:
  // `path`: a prepared directory (its manifest picks the split), a glob of shard files (either
  // format), or one shard file. `split` is "train" or "val".
  static std::shared_ptr<TokenDataset> open(const std::string& path, const std::string& split);

  int64_t num_windows(int64_t seq_len) const;
  // Window w's seq_len + 1 tokens, as int64, into out.
  void read_window(int64_t w, int64_t seq_len, int64_t* out) const;
  int64_t total_tokens() const { return total_tokens_; }
  // The largest token id the shards really hold (read, in parallel, not taken from the
  // manifest's claim), with the shard and position where it first occurs.
  struct TokenScan {
    int64_t max_id = -1;
    std::filesystem::path shard;
    int64_t position = -1;
  };
  TokenScan scan_tokens() const;
  int64_t max_token_id() const { return scan_tokens().max_id; }
  // Input error naming the shard, the id and the vocabulary when an id is >= vocab_size; `what`
  // names the consumer ("model.vocab_size", "the model in DIR").
  void check_vocab(int64_t vocab_size, const std::string& what) const;
  // Entropy of the split's own token distribution, in nats per token: the loss of the best unigram
  // model of this data, the baseline a trained model must beat.
  double unigram_entropy() const;
  const Json& manifest() const { return manifest_; }  // null for bare shard files
  const std::vector<std::unique_ptr<Shard>>& shards() const { return shards_; }
  // Input error when `tokenizer_sha256` differs from the manifest's (no-op without a manifest).
  void check_tokenizer(const std::string& tokenizer_sha256,
                       const std::string& tokenizer_path) const;
  const std::string& description() const { return description_; }

 private:
  std::vector<std::unique_ptr<Shard>> shards_;
  Json manifest_;
  int64_t total_tokens_ = 0;
  std::string description_;
};

}  // namespace deepthin::data
