// Input files of `deepthin data prepare` (input.h): name rules, line reading with Arrow's streaming
// decompressors, parquet text columns one record batch at a time.
#include "data/input.h"

#include <fstream>

#include "util/error.h"

#ifdef DEEPTHIN_ARROW
#include <arrow/array.h>
#include <arrow/io/compressed.h>
#include <arrow/io/file.h>
#include <arrow/record_batch.h>
#include <arrow/util/compression.h>
#include <parquet/arrow/reader.h>
#include <parquet/exception.h>
#include <parquet/properties.h>
#endif

namespace deepthin::data {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

#ifndef DEEPTHIN_ARROW
[[noreturn]] void no_arrow(const fs::path& p, FileKind k) {
  fail_input(p.string() + ": reading " + kind_name(k) +
             " needs Arrow, and this build has none (rebuild after `pip install pyarrow` into the "
             "Python that scripts/setup.sh uses; see the README, \"Pretraining on public corpora\")");
}
#endif

}  // namespace

FileKind kind_from_name(const fs::path& p) {
  std::string n = p.filename().string();
  for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ends_with(n, ".parquet")) return FileKind::parquet;
  for (const char* ext : {".jsonl", ".json", ".ndjson"}) {
    const std::string e(ext);
    if (ends_with(n, e)) return FileKind::jsonl;
    if (ends_with(n, e + ".gz")) return FileKind::jsonl_gz;
    if (ends_with(n, e + ".zst") || ends_with(n, e + ".zstd")) return FileKind::jsonl_zstd;
  }
  return FileKind::text;
}

const char* kind_name(FileKind k) {
  switch (k) {
    case FileKind::text: return "text";
    case FileKind::jsonl: return "JSONL";
    case FileKind::jsonl_gz: return "gzip-compressed JSONL";
    case FileKind::jsonl_zstd: return "zstd-compressed JSONL";
    case FileKind::parquet: return "parquet";
  }
  return "?";
}

bool have_arrow() {
#ifdef DEEPTHIN_ARROW
  return true;
#else
  return false;
#endif
}

// ---- LineReader ----

struct LineReader::Impl {
  fs::path path;
  size_t max_line;
  std::ifstream plain;  // uncompressed files
#ifdef DEEPTHIN_ARROW
  std::shared_ptr<arrow::io::ReadableFile> file;
  std::unique_ptr<arrow::util::Codec> codec;
  std::shared_ptr<arrow::io::CompressedInputStream> stream;
#endif
  std::string buf;  // decompressed bytes not yet returned
  size_t pos = 0;
  bool eof = false;
  int64_t plain_bytes = 0;

  // Appends the next chunk of decompressed bytes to buf; false at the end.
  bool fill() {
    if (eof) return false;
    if (pos > 0) {
      buf.erase(0, pos);
      pos = 0;
    }
    constexpr int64_t kChunk = 1 << 20;
    const size_t old = buf.size();
    buf.resize(old + kChunk);
    int64_t got = 0;
#ifdef DEEPTHIN_ARROW
    if (stream) {
      auto r = stream->Read(kChunk, buf.data() + old);
      if (!r.ok()) fail_input(path.string() + ": cannot decompress: " + r.status().ToString());
      got = *r;
    } else
#endif
    {
      plain.read(buf.data() + old, kChunk);
      got = plain.gcount();
      if (plain.bad()) fail_input("cannot read input " + path.string());
      plain_bytes += got;
    }
    buf.resize(old + static_cast<size_t>(got));
    if (got == 0) eof = true;
    return got > 0;
  }
};

LineReader::LineReader(const fs::path& p, FileKind kind, size_t max_line)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = p;
  impl_->max_line = max_line;
  if (kind == FileKind::jsonl || kind == FileKind::text) {
    impl_->plain.open(p, std::ios::binary);
    if (!impl_->plain) fail_input("cannot read input " + p.string());
    return;
  }
#ifdef DEEPTHIN_ARROW
  auto f = arrow::io::ReadableFile::Open(p.string());
  if (!f.ok()) fail_input("cannot read input " + p.string() + ": " + f.status().ToString());
  impl_->file = *f;
  auto c = arrow::util::Codec::Create(kind == FileKind::jsonl_gz ? arrow::Compression::GZIP
                                                                 : arrow::Compression::ZSTD);
  if (!c.ok()) fail_input(p.string() + ": " + c.status().ToString());
  impl_->codec = std::move(*c);
  auto s = arrow::io::CompressedInputStream::Make(impl_->codec.get(), impl_->file);
  if (!s.ok()) fail_input(p.string() + ": " + s.status().ToString());
  impl_->stream = *s;
#else
  no_arrow(p, kind);
#endif
}

LineReader::~LineReader() = default;

bool LineReader::next(std::string& line) {
  Impl& m = *impl_;
  size_t scanned = m.pos;
  while (true) {
    const size_t nl = m.buf.find('\n', scanned);
    if (nl != std::string::npos) {
      line.assign(m.buf, m.pos, nl - m.pos);
      m.pos = nl + 1;
      return true;
    }
    scanned = m.buf.size();
    if (scanned - m.pos > m.max_line)
      fail_input(m.path.string() + ": a line is longer than " + std::to_string(m.max_line) +
                 " bytes");
    const size_t before = m.pos;
    if (!m.fill()) {
      if (m.pos >= m.buf.size()) return false;
      line.assign(m.buf, m.pos, std::string::npos);  // the last line has no newline
      m.pos = m.buf.size();
      return true;
    }
    scanned -= before - m.pos;  // fill() moved the unread bytes to the front
  }
}

int64_t LineReader::file_bytes_read() const {
#ifdef DEEPTHIN_ARROW
  if (impl_->file) {
    auto t = impl_->file->Tell();
    return t.ok() ? *t : 0;
  }
#endif
  return impl_->plain_bytes;
}

// ---- parquet ----

void read_parquet_column(const fs::path& p, const std::string& column,
                         const std::function<void(const ParquetRow&)>& f,
                         const std::function<void(int64_t)>& progress) {
#ifdef DEEPTHIN_ARROW
  auto check = [&](const arrow::Status& st, const std::string& what) {
    if (!st.ok()) fail_input(p.string() + ": " + what + ": " + st.ToString());
  };
  auto file = arrow::io::ReadableFile::Open(p.string());
  if (!file.ok()) fail_input("cannot read input " + p.string() + ": " + file.status().ToString());
  // Pages are read through a 1 MiB buffer and decoded 1,024 rows at a time: memory holds one
  // record batch of the one column, not the row group.
  parquet::ReaderProperties props = parquet::default_reader_properties();
  props.enable_buffered_stream();
  props.set_buffer_size(1 << 20);
  parquet::ArrowReaderProperties aprops;
  aprops.set_batch_size(1024);
  aprops.set_pre_buffer(false);
  parquet::arrow::FileReaderBuilder builder;
  try {
    check(builder.Open(*file, props), "not a parquet file");
  } catch (const parquet::ParquetException& e) {
    fail_input(p.string() + ": not a parquet file: " + e.what());
  }
  builder.properties(aprops);
  auto reader = builder.Build();
  if (!reader.ok()) fail_input(p.string() + ": " + reader.status().ToString());
  std::shared_ptr<arrow::Schema> schema;
  check((*reader)->GetSchema(&schema), "cannot read the schema");
  const int col = schema->GetFieldIndex(column);
  if (col < 0) {
    std::string names;
    for (const auto& fld : schema->fields()) names += (names.empty() ? "" : ", ") + fld->name();
    fail_input(p.string() + ": no column '" + column + "' (columns: " + names +
               "); choose one with --text-field");
  }
  const auto type = schema->field(col)->type()->id();
  if (type != arrow::Type::STRING && type != arrow::Type::LARGE_STRING &&
      type != arrow::Type::STRING_VIEW)
    fail_input(p.string() + ": column '" + column + "' holds " +
               schema->field(col)->type()->ToString() + ", not strings");
  std::vector<int> groups((*reader)->num_row_groups());
  for (size_t i = 0; i < groups.size(); ++i) groups[i] = static_cast<int>(i);
  auto batches = (*reader)->GetRecordBatchReader(groups, {col});
  if (!batches.ok()) fail_input(p.string() + ": " + batches.status().ToString());
  ParquetRow row;
  while (true) {
    std::shared_ptr<arrow::RecordBatch> batch;
    try {
      check((*batches)->ReadNext(&batch), "cannot read a record batch");
    } catch (const parquet::ParquetException& e) {
      fail_input(p.string() + ": " + e.what());
    }
    if (!batch) break;
    const auto& arr = batch->column(0);
    for (int64_t i = 0; i < arr->length(); ++i, ++row.row) {
      row.is_null = arr->IsNull(i);
      if (row.is_null) {
        row.text = {};
      } else if (type == arrow::Type::STRING) {
        row.text = static_cast<const arrow::StringArray&>(*arr).GetView(i);
      } else if (type == arrow::Type::LARGE_STRING) {
        row.text = static_cast<const arrow::LargeStringArray&>(*arr).GetView(i);
      } else {
        row.text = static_cast<const arrow::StringViewArray&>(*arr).GetView(i);
      }
      f(row);
    }
    if (progress) {
      auto t = (*file)->Tell();
      progress(t.ok() ? *t : 0);
    }
  }
#else
  (void)column;
  (void)f;
  (void)progress;
  no_arrow(p, FileKind::parquet);
#endif
}

}  // namespace deepthin::data
