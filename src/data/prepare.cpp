#include "data/prepare.h"

#include "data/input.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "data/shard.h"
#include "data/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json_io.h"
#include "util/log.h"
#include "util/paths.h"
#include "util/strings.h"

namespace deepthin::data {

InputFormat parse_input_format(const std::string& s) {
  if (s == "text") return InputFormat::text;
  if (s == "jsonl") return InputFormat::jsonl;
  if (s == "jsonl-tokens") return InputFormat::jsonl_tokens;
  if (s == "parquet") return InputFormat::parquet;
  if (s == "auto") return InputFormat::auto_;
  fail_input("unknown input format '" + s +
             "'; expected auto | text | jsonl | jsonl-tokens | parquet");
}

namespace {

uint64_t fnv1a(const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

struct Document {
  std::string text;             // text formats
  std::vector<int32_t> tokens;  // filled by tokenisation, or read directly (jsonl-tokens)
};

// Accumulates one split's tokens and writes a shard whenever shard_tokens are reached.
class SplitWriter {
 public:
  SplitWriter(std::filesystem::path dir, std::string split, int64_t shard_tokens, int bytes)
      : dir_(std::move(dir)),
        split_(std::move(split)),
        shard_tokens_(shard_tokens),
        bytes_(bytes) {}

  void add(const std::vector<int32_t>& doc, bool frame, int32_t bos, int32_t eos) {
    ++documents_;
    ++docs_in_shard_;
    if (frame) push(static_cast<uint32_t>(bos));
    for (int32_t t : doc) push(static_cast<uint32_t>(t));
    if (frame) push(static_cast<uint32_t>(eos));
  }

  void finish() {
    if (file_ && file_->tokens() > 0) flush();
  }

  Json manifest() const {
    Json j = Json::object();
    j["tokens"] = total_;
    j["documents"] = documents_;
    j["shards"] = Json(shards_);
    return j;
  }
  int64_t tokens() const { return total_; }
  int64_t documents() const { return documents_; }
  int shards() const { return static_cast<int>(shards_.size()); }

 private:
  // Tokens go straight to the shard's file (through a 1M-token buffer), never a whole shard in
  // memory.
  void push(uint32_t t) {
    if (!file_) file_ = std::make_unique<ShardFileWriter>(dir_ / shard_name(), bytes_);
    file_->append(t);
    if (file_->tokens() >= shard_tokens_) flush();
  }
  std::string shard_name() const {
    char name[64];
    std::snprintf(name, sizeof name, "%s_%06zu.bin", split_.c_str(), shards_.size());
    return name;
  }
  void flush() {
    const int64_t n = file_->tokens();
    file_->close();
    file_.reset();
    Json s = Json::object();
    s["file"] = shard_name();
    s["tokens"] = n;
    s["documents_started"] = docs_in_shard_;
    shards_.push_back(std::move(s));
    total_ += n;
    docs_in_shard_ = 0;
  }

  std::filesystem::path dir_;
  std::string split_;
  int64_t shard_tokens_;
  int bytes_;
  std::unique_ptr<ShardFileWriter> file_;
  Json shards_ = Json::array();
  int64_t total_ = 0, documents_ = 0, docs_in_shard_ = 0;
};

}  // namespace

namespace {

// A queue of at most `cap` items between two threads. abort() wakes and fails both sides.
template <class T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t cap) : cap_(cap) {}
  bool push(T v) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return aborted_ || q_.size() < cap_; });
    if (aborted_) return false;
    q_.push_back(std::move(v));
    cv_.notify_all();
    return true;
  }
  // False once closed and drained, or aborted.
  bool pop(T& v) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return aborted_ || closed_ || !q_.empty(); });
    if (aborted_ || q_.empty()) return false;
    v = std::move(q_.front());
    q_.pop_front();
    cv_.notify_all();
    return true;
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }
  void abort() {
    std::lock_guard<std::mutex> lock(mu_);
    aborted_ = true;
    cv_.notify_all();
  }

 private:
  size_t cap_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> q_;
  bool closed_ = false, aborted_ = false;
};

// Read → tokenise → write, overlapped. The caller's thread reads and batches documents (about 4 MB
// or 4,096 documents a batch); a tokenising thread encodes each batch on `threads` workers, which
// take documents one at a time (sizes vary a lot) and keep their own word caches; a writing thread
// hands the batches, in order, to `write`. Each queue holds two batches, so memory stays bounded.
// Without a tokenizer (pre-tokenised input) batches go straight to the writer.
class Pipeline {
 public:
  using Batch = std::vector<Document>;
  Pipeline(const Tokenizer* tok, int threads, std::function<void(Batch&)> write)
      : tok_(tok),
        threads_(threads),
        write_(std::move(write)),
        caches_(static_cast<size_t>(threads)) {
    tokenizer_ = std::thread([this] { stage([this] { tokenize_loop(); }); });
    writer_ = std::thread([this] { stage([this] { write_loop(); }); });
  }
  ~Pipeline() {
    if (tokenizer_.joinable()) {
      to_tokenize_.abort();
      to_write_.abort();
      join();
    }
  }
  void add(Document d, size_t raw_bytes) {
    batch_bytes_ += raw_bytes;
    batch_.push_back(std::move(d));
    if (batch_bytes_ >= (4u << 20) || batch_.size() >= 4096) send();
  }
  // Sends the last batch, waits for every stage, and rethrows the first error of any.
  void finish() {
    if (!batch_.empty()) send();
    to_tokenize_.close();
    join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void send() {
    if (!to_tokenize_.push(std::move(batch_))) {
      finish();  // a stage failed: its error is rethrown here
      fail_runtime("internal: the prepare pipeline stopped without an error");
    }
    batch_ = {};
    batch_bytes_ = 0;
  }
  void join() {
    tokenizer_.join();
    writer_.join();
  }
  template <class F>
  void stage(F&& f) {
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu_);
      if (!error_) error_ = std::current_exception();
      to_tokenize_.abort();
      to_write_.abort();
    }
  }
  void tokenize_loop() {
    Batch b;
    while (to_tokenize_.pop(b)) {
      if (tok_) encode(b);
      if (!to_write_.push(std::move(b))) return;
      b = {};
    }
    to_write_.close();
  }
  void write_loop() {
    Batch b;
    while (to_write_.pop(b)) write_(b);
  }
  void encode(Batch& batch) {
    const size_t n = batch.size();
    const int t = static_cast<int>(std::min<size_t>(threads_, std::max<size_t>(1, n)));
    std::atomic<size_t> next{0};
    std::vector<std::exception_ptr> errors(t);
    auto work = [&](int k) {
      try {
        for (size_t i = next++; i < n; i = next++)
          batch[i].tokens = use_cache_ ? tok_->encode_cached(batch[i].text, caches_[k])
                                       : tok_->encode(batch[i].text);
      } catch (...) {
        errors[k] = std::current_exception();
      }
    };
    std::vector<std::thread> pool;
    for (int k = 1; k < t; ++k) pool.emplace_back(work, k);
    work(0);
    for (auto& th : pool) th.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
    // The cached path must reproduce the plain one: the first documents are checked, and a
    // difference turns the cache off.
    for (size_t i = 0; use_cache_ && i < n && verified_ < 64; ++i, ++verified_) {
      if (tok_->encode(batch[i].text) != batch[i].tokens) {
        log::warn("{}: word-cached encoding differs from plain encoding; using plain encoding",
                  tok_->path().string());
        use_cache_ = false;
        for (auto& d : batch) d.tokens = tok_->encode(d.text);
      }
    }
  }

  const Tokenizer* tok_;
  int threads_;
  std::function<void(Batch&)> write_;
  std::vector<Tokenizer::WordCache> caches_;
  bool use_cache_ = true;
  int verified_ = 0;
  Batch batch_;
  size_t batch_bytes_ = 0;
  BoundedQueue<Batch> to_tokenize_{2}, to_write_{2};
  std::mutex error_mu_;
  std::exception_ptr error_;
  std::thread tokenizer_, writer_;
};

// The format a file is read in: --format, or (auto) what its name says.
InputFormat format_of(InputFormat requested, FileKind kind) {
  if (requested != InputFormat::auto_) return requested;
  if (kind == FileKind::parquet) return InputFormat::parquet;
  if (kind == FileKind::text) return InputFormat::text;
  return InputFormat::jsonl;
}

// One JSONL line into a document. False for a line that holds none (blank, an empty text, or a
// malformed line skipped under --on-bad-line skip, which is counted).
bool parse_line(const std::string& line, const std::string& where, InputFormat fmt,
                const PrepareOptions& opts, int64_t vocab, Document& d, int64_t& skipped) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) return false;
  try {
    Json j = json::parse(line, where);
    if (fmt != InputFormat::jsonl_tokens) {
      const Json* t = json::find(j, opts.text_field);
      if (!t) fail_input(where + ": no \"" + opts.text_field + "\" field (set --text-field)");
      d.text = json::as_string(*t, where + ": field \"" + opts.text_field + "\"");
      return !d.text.empty();
    }
    const Json* ids = json::find(j, "token_ids");
    if (!ids) fail_input(where + ": no \"token_ids\" field");
    for (const auto& v : json::as_array(*ids, where + ": token_ids")) {
      int64_t id = json::as_int(v, where + ": token_ids");
      if (id < 0 || id >= vocab)
        fail_input(where + ": token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                   std::to_string(vocab) + ")");
      d.tokens.push_back(static_cast<int32_t>(id));
    }
    return !d.tokens.empty();
  } catch (const Error& e) {
    if (!opts.skip_bad_lines || e.kind() != ErrorKind::input) throw;
    ++skipped;
    return false;
  }
}

using Clock = std::chrono::steady_clock;
using Progress = std::function<void(const PrepareProgress&)>;

// The numeric options, checked before anything is read.
void check_options(const PrepareOptions& opts) {
  if (opts.val_fraction < 0 || opts.val_fraction >= 1)
    fail_input("--val-fraction must be in [0, 1), got " + std::to_string(opts.val_fraction));
  if (opts.threads < 1) fail_input("--threads must be >= 1");
  if (opts.shard_tokens < 1024) fail_input("--shard-tokens must be >= 1024");
}

// The tokenizer (none for pre-tokenised input without one) and the vocabulary size that token ids
// are checked against.
struct Vocabulary {
  std::optional<Tokenizer> tok;
  int64_t size = 0;
};

Vocabulary load_vocabulary(const PrepareOptions& opts) {
  Vocabulary v;
  v.size = opts.vocab_size;
  if (!opts.tokenizer.empty()) {
    v.tok = Tokenizer::load(opts.tokenizer);
    if (v.size > 0 && v.size != v.tok->vocab_size())
      fail_input("--vocab-size " + std::to_string(v.size) + " disagrees with the tokenizer's " +
                 std::to_string(v.tok->vocab_size()));
    v.size = v.tok->vocab_size();
  } else if (opts.format != InputFormat::jsonl_tokens) {
    fail_input("--tokenizer is required to prepare text or jsonl input");
  } else if (v.size <= 0) {
    fail_input("jsonl-tokens input needs --tokenizer or --vocab-size to check token ids");
  }
  return v;
}

// --out may replace only an earlier prepared dataset, never an input or the tokenizer.
void check_out(const PrepareOptions& opts, const std::vector<std::filesystem::path>& files) {
  OutputRules rules{"deepthin data prepare", "--out", opts.force, {}};
  for (const auto& f : files) rules.inputs.push_back(f);
  if (!opts.tokenizer.empty()) rules.inputs.push_back(opts.tokenizer);
  check_output(opts.out, dataset_output(), rules);
}

// How tokens are stored: their width, and whether text documents are framed by BOS and EOS.
struct Framing {
  int bytes = 2;
  bool frame = false;
  int32_t bos = 1, eos = 2;
};

Framing framing(const PrepareOptions& opts, const Vocabulary& v) {
  Framing f;
  f.bytes = v.size <= 65536 ? 2 : 4;
  f.frame = opts.format != InputFormat::jsonl_tokens;
  f.bos = v.tok ? v.tok->bos_id() : 1;
  f.eos = v.tok ? v.tok->eos_id() : 2;
  if (f.frame && (f.bos < 0 || f.eos < 0))
    fail_input(v.tok->path().string() +
               ": the tokenizer defines no BOS or EOS id; documents cannot be framed");
  return f;
}

// The dataset being written (a temporary directory until it is complete) and the counts the
// progress reports.
struct PrepareState {
  PrepareState(const PrepareOptions& o, const Progress& p, Clock::time_point t, Framing f)
      : opts(o),
        progress(p),
        start(t),
        fr(f),
        out(o.out),
        train(out.path(), "train", o.shard_tokens, f.bytes),
        val(out.path(), "val", o.shard_tokens, f.bytes) {}

  const PrepareOptions& opts;
  const Progress& progress;
  const Clock::time_point start;
  const Framing fr;
  AtomicDir out;
  SplitWriter train, val;
  PrepareResult result;
  PrepareProgress prog;
  int64_t max_id = 0;
  Clock::time_point last_report;
  std::atomic<int64_t> bytes_read{0};  // the reader's position; the writer reports it
};

// The writing stage: each batch in order, documents to their split by a hash of their content.
void write_batch(PrepareState& st, std::vector<Document>& batch) {
  const bool frame = st.fr.frame;
  for (auto& d : batch) {
    uint64_t h = frame ? fnv1a(d.text.data(), d.text.size())
                       : fnv1a(d.tokens.data(), d.tokens.size() * sizeof(int32_t));
    bool is_val = static_cast<double>(h % 1000000) < st.opts.val_fraction * 1e6;
    for (int32_t id : d.tokens) st.max_id = std::max<int64_t>(st.max_id, id);
    (is_val ? st.val : st.train).add(d.tokens, frame, st.fr.bos, st.fr.eos);
    st.prog.tokens += static_cast<int64_t>(d.tokens.size()) + (frame ? 2 : 0);
    ++st.prog.documents;
  }
  st.prog.bytes_read = st.bytes_read.load();
  st.prog.seconds = std::chrono::duration<double>(Clock::now() - st.start).count();
  if (st.progress && Clock::now() - st.last_report > std::chrono::milliseconds(500)) {
    st.progress(st.prog);
    st.last_report = Clock::now();
  }
}

// Reads one input file into the pipeline: a whole text file is one document, a parquet file's
// rows and a JSONL file's lines one each. Returns the file's entry of the manifest's sources.
Json read_input(PrepareState& st, Pipeline& pipeline, const std::filesystem::path& f,
                int64_t vocab) {
  const PrepareOptions& opts = st.opts;
  auto add_doc = [&](Document d, size_t raw_bytes) { pipeline.add(std::move(d), raw_bytes); };
  const int64_t fsize = static_cast<int64_t>(std::filesystem::file_size(f));
  const FileKind kind = kind_from_name(f);
  const InputFormat fmt = format_of(opts.format, kind);
  Json src = Json::object();
  src["path"] = f.string();
  src["bytes"] = fsize;
  src["read_as"] = fmt == InputFormat::parquet ? std::string("parquet column ") + opts.text_field
                                               : std::string(kind_name(kind));
  const int64_t before = st.bytes_read.load();
  auto file_progress = [&](int64_t bytes) { st.bytes_read = before + bytes; };
  if (fmt == InputFormat::text) {
    std::string text = read_file(f, "input");
    if (!text.empty()) add_doc(Document{std::move(text), {}}, static_cast<size_t>(fsize));
  } else if (fmt == InputFormat::parquet) {
    read_parquet_column(
        f, opts.text_field,
        [&](const ParquetRow& row) {
          if (row.is_null) {
            if (!opts.skip_bad_lines)
              fail_input(f.string() + ": row " + std::to_string(row.row) + ": column '" +
                         opts.text_field + "' is null (--on-bad-line skip skips such rows)");
            ++st.result.skipped_lines;
          } else if (!row.text.empty()) {
            add_doc(Document{std::string(row.text), {}}, row.text.size());
          }
        },
        file_progress);
  } else {
    LineReader lines(f, kind);
    std::string line;
    int64_t lineno = 0;
    while (lines.next(line)) {
      ++lineno;
      file_progress(lines.file_bytes_read());
      Document d;
      if (!parse_line(line, f.string() + ":" + std::to_string(lineno), fmt, opts, vocab, d,
                      st.result.skipped_lines))
        continue;
      add_doc(std::move(d), line.size());
    }
  }
  st.bytes_read = before + fsize;
  return src;
}

// manifest.json: the shard format, the vocabulary and framing, the sources and the splits.
void write_manifest(const PrepareState& st, const Vocabulary& v, Json sources) {
  const PrepareOptions& opts = st.opts;
  const auto& tok = v.tok;
  Json m = Json::object();
  m["format"] = "deepthin-shards";
  m["version"] = 1;
  m["dtype"] = st.fr.bytes == 2 ? "uint16" : "uint32";
  m["vocab_size"] = v.size;
  m["max_token_id"] = st.max_id;
  m["bos_id"] = st.fr.frame ? st.fr.bos : -1;
  m["eos_id"] = st.fr.frame ? st.fr.eos : -1;
  static const char* kFormats[] = {"text", "jsonl", "jsonl-tokens", "parquet", "auto"};
  m["input_format"] = kFormats[static_cast<int>(opts.format)];
  if (tok) {
    Json t = Json::object();
    t["path"] = tok->path().string();
    t["sha256"] = tok->sha256();
    m["tokenizer"] = std::move(t);
  }
  m["val_fraction"] = opts.val_fraction;
  m["sources"] = Json(std::move(sources));
  Json splits = Json::object();
  splits["train"] = st.train.manifest();
  splits["val"] = st.val.manifest();
  m["splits"] = std::move(splits);
  if (!opts.command_line.empty()) m["command"] = opts.command_line;
  write_file_atomic(st.out.path() / "manifest.json", json::dump(m, 2) + "\n");
}

// What was read and written.
PrepareResult prepare_result(const PrepareState& st) {
  PrepareResult result = st.result;
  result.bytes_read = st.prog.bytes_read;
  result.documents = st.prog.documents;
  result.train_tokens = st.train.tokens();
  result.val_tokens = st.val.tokens();
  result.train_documents = st.train.documents();
  result.val_documents = st.val.documents();
  result.train_shards = st.train.shards();
  result.val_shards = st.val.shards();
  result.seconds = std::chrono::duration<double>(Clock::now() - st.start).count();
  return result;
}

}  // namespace

OutputKind dataset_output() {
  return {"a prepared dataset",
          true,
          {"manifest.json", "train_*.bin", "val_*.bin"},
          "manifest.json",
          [](const std::filesystem::path& dir) {
            return read_prefix(dir / "manifest.json", 4096).find("\"deepthin-shards\"") !=
                   std::string::npos;
          }};
}

PrepareResult prepare_dataset(const PrepareOptions& opts,
                              const std::function<void(const PrepareProgress&)>& progress) {
  const auto start = Clock::now();
  check_options(opts);
  auto files = expand_inputs(opts.inputs);
  const Vocabulary vocab = load_vocabulary(opts);
  check_out(opts, files);
  const Framing fr = framing(opts, vocab);

  PrepareState st(opts, progress, start, fr);
  for (const auto& f : files)
    st.prog.total_bytes += static_cast<int64_t>(std::filesystem::file_size(f));
  st.last_report = Clock::now();
  Pipeline pipeline(vocab.tok && fr.frame ? &*vocab.tok : nullptr, opts.threads,
                    [&st](std::vector<Document>& batch) { write_batch(st, batch); });
  Json sources = Json::array();
  for (const auto& f : files) sources.push_back(read_input(st, pipeline, f, vocab.size));
  pipeline.finish();
  st.prog.bytes_read = st.bytes_read.load();
  st.train.finish();
  st.val.finish();
  if (st.train.tokens() == 0) fail_input("the inputs hold no documents for the train split");
  if (st.max_id >= vocab.size) fail_runtime("internal: token id beyond the vocabulary");

  write_manifest(st, vocab, std::move(sources));
  st.out.commit();
  return prepare_result(st);
}

}  // namespace deepthin::data
