#include "data/tokenizer.h"

#include <glob.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <unistd.h>

#include <fstream>

#include "util/error.h"
#include "util/fs.h"
#include "util/json_io.h"
#include "util/log.h"
#include "util/paths.h"

namespace deepthin::data {

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::filesystem::path& model_file) {
  std::error_code ec;
  std::filesystem::path file = model_file;
  if (std::filesystem::is_directory(file, ec)) file /= "tokenizer.model";
  if (!std::filesystem::is_regular_file(file, ec))
    fail_input("tokenizer not found: " + file.string());
  Tokenizer t;
  auto status = t.impl_->sp.Load(file.string());
  if (!status.ok())
    fail_input(file.string() + ": not a SentencePiece model (" + status.ToString() + ")");
  t.path_ = file;
  t.sha256_ = sha256_file(file);
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  auto status = impl_->sp.Encode(text, &ids);
  if (!status.ok()) fail_runtime("tokenizer encode failed: " + status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::vector<int32_t> Tokenizer::encode_cached(std::string_view text, WordCache& cache) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3);
  size_t start = 0;
  while (start < text.size()) {
    // The word runs to the next space that follows a non-space character.
    size_t end = start;
    while (end < text.size() && text[end] == ' ') ++end;
    while (end < text.size() && text[end] != ' ') ++end;
    // Every word after the first begins with a space; the tokenizer's dummy prefix stands for one.
    std::string_view word = text.substr(start, end - start);
    if (start > 0) word.remove_prefix(1);
    if (word.empty()) {
      // A lone trailing space: encode("") is empty, so emit the "▁" piece itself (or give up on the
      // cache for this text if the vocabulary lacks it).
      const int id = impl_->sp.PieceToId("\xE2\x96\x81");
      if (id == impl_->sp.unk_id()) return encode(text);
      out.push_back(id);
      start = end;
      continue;
    }
    auto it = cache.find(word);
    if (it == cache.end()) {
      if (cache.size() > 2'000'000) cache.clear();  // bound the memory on pathological input
      it = cache.emplace(std::string(word), encode(word)).first;
    }
    out.insert(out.end(), it->second.begin(), it->second.end());
    start = end;
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<int> v(ids.begin(), ids.end());
  for (int id : v)
    if (id < 0 || id >= impl_->sp.GetPieceSize())
      fail_input("token id " + std::to_string(id) + " is outside the tokenizer's vocabulary [0, " +
                 std::to_string(impl_->sp.GetPieceSize()) + ")");
  std::string out;
  auto status = impl_->sp.Decode(v, &out);
  if (!status.ok()) fail_runtime("tokenizer decode failed: " + status.ToString());
  return out;
}

std::string Tokenizer::piece(int32_t id) const {
  return impl_->sp.IdToPiece(id);
}
int32_t Tokenizer::unk_id() const {
  return impl_->sp.unk_id();
}
float Tokenizer::score(int32_t id) const {
  return impl_->sp.GetScore(id);
}
Tokenizer::PieceType Tokenizer::piece_type(int32_t id) const {
  if (impl_->sp.IsUnknown(id)) return PieceType::unknown;
  if (impl_->sp.IsControl(id)) return PieceType::control;
  if (impl_->sp.IsUnused(id)) return PieceType::unused;
  if (impl_->sp.IsByte(id)) return PieceType::byte;
  return PieceType::normal;
}
bool Tokenizer::adds_space_prefix() const {
  std::vector<std::string> pieces;
  if (!impl_->sp.Encode("a", &pieces).ok() || pieces.empty()) return false;
  return pieces.front().rfind("\xE2\x96\x81", 0) == 0;
}
int64_t Tokenizer::vocab_size() const {
  return impl_->sp.GetPieceSize();
}
int32_t Tokenizer::bos_id() const {
  return impl_->sp.bos_id();
}
int32_t Tokenizer::eos_id() const {
  return impl_->sp.eos_id();
}

std::vector<std::filesystem::path> expand_inputs(const std::vector<std::string>& patterns) {
  std::vector<std::filesystem::path> out;
  for (const auto& p : patterns) {
    if (p.find_first_of("*?[") == std::string::npos) {
      std::error_code ec;
      if (!std::filesystem::is_regular_file(p, ec)) fail_input("input not found: " + p);
      out.emplace_back(p);
      continue;
    }
    glob_t g{};
    int rc = ::glob(p.c_str(), 0, nullptr, &g);
    if (rc != 0 || g.gl_pathc == 0) {
      globfree(&g);
      fail_input("input pattern matches no files: " + p);
    }
    std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + g.gl_pathc);
    globfree(&g);
    std::sort(matches.begin(), matches.end());
    for (auto& m : matches) out.emplace_back(m);
  }
  if (out.empty()) fail_input("no input files given");
  return out;
}

namespace {

// Feeds the trainer one sentence at a time from text and JSONL files: lines, with long lines cut at
// whitespace so that none is dropped for exceeding the trainer's sentence length.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  LineIterator(std::vector<std::filesystem::path> files, std::string field)
      : files_(std::move(files)), field_(std::move(field)) {
    advance();
  }
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  static constexpr size_t kMaxLen = 4000;

  bool refill() {
    std::string line;
    while (true) {
      if (!in_.is_open() || !std::getline(in_, line)) {
        if (in_.is_open()) in_.close();
        if (next_file_ >= files_.size()) return false;
        const auto& f = files_[next_file_++];
        in_.open(f);
        if (!in_) fail_input("cannot read " + f.string());
        jsonl_ = f.extension() == ".jsonl" || f.extension() == ".json";
        lineno_ = 0;
        continue;
      }
      ++lineno_;
      if (jsonl_) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        Json j = json::parse(line, files_[next_file_ - 1].string() + ":" + std::to_string(lineno_));
        const Json* t = json::find(j, field_);
        if (!t || !t->is_string()) continue;
        pending_ = json::as_string(*t);
      } else {
        pending_ = line;
      }
      return true;
    }
  }

  void advance() {
    while (true) {
      // Next line of the pending text.
      while (pos_ < pending_.size()) {
        size_t nl = pending_.find('\n', pos_);
        size_t end = nl == std::string::npos ? pending_.size() : nl;
        if (end - pos_ > kMaxLen) {
          size_t cut = pending_.rfind(' ', pos_ + kMaxLen);
          end = cut == std::string::npos || cut <= pos_ ? pos_ + kMaxLen : cut;
        }
        value_ = pending_.substr(pos_, end - pos_);
        pos_ = end +
               (end < pending_.size() && (pending_[end] == '\n' || pending_[end] == ' ') ? 1 : 0);
        if (!value_.empty()) return;
      }
      pending_.clear();
      pos_ = 0;
      if (!refill()) {
        done_ = true;
        return;
      }
    }
  }

  std::vector<std::filesystem::path> files_;
  std::string field_;
  size_t next_file_ = 0;
  std::ifstream in_;
  bool jsonl_ = false;
  int64_t lineno_ = 0;
  std::string pending_;
  size_t pos_ = 0;
  std::string value_;
  bool done_ = false;
};

}  // namespace

std::filesystem::path train_tokenizer(const TokenizerTrainOptions& opts) {
  if (opts.vocab_size < 259)
    fail_input(
        "tokenizer vocab size must be at least 259 (3 specials + 256 byte-fallback pieces), got " +
        std::to_string(opts.vocab_size));
  auto files = expand_inputs(opts.inputs);
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(opts.out_dir, ec);
  if (!fs::is_directory(opts.out_dir, ec))
    fail_input("deepthin tokenizer train: --out " + opts.out_dir.string() +
               " is not a directory and cannot be created");
  const fs::path model_file = opts.out_dir / "tokenizer.model";
  const fs::path vocab_file = opts.out_dir / "tokenizer.vocab";
  OutputRules rules{"deepthin tokenizer train", "--out", opts.force, {}};
  for (const auto& f : files) rules.inputs.push_back(f);
  check_output(model_file,
               OutputKind{"a SentencePiece model",
                          false,
                          {},
                          "",
                          [](const fs::path& p) {
                            sentencepiece::SentencePieceProcessor sp;
                            return sp.Load(p.string()).ok();
                          }},
               rules);
  check_output(vocab_file,
               OutputKind{"a SentencePiece vocabulary",
                          false,
                          {},
                          "",
                          [](const fs::path& p) {
                            // "piece<TAB>score" lines, as the trainer writes them.
                            const std::string head = read_prefix(p, 4096);
                            const auto nl = head.find('\n');
                            return !head.empty() && head.find('\t') < nl;
                          }},
               rules);
  // The trainer writes under a temporary prefix; the files are renamed into place at the end.
  const auto prefix = (opts.out_dir / (".tokenizer.tmp." + std::to_string(::getpid()))).string();
  struct Cleanup {
    std::string prefix;
    ~Cleanup() {
      ::unlink((prefix + ".model").c_str());
      ::unlink((prefix + ".vocab").c_str());
    }
  } cleanup{prefix};
  std::string args =
      "--model_prefix=" + prefix + " --vocab_size=" + std::to_string(opts.vocab_size) +
      " --model_type=" + (opts.model_type == TokenizerModel::bpe ? "bpe" : "unigram") +
      " --byte_fallback=true --split_digits=true --unk_id=0 --bos_id=1 --eos_id=2"
      " --pad_id=-1 --normalization_rule_name=identity --remove_extra_whitespaces=false"
      " --allow_whitespace_only_pieces=true --character_coverage=0.9995"
      " --max_sentence_length=4192 --shuffle_input_sentence=true"
      " --input_sentence_size=" +
      std::to_string(opts.max_sentences) + " --num_threads=" + std::to_string(opts.threads) +
      " --minloglevel=1 --hard_vocab_limit=false";
  LineIterator it(files, opts.text_field);
  if (it.done()) fail_input("tokenizer training input holds no text");
  log::info("training a {} tokenizer of {} pieces on {} file(s)",
            opts.model_type == TokenizerModel::bpe ? "BPE" : "unigram", opts.vocab_size,
            files.size());
  auto status = sentencepiece::SentencePieceTrainer::Train(args, &it);
  if (!status.ok()) fail_runtime("tokenizer training failed: " + status.ToString());
  auto trained = Tokenizer::load(prefix + ".model");
  if (trained.vocab_size() != opts.vocab_size)
    log::warn("the input supports only {} pieces; the tokenizer has {} instead of the {} asked for",
              trained.vocab_size(), trained.vocab_size(), opts.vocab_size);
  fsync_path(prefix + ".model");
  fsync_path(prefix + ".vocab");
  fs::rename(prefix + ".vocab", vocab_file, ec);
  if (!ec) fs::rename(prefix + ".model", model_file, ec);
  if (ec)
    fail_runtime("cannot move the trained tokenizer into " + opts.out_dir.string() + ": " +
                 ec.message());
  fsync_path(opts.out_dir);
  return model_file;
}

}  // namespace deepthin::data
