// deepthin data prepare | inspect
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "util/error.h"
#include "util/log.h"
#include "util/strings.h"

namespace deepthin::cli {

namespace {

void show_progress(const data::PrepareProgress& p, bool final) {
  static const bool tty = ::isatty(2);
  const double mb = p.bytes_read / 1e6, s = std::max(p.seconds, 1e-9);
  char line[256];
  std::snprintf(line, sizeof line,
                "prepare: %5.1f%%  %8.1f MB  %6.2f MB/s  %8.2fM tokens/s  %lld documents",
                p.total_bytes ? 100.0 * p.bytes_read / p.total_bytes : 100.0, mb, mb / s,
                p.tokens / s / 1e6, static_cast<long long>(p.documents));
  if (tty) {
    std::fprintf(stderr, "\r%s%s", line, final ? "\n" : "");
  } else if (final) {
    std::fprintf(stderr, "%s\n", line);
  } else {
    static double last = -10;
    if (p.seconds - last >= 10) {
      std::fprintf(stderr, "%s\n", line);
      last = p.seconds;
    }
  }
}

int prepare(const Argv& argv) {
  Args args(
      "data prepare",
      "deepthin data prepare --tokenizer M --input FILES|GLOBS... --out DIR "
      "[--format auto|text|jsonl|jsonl-tokens|parquet] [--text-field text] [--val-fraction F] "
      "[--threads N]",
      "Tokenise documents into token shards plus manifest.json. Each document is framed BOS … EOS; "
      "the same input gives byte-identical output.",
      {},
      {{"tokenizer", "M", "SentencePiece .model (or its directory)"},
       {"input", "FILE|GLOB", "Input files (repeatable)", true},
       {"format", "F",
        "auto (default: by file name: .parquet; .jsonl/.json/.ndjson, also .gz, .zst, .zstd; "
        "else text) | text (one document per file) | jsonl | jsonl-tokens | parquet"},
       {"out", "DIR", "Output directory (must not exist unless --force)"},
       {"text-field", "NAME", "JSONL field or parquet column holding the text (default text)"},
       {"val-fraction", "F", "Fraction of documents for the val split (default 0)"},
       {"threads", "N", "Tokenisation threads (default 2)"},
       {"shard-tokens", "N", "Tokens per shard (default 100000000)"},
       {"vocab-size", "N", "For jsonl-tokens without a tokenizer: the vocabulary size"},
       {"on-bad-line", "fail|skip",
        "Malformed JSONL lines and null parquet values stop the run (default) or are skipped"},
       {"force", "", "Replace DIR if it exists"}});
  if (!args.parse(argv)) return 0;
  data::PrepareOptions o;
  o.tokenizer = args.get("tokenizer");
  o.inputs = args.all("input");
  if (o.inputs.empty()) fail_input("deepthin data prepare: --input is required");
  o.format = data::parse_input_format(args.get("format", "auto"));
  if (!args.has("out")) fail_input("deepthin data prepare: --out DIR is required");
  o.out = args.get("out");
  o.text_field = args.get("text-field", "text");
  o.val_fraction = args.get_double("val-fraction", 0.0, 0.0, 0.999999);
  o.threads = static_cast<int>(args.get_int("threads", 2, 1, 1024));
  o.shard_tokens = args.get_int("shard-tokens", 100'000'000, 1, INT64_MAX);
  o.vocab_size = args.get_int("vocab-size", 0, 0, 1LL << 32);
  std::string bad = args.get("on-bad-line", "fail");
  if (bad != "fail" && bad != "skip")
    fail_input("deepthin data prepare: --on-bad-line must be fail or skip");
  o.skip_bad_lines = bad == "skip";
  o.force = args.has("force");
  o.command_line = "deepthin data prepare " + join(argv, " ");
  auto r =
      data::prepare_dataset(o, [](const data::PrepareProgress& p) { show_progress(p, false); });
  data::PrepareProgress fin{r.bytes_read, r.bytes_read, r.documents, r.train_tokens + r.val_tokens,
                            r.seconds};
  show_progress(fin, true);
  log::info(
      "wrote {}: train {} tokens in {} shard(s) ({} documents), val {} tokens ({} documents){}",
      o.out.string(), group_digits(r.train_tokens), r.train_shards, r.train_documents,
      group_digits(r.val_tokens), r.val_documents,
      r.skipped_lines ? ", " + std::to_string(r.skipped_lines) + " malformed lines skipped" : "");
  return 0;
}

int inspect(const Argv& argv) {
  Args args("data inspect", "deepthin data inspect PATH [--split train|val]",
            "Token counts and windows of a prepared directory, shard glob or shard file.", {"PATH"},
            {{"split", "S", "Split for a prepared directory (default train)"},
             {"seq-len", "N", "Window length to count (default 2048)"},
             {"entropy", "", "Also print the unigram entropy of the split (nats per token)"}});
  if (!args.parse(argv)) return 0;
  auto ds = data::TokenDataset::open(args.positional(0), args.get("split", "train"));
  int64_t T = args.get_int("seq-len", 2048, 1, 1LL << 30);
  std::printf("%s: %zu shard(s), %s tokens, %s windows of %lld+1, max token id %lld\n",
              ds->description().c_str(), ds->shards().size(),
              group_digits(ds->total_tokens()).c_str(), group_digits(ds->num_windows(T)).c_str(),
              static_cast<long long>(T), static_cast<long long>(ds->max_token_id()));
  if (args.has("entropy")) {
    const double h = ds->unigram_entropy();
    std::printf("unigram entropy: %.4f nats/token (perplexity %.1f)\n", h, std::exp(h));
  }
  return 0;
}

}  // namespace

int run_data(const Argv& argv) {
  return dispatch_subcommand("data", {{"prepare", prepare}, {"inspect", inspect}}, argv);
}

}  // namespace deepthin::cli
