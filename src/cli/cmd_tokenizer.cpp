// deepthin tokenizer train|encode|decode
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <sstream>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/strings.h"

namespace deepthin::cli {

namespace {

int train(const Argv& argv) {
  Args args("tokenizer train",
            "deepthin tokenizer train --input FILES... --vocab-size N [--model-type bpe|unigram] "
            "--out DIR",
            "Train a SentencePiece tokenizer (byte fallback, digits split, unk 0 / bos 1 / eos 2) "
            "on text "
            "or JSONL files (.jsonl: the --text-field of each line).",
            {},
            {{"input", "FILE|GLOB", "Training text (repeatable)", true},
             {"vocab-size", "N", "Vocabulary size (default 32000)"},
             {"model-type", "bpe|unigram", "SentencePiece algorithm (default bpe)"},
             {"text-field", "NAME", "JSONL field holding the text (default text)"},
             {"max-sentences", "N", "Sentences sampled for training (default 2000000)"},
             {"threads", "N", "Trainer threads (default 2)"},
             {"out", "DIR", "Output directory (tokenizer.model, tokenizer.vocab)"},
             {"force", "", "Replace a tokenizer.model and tokenizer.vocab written in DIR before"}});
  if (!args.parse(argv)) return 0;
  data::TokenizerTrainOptions o;
  o.inputs = args.all("input");
  if (o.inputs.empty()) fail_input("deepthin tokenizer train: --input is required");
  if (!args.has("out")) fail_input("deepthin tokenizer train: --out DIR is required");
  o.out_dir = args.get("out");
  o.force = args.has("force");
  o.vocab_size = args.get_int("vocab-size", 32000, 8, 1LL << 31);
  std::string type = args.get("model-type", "bpe");
  if (type != "bpe" && type != "unigram")
    fail_input("deepthin tokenizer train: --model-type must be bpe or unigram, got '" + type + "'");
  o.model_type = type == "bpe" ? data::TokenizerModel::bpe : data::TokenizerModel::unigram;
  o.text_field = args.get("text-field", "text");
  o.max_sentences = args.get_int("max-sentences", 2000000, 1, INT64_MAX);
  o.threads = static_cast<int>(args.get_int("threads", 2, 1, 1024));
  auto path = data::train_tokenizer(o);
  auto tok = data::Tokenizer::load(path);
  log::info("wrote {} ({} pieces, sha256 {})", path.string(), tok.vocab_size(),
            tok.sha256().substr(0, 16));
  return 0;
}

std::string read_input(const Args& args, const char* inline_flag) {
  if (args.has(inline_flag)) return args.get(inline_flag);
  if (args.has("input")) return read_file(args.get("input"), "input");
  return std::string(std::istreambuf_iterator<char>(std::cin), {});
}

int encode(const Argv& argv) {
  Args args("tokenizer encode",
            "deepthin tokenizer encode --tokenizer M [--text TEXT | --input FILE] [--pieces]",
            "Print the token ids of TEXT (or FILE, or standard input), space-separated.", {},
            {{"tokenizer", "M", "SentencePiece .model (or a directory holding tokenizer.model)"},
             {"text", "TEXT", "Text to encode"},
             {"input", "FILE", "File to encode"},
             {"bos", "", "Prepend the BOS id"},
             {"pieces", "", "Print pieces next to ids"}});
  if (!args.parse(argv)) return 0;
  if (!args.has("tokenizer")) fail_input("deepthin tokenizer encode: --tokenizer is required");
  auto tok = data::Tokenizer::load(args.get("tokenizer"));
  auto ids = tok.encode(read_input(args, "text"));
  if (args.has("bos")) ids.insert(ids.begin(), tok.bos_id());
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ids[i]);
    if (args.has("pieces")) out += "/" + tok.piece(ids[i]);
  }
  std::printf("%s\n", out.c_str());
  return 0;
}

int decode(const Argv& argv) {
  Args args(
      "tokenizer decode",
      "deepthin tokenizer decode --tokenizer M [--ids \"1 2 3\" | --input FILE]",
      "Print the text of whitespace-separated token ids (from --ids, FILE or standard input).", {},
      {{"tokenizer", "M", "SentencePiece .model"},
       {"ids", "IDS", "Token ids"},
       {"input", "FILE", "File of ids"}});
  if (!args.parse(argv)) return 0;
  if (!args.has("tokenizer")) fail_input("deepthin tokenizer decode: --tokenizer is required");
  auto tok = data::Tokenizer::load(args.get("tokenizer"));
  std::istringstream in(read_input(args, "ids"));
  std::vector<int32_t> ids;
  std::string w;
  while (in >> w) {
    auto v = parse_int(w);
    if (!v) fail_input("deepthin tokenizer decode: '" + w + "' is not a token id");
    ids.push_back(static_cast<int32_t>(*v));
  }
  std::printf("%s\n", tok.decode(ids).c_str());
  return 0;
}

}  // namespace

int run_tokenizer(const Argv& argv) {
  return dispatch_subcommand("tokenizer",
                             {{"train", train}, {"encode", encode}, {"decode", decode}}, argv);
}

}  // namespace deepthin::cli
