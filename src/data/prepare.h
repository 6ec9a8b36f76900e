// `deepthin data prepare`: text, JSONL (plain, .gz, .zst), parquet or pre-tokenized JSONL in; token
// shards and a manifest out.
//
// Deterministic: the same inputs and options give byte-identical shards and manifest, whatever the
// thread count. Each document is framed as BOS … EOS (pre-tokenized lines are kept as given). A
// document goes to the validation split when a hash of its content falls under val_fraction, so the
// split does not depend on input order. The output directory is built under a temporary name and
// renamed into place at the end; every shard is itself written then renamed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "util/paths.h"

namespace deepthin::data {

// auto: by each file's name (data/input.h): .parquet, .jsonl/.json/.ndjson (+ .gz/.zst/.zstd), else
// text. Compressed JSONL is decompressed whatever the format says.
enum class InputFormat { text, jsonl, jsonl_tokens, parquet, auto_ };
InputFormat parse_input_format(const std::string& s);

struct PrepareOptions {
  std::string tokenizer;   // .model path (required except for jsonl-tokens with vocab_size)
  int64_t vocab_size = 0;  // jsonl-tokens without a tokenizer: ids must be below this
  std::vector<std::string> inputs;  // files or globs
  InputFormat format = InputFormat::text;
  std::filesystem::path out;
  std::string text_field = "text";  // JSONL field or parquet column
  double val_fraction = 0.0;
  int threads = 2;
  int64_t shard_tokens = 100'000'000;
  bool skip_bad_lines = false;  // malformed JSONL, null parquet values: skip (and count)
  bool force = false;           // replace an existing output directory
  std::string command_line;     // recorded in the manifest
};

struct PrepareProgress {
  int64_t bytes_read = 0, total_bytes = 0;
  int64_t documents = 0, tokens = 0;
  double seconds = 0;
};

struct PrepareResult {
  int64_t bytes_read = 0, documents = 0, skipped_lines = 0;
  int64_t train_tokens = 0, val_tokens = 0, train_documents = 0, val_documents = 0;
  int train_shards = 0, val_shards = 0;
  double seconds = 0;
};

// What prepare_dataset writes, for --force (util/paths.h): a manifest.json of format
// deepthin-shards and train_*/val_* shards, nothing else.
OutputKind dataset_output();

PrepareResult prepare_dataset(const PrepareOptions& opts,
                              const std::function<void(const PrepareProgress&)>& progress = {});

}  // namespace deepthin::data
