// The inputs of `deepthin data prepare` as corpora ship them: plain text, JSONL (also gzip- and
// zstd-compressed: .jsonl.gz, .jsonl.zst, .jsonl.zstd) and parquet (one text column).
//
// Compressed JSONL and parquet are read through Arrow C++ (the library of the pyarrow wheel, see
// the README): JSONL through Arrow's streaming decompressors, parquet through its column readers
// page by page, so memory stays bounded whatever the size of the file or its row groups.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace deepthin::data {

enum class FileKind { text, jsonl, jsonl_gz, jsonl_zstd, parquet };

// The kind a file's name says: .parquet, .jsonl/.json/.ndjson (+ .gz, .zst, .zstd), else text.
FileKind kind_from_name(const std::filesystem::path& p);
const char* kind_name(FileKind k);

// Whether this build reads parquet and compressed JSONL (it was built with Arrow).
bool have_arrow();

// Lines of a JSONL file, decompressed as its kind says. Input error naming the file when it
// cannot be opened or decompressed, or a line is longer than max_line bytes.
class LineReader {
 public:
  LineReader(const std::filesystem::path& p, FileKind kind, size_t max_line = size_t{1} << 30);
  ~LineReader();
  // The next line without its newline; false at the end.
  bool next(std::string& line);
  // Bytes of the file consumed so far (compressed bytes for compressed files).
  int64_t file_bytes_read() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One row of a parquet file's text column: its text, or null (a missing value or not a string).
struct ParquetRow {
  std::string_view text;
  bool is_null = false;
  int64_t row = 0;  // in the file, from 0
};

// Calls f for every row of `column`, row group by row group, in order; row.text points into the
// current page and is valid during the call. Input error naming the file and column when it is
// missing or not a string column. Reports the bytes of the file consumed through `progress` after
// every row group.
void read_parquet_column(const std::filesystem::path& p, const std::string& column,
                         const std::function<void(const ParquetRow&)>& f,
                         const std::function<void(int64_t bytes)>& progress = {});

}  // namespace deepthin::data
