// SentencePiece tokenizer: load any .model (LLaMA-2's tokenizer.model is the paper's), encode,
// decode, and train new ones through libsentencepiece's trainer with LLaMA's conventions.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace deepthin::data {

class Tokenizer {
 public:
  // Input error when the file is missing or not a SentencePiece model.
  static Tokenizer load(const std::filesystem::path& model_file);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  std::vector<int32_t> encode(std::string_view text) const;  // thread-safe

  // encode() through a cache of word encodings: text is cut before each run of spaces, each word is
  // encoded once and reused. Equal to encode() when no piece spans a space-delimited word boundary,
  // which holds for tokenizers trained with split_by_whitespace (LLaMA's and deepthin's);
  // data prepare verifies the equality on its first documents before relying on it.
  struct WordHash {
    using is_transparent = void;  // looked up by string_view, without a string per word
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  using WordCache =
      std::unordered_map<std::string, std::vector<int32_t>, WordHash, std::equal_to<>>;
  std::vector<int32_t> encode_cached(std::string_view text, WordCache& cache) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string piece(int32_t id) const;
  int64_t vocab_size() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t unk_id() const;
  // A piece's score (log-probability for unigram models, merge rank for BPE) and its kind.
  float score(int32_t id) const;
  enum class PieceType { normal, unknown, control, unused, byte };
  PieceType piece_type(int32_t id) const;
  // Whether encoding puts a "▁" before the text (SentencePiece's add_dummy_prefix), read off an
  // encoding of "a".
  bool adds_space_prefix() const;
  const std::filesystem::path& path() const { return path_; }
  const std::string& sha256() const { return sha256_; }

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::filesystem::path path_;
  std::string sha256_;
};

enum class TokenizerModel { bpe, unigram };

struct TokenizerTrainOptions {
  std::vector<std::string> inputs;  // files or globs: plain text, or JSONL with a text field
  std::string text_field = "text";  // for .jsonl inputs
  int64_t vocab_size = 32000;
  TokenizerModel model_type = TokenizerModel::bpe;
  int64_t max_sentences = 2000000;  // sampled from the input when there are more
  int threads = 2;
  std::filesystem::path out_dir;  // receives tokenizer.model and tokenizer.vocab
  bool force = false;             // replace a tokenizer.model / .vocab written there before
};

// Trains with byte fallback, digits split, identity normalisation, whitespace kept, and LLaMA's
// special ids: unk 0, bos 1, eos 2, no pad. Returns the path of the written .model. Existing files
// are replaced only with `force`, and only when they are a SentencePiece model and vocabulary; the
// new files appear together, renamed into place once training succeeded.
std::filesystem::path train_tokenizer(const TokenizerTrainOptions& opts);

// Expands files and glob patterns: each pattern's matches sorted, patterns in the given order.
// Input error for a pattern that matches nothing.
std::vector<std::filesystem::path> expand_inputs(const std::vector<std::string>& patterns);

}  // namespace deepthin::data
