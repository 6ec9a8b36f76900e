// tokenizer.json for `deepthin export --format hf`: a Hugging Face `tokenizers` description that
// encodes exactly as the SentencePiece model it is made from.
//
// The SentencePiece model is read from its serialized ModelProto (the few fields that decide encoding:
// the pieces with their scores and types, the model type, byte fallback and the normalizer's
// whitespace switches). The description mirrors SentencePiece's encoder step by step:
//   normalizer  — "▁" prepended when add_dummy_prefix, every " " replaced by "▁" (escape_whitespaces)
//   model       — BPE: every normal piece of two or more characters is reachable by every split into
//                 two normal pieces, merged in SentencePiece's order (higher piece score first);
//                 Unigram: the normal pieces with their scores, the others (control, byte, unknown)
//                 never matched in text; byte fallback as in the model
//   added       — the control and unknown pieces, special; literal "<s>" in text stays text
//                 (split_special_tokens in tokenizer_config.json), as in SentencePiece
//   post        — BOS before the text (SentencePiece adds none; transformers' add_special_tokens does)
//   decoder     — "▁" back to " ", byte pieces fused to UTF-8, the dummy prefix's space dropped
// Models this cannot match exactly are refused with the reason: a precompiled (NFKC) normalizer,
// whitespace as a suffix, remove_extra_whitespaces, user-defined pieces, word/char model types.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "util/json_io.h"

namespace deepthin::exports {

// What a SentencePiece .model holds that decides how it encodes.
struct SpModel {
  enum class Type { unigram = 1, bpe = 2, word = 3, chr = 4 };
  enum class Piece { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };
  struct Entry {
    std::string piece;
    float score = 0;
    Piece type = Piece::normal;
  };
  std::vector<Entry> pieces;
  Type type = Type::unigram;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  size_t precompiled_charsmap_bytes = 0;
  std::string normalizer_name;
};

// Parses a serialized SentencePiece ModelProto. Input error naming `where` when it is malformed.
SpModel parse_sp_model(const std::string& bytes, const std::string& where);

// tokenizer.json for the model. Input error, naming the feature, for a model it cannot match.
Json hf_tokenizer_json(const SpModel& model, const std::string& where);

}  // namespace deepthin::exports
