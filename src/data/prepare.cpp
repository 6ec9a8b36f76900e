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

// Read → tokenise → write, overlapped document by document. The caller's thread reads and numbers
// the documents; `threads` workers take them in order from one window (a few at a time, up to
// 64 KB of text) and keep their own word caches, so a long document holds one worker while the
// others go on with the documents behind it; a writing thread hands the finished documents to
// `write` in their order, as runs of consecutive ones. The window holds at most max(16 MB, 4 MB a
// worker) of text read and not yet written, so memory stays bounded whatever the file.
// Without a tokenizer (pre-tokenised input) documents go straight to the writer.
class Pipeline {
 public:
  using Batch = std::vector<Document>;
  Pipeline(const Tokenizer* tok, int threads, std::function<void(Batch&)> write)
      : tok_(tok),
        write_(std::move(write)),
        caches_(static_cast<size_t>(threads)),
        limit_(std::max<size_t>(16u << 20, static_cast<size_t>(threads) * (4u << 20))) {
    if (tok_)
      for (int k = 0; k < threads; ++k)
        workers_.emplace_back([this, k] { stage([this, k] { work(k); }); });
    writer_ = std::thread([this] { stage([this] { write_loop(); }); });
  }
  ~Pipeline() {
    if (writer_.joinable()) {
      abort();
      join();
    }
  }
  void add(Document d, size_t raw_bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    reader_cv_.wait(lock, [&] { return aborted_ || window_.empty() || bytes_ < limit_; });
    if (aborted_) {
      lock.unlock();
      finish();  // a stage failed: its error is rethrown here
      fail_runtime("internal: the prepare pipeline stopped without an error");
    }
    bytes_ += raw_bytes;
    window_.push_back({std::move(d), raw_bytes, /*done=*/tok_ == nullptr, false});
    if (tok_)
      worker_cv_.notify_one();
    else
      writer_cv_.notify_one();
  }
  // Waits for every stage, and rethrows the first error of any.
  void finish() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    worker_cv_.notify_all();
    writer_cv_.notify_all();
    join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  struct Slot {
    Document doc;
    size_t bytes = 0;
    bool done = false;
    bool cached = false;  // encoded through a word cache
  };

  void join() {
    for (auto& w : workers_)
      if (w.joinable()) w.join();
    if (writer_.joinable()) writer_.join();
  }
  void abort() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      aborted_ = true;
    }
    reader_cv_.notify_all();
    worker_cv_.notify_all();
    writer_cv_.notify_all();
  }
  template <class F>
  void stage(F&& f) {
    try {
      f();
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(error_mu_);
        if (!error_) error_ = std::current_exception();
      }
      abort();
    }
  }
  // A worker: claims the next documents of the window (references into a deque stay valid while
  // others are pushed at the back and popped at the front), encodes them, marks them done.
  void work(int k) {
    std::vector<Slot*> mine;
    for (;;) {
      mine.clear();
      size_t first = 0;  // the number of the first document claimed
      {
        std::unique_lock<std::mutex> lock(mu_);
        worker_cv_.wait(lock,
                        [&] { return aborted_ || next_ < base_ + window_.size() || closed_; });
        if (aborted_ || next_ == base_ + window_.size()) return;  // closed and nothing left
        first = next_;
        size_t text = 0;
        while (next_ < base_ + window_.size() && mine.size() < 64 && text < (64u << 10)) {
          Slot& s = window_[next_++ - base_];
          text += s.doc.text.size();
          mine.push_back(&s);
        }
      }
      for (size_t j = 0; j < mine.size(); ++j) encode(*mine[j], k, first + j);
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (Slot* s : mine) s->done = true;
      }
      writer_cv_.notify_one();
    }
  }
  // The cached path must reproduce the plain one: the first kVerified documents are encoded both
  // ways (by the workers, in parallel). After a difference the cache is off and the writer encodes
  // again every document still encoded through it: documents are written in order, so none of those
  // is written before the difference is known.
  static constexpr size_t kVerified = 64;
  void encode(Slot& s, int k, size_t seq) {
    s.cached = use_cache_.load();
    if (!s.cached) {
      s.doc.tokens = tok_->encode(s.doc.text);
      return;
    }
    s.doc.tokens = tok_->encode_cached(s.doc.text, caches_[static_cast<size_t>(k)]);
    if (seq >= kVerified) return;
    auto plain = tok_->encode(s.doc.text);
    if (plain == s.doc.tokens) return;
    use_cache_ = false;
    if (!cache_failed_.exchange(true))
      log::warn("{}: word-cached encoding differs from plain encoding; using plain encoding",
                tok_->path().string());
    s.doc.tokens = std::move(plain);
    s.cached = false;
  }
  void write_loop() {
    Batch run;
    std::vector<char> cached;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        writer_cv_.wait(lock, [&] {
          return aborted_ || (!window_.empty() && window_.front().done) ||
                 (closed_ && window_.empty());
        });
        if (aborted_ || window_.empty()) return;
        run.clear();
        cached.clear();
        while (!window_.empty() && window_.front().done) {
          Slot& s = window_.front();
          bytes_ -= s.bytes;
          run.push_back(std::move(s.doc));
          cached.push_back(s.cached);
          window_.pop_front();
          ++base_;
        }
      }
      reader_cv_.notify_one();
      if (cache_failed_)
        for (size_t i = 0; i < run.size(); ++i)
          if (cached[i]) run[i].tokens = tok_->encode(run[i].text);
      write_(run);
    }
  }

  const Tokenizer* tok_;
  std::function<void(Batch&)> write_;
  std::vector<Tokenizer::WordCache> caches_;  // one a worker
  const size_t limit_;
  std::atomic<bool> use_cache_{true};
  std::atomic<bool> cache_failed_{false};
  std::mutex mu_;
  std::condition_variable reader_cv_, worker_cv_, writer_cv_;
  std::deque<Slot> window_;  // documents base_ … base_ + size − 1, in reading order
  size_t base_ = 0, next_ = 0, bytes_ = 0;
  bool closed_ = false, aborted_ = false;
  std::mutex error_mu_;
  std::exception_ptr error_;
  std::vector<std::thread> workers_;
  std::thread writer_;
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
