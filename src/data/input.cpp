// Input files of `deepthin data prepare` (input.h): name rules, line reading with Arrow's streaming
// decompressors, parquet text columns one record batch at a time.
#include "data/input.h"

#include <fstream>

#include "util/error.h"

#ifdef DEEPTHIN_ARROW
#include <arrow/io/compressed.h>
#include <arrow/io/file.h>
#include <arrow/util/compression.h>
#include <parquet/column_reader.h>
#include <parquet/exception.h>
#include <parquet/file_reader.h>
#include <parquet/metadata.h>
#include <parquet/properties.h>
#include <parquet/schema.h>
#include <parquet/types.h>
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
  auto file = arrow::io::ReadableFile::Open(p.string());
  if (!file.ok()) fail_input("cannot read input " + p.string() + ": " + file.status().ToString());
  try {
    // Pages are read one at a time through a 1 MiB buffer and decoded 1,024 values at a time, the
    // values pointing into the page: memory holds a page of the one column, never a row group.
    parquet::ReaderProperties props = parquet::default_reader_properties();
    props.enable_buffered_stream();
    props.set_buffer_size(1 << 20);
    auto reader = parquet::ParquetFileReader::Open(*file, props);
    const auto md = reader->metadata();
    const parquet::SchemaDescriptor* schema = md->schema();
    const int col = schema->ColumnIndex(column);
    if (col < 0) {
      std::string names;
      for (int i = 0; i < schema->num_columns(); ++i)
        names += (i ? ", " : "") + schema->Column(i)->path()->ToDotString();
      fail_input(p.string() + ": no column '" + column + "' (columns: " + names +
                 "); choose one with --text-field");
    }
    const parquet::ColumnDescriptor* cd = schema->Column(col);
    const bool text = cd->physical_type() == parquet::Type::BYTE_ARRAY &&
                      (cd->logical_type()->is_string() ||
                       cd->converted_type() == parquet::ConvertedType::UTF8);
    if (!text || cd->max_repetition_level() > 0) {
      std::string type = cd->max_repetition_level() > 0
                             ? std::string("lists")
                             : parquet::TypeToString(cd->physical_type());
      for (auto& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      fail_input(p.string() + ": column '" + column + "' holds " + type + ", not strings");
    }
    const int16_t max_def = cd->max_definition_level();
    constexpr int64_t kBatch = 1024;
    std::vector<int16_t> def(kBatch);
    std::vector<parquet::ByteArray> values(kBatch);
    ParquetRow row;
    for (int rg = 0; rg < md->num_row_groups(); ++rg) {
      auto column_reader = reader->RowGroup(rg)->Column(col);
      auto* strings = static_cast<parquet::ByteArrayReader*>(column_reader.get());
      while (strings->HasNext()) {
        int64_t n_values = 0;
        const int64_t n_rows = strings->ReadBatch(kBatch, max_def > 0 ? def.data() : nullptr,
                                                  nullptr, values.data(), &n_values);
        size_t v = 0;
        for (int64_t i = 0; i < n_rows; ++i, ++row.row) {
          row.is_null = max_def > 0 && def[i] < max_def;
          row.text = row.is_null ? std::string_view()
                                 : std::string_view(reinterpret_cast<const char*>(values[v].ptr),
                                                    values[v].len);
          if (!row.is_null) ++v;
          f(row);
        }
      }
      if (progress) {
        auto t = (*file)->Tell();
        progress(t.ok() ? *t : 0);
      }
    }
  } catch (const parquet::ParquetException& e) {
    fail_input(p.string() + ": not a readable parquet file: " + e.what());
  }
#else
  (void)column;
  (void)f;
  (void)progress;
  no_arrow(p, FileKind::parquet);
#endif
}

}  // namespace deepthin::data
