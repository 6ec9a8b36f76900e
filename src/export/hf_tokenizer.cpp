#include "export/hf_tokenizer.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "util/error.h"

namespace deepthin::exports {
namespace {

// The protobuf wire format, as far as a ModelProto needs it.
class Wire {
 public:
  Wire(std::string_view bytes, const std::string& where) : b_(bytes), where_(where) {}
  bool done() const { return pos_ >= b_.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= b_.size()) bad("truncated varint");
      const auto c = static_cast<uint8_t>(b_[pos_++]);
      v |= static_cast<uint64_t>(c & 0x7F) << shift;
      if (!(c & 0x80)) return v;
    }
    bad("varint longer than 10 bytes");
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > b_.size() - pos_) bad("length " + std::to_string(n) + " past the end");
    auto s = b_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  float fixed32_float() {
    if (b_.size() - pos_ < 4) bad("truncated fixed32");
    uint32_t u = 0;
    for (int i = 0; i < 4; ++i)
      u |= static_cast<uint32_t>(static_cast<uint8_t>(b_[pos_ + i])) << (8 * i);
    pos_ += 4;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0:
        varint();
        return;
      case 1:
        advance(8);
        return;
      case 2:
        bytes();
        return;
      case 5:
        advance(4);
        return;
      default:
        bad("wire type " + std::to_string(wire_type));
    }
  }
  [[noreturn]] void bad(const std::string& what) const {
    fail_input(where_ + ": not a SentencePiece model (" + what + " at byte " +
               std::to_string(pos_) + ")");
  }

 private:
  void advance(size_t n) {
    if (b_.size() - pos_ < n) bad("truncated field");
    pos_ += n;
  }
  std::string_view b_;
  const std::string& where_;
  size_t pos_ = 0;
};

// Calls f(field, wire_type, wire) for each field of one message.
template <class F>
void each_field(std::string_view msg, const std::string& where, F&& f) {
  Wire w(msg, where);
  while (!w.done()) {
    const uint64_t key = w.varint();
    f(static_cast<int>(key >> 3), static_cast<int>(key & 7), w);
  }
}

SpModel::Entry parse_piece(std::string_view msg, const std::string& where) {
  SpModel::Entry e;
  each_field(msg, where, [&](int field, int type, Wire& w) {
    if (field == 1 && type == 2)
      e.piece = std::string(w.bytes());
    else if (field == 2 && type == 5)
      e.score = w.fixed32_float();
    else if (field == 3 && type == 0) {
      const uint64_t t = w.varint();
      if (t < 1 || t > 6) w.bad("piece type " + std::to_string(t));
      e.type = static_cast<SpModel::Piece>(t);
    } else
      w.skip(type);
  });
  return e;
}

size_t utf8_chars(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Byte offsets of each character boundary after the first, before the end.
std::vector<size_t> inner_boundaries(std::string_view s) {
  std::vector<size_t> out;
  for (size_t i = 1; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) out.push_back(i);
  return out;
}

constexpr const char* kSpace = "\xE2\x96\x81";  // "▁"

Json replace_normalizer(const Json& pattern, const std::string& content) {
  return Json{{"type", "Replace"}, {"pattern", pattern}, {"content", content}};
}

// Refuses a model whose encoding tokenizer.json would not reproduce.
[[noreturn]] void refuse(const std::string& where, const std::string& why) {
  fail_input(where + ": " + why +
             "; deepthin writes tokenizer.json only for models it encodes exactly like "
             "SentencePiece (export without --tokenizer, or retrain with `deepthin tokenizer "
             "train`)");
}

// The model's type and normalization must be ones tokenizers applies exactly like SentencePiece.
void check_exact(const SpModel& m, const std::string& where) {
  if (m.type != SpModel::Type::bpe && m.type != SpModel::Type::unigram)
    refuse(where, "the model type is word or char");
  if (m.precompiled_charsmap_bytes > 0)
    refuse(where, "it normalizes text with a precompiled rule ('" + m.normalizer_name +
                      "'), which tokenizers applies differently");
  if (m.treat_whitespace_as_suffix) refuse(where, "it treats whitespace as a suffix");
  if (!m.escape_whitespaces) refuse(where, "it keeps spaces unescaped");
  // SentencePiece's remove_extra_whitespaces also acts on a literal "▁" in the text, in ways that
  // depend on the position: not reproduced (deepthin's and LLaMA's tokenizers keep whitespace).
  if (m.remove_extra_whitespaces)
    refuse(where, "it removes extra whitespace (remove_extra_whitespaces)");
}

// The pieces' ids, the unknown and BOS pieces, and the special tokens (control and unknown).
struct Pieces {
  int64_t unk = -1, bos = -1;
  std::unordered_map<std::string, int64_t> id_of;
  Json added = Json::array();
};

Pieces scan_pieces(const SpModel& m, const std::string& where) {
  const int64_t n = static_cast<int64_t>(m.pieces.size());
  Pieces ps;
  for (int64_t id = 0; id < n; ++id) {
    const auto& e = m.pieces[id];
    if (e.type == SpModel::Piece::user_defined)
      refuse(where, "piece " + std::to_string(id) + " ('" + e.piece + "') is user-defined");
    if (!ps.id_of.emplace(e.piece, id).second)
      refuse(where, "piece '" + e.piece + "' appears twice");
    if (e.type == SpModel::Piece::unknown && ps.unk < 0) ps.unk = id;
    if (e.type == SpModel::Piece::control || e.type == SpModel::Piece::unknown)
      ps.added.push_back(Json{{"id", id},
                              {"content", e.piece},
                              {"single_word", false},
                              {"lstrip", false},
                              {"rstrip", false},
                              {"normalized", false},
                              {"special", true}});
    if (e.type == SpModel::Piece::control && e.piece == "<s>") ps.bos = id;
  }
  if (ps.unk < 0) refuse(where, "it has no unknown piece");
  return ps;
}

// A BPE model: the vocabulary, and the merges in SentencePiece's order.
Json bpe_model(const SpModel& m, const Pieces& ps) {
  const int64_t n = static_cast<int64_t>(m.pieces.size());
  Json vocab = Json::object();
  for (int64_t id = 0; id < n; ++id) vocab[m.pieces[id].piece] = id;
  struct Merge {
    float score;
    int64_t id;
    size_t split;
  };
  std::vector<Merge> merges;
  auto normal = [&](std::string_view p) {
    auto it = ps.id_of.find(std::string(p));
    return it != ps.id_of.end() && m.pieces[it->second].type == SpModel::Piece::normal;
  };
  for (int64_t id = 0; id < n; ++id) {
    const auto& e = m.pieces[id];
    if (e.type != SpModel::Piece::normal || utf8_chars(e.piece) < 2) continue;
    const std::string_view p = e.piece;
    for (size_t k : inner_boundaries(p))
      if (normal(p.substr(0, k)) && normal(p.substr(k))) merges.push_back({e.score, id, k});
  }
  // SentencePiece merges the adjacent pair whose joined piece scores highest.
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.id != b.id) return a.id < b.id;
    return a.split < b.split;
  });
  Json ml = Json::array();
  for (const auto& mg : merges) {
    const std::string_view p = m.pieces[mg.id].piece;
    ml.push_back(
        Json::array({std::string(p.substr(0, mg.split)), std::string(p.substr(mg.split))}));
  }
  return Json{{"type", "BPE"},
              {"dropout", nullptr},
              {"unk_token", m.pieces[ps.unk].piece},
              {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr},
              {"fuse_unk", true},
              {"byte_fallback", m.byte_fallback},
              {"ignore_merges", false},
              {"vocab", std::move(vocab)},
              {"merges", std::move(ml)}};
}

// A Unigram model: every piece with its score.
Json unigram_model(const SpModel& m, const Pieces& ps) {
  // Pieces SentencePiece never matches in text sit far below every normal piece.
  float lowest = 0;
  for (const auto& e : m.pieces)
    if (e.type == SpModel::Piece::normal) lowest = std::min(lowest, e.score);
  Json vocab = Json::array();
  for (const auto& e : m.pieces)
    vocab.push_back(Json::array({e.piece, e.type == SpModel::Piece::normal
                                              ? static_cast<double>(e.score)
                                              : static_cast<double>(lowest) - 1000.0}));
  return Json{{"type", "Unigram"},
              {"unk_id", ps.unk},
              {"vocab", std::move(vocab)},
              {"byte_fallback", m.byte_fallback}};
}

// Post-processor: BOS before the text when the model has one.
Json post_processor(const SpModel& m, int64_t bos) {
  Json post = nullptr;
  if (bos >= 0) {
    const std::string b = m.pieces[bos].piece;
    post = Json{{"type", "TemplateProcessing"},
                {"single", Json::array({Json{{"SpecialToken", {{"id", b}, {"type_id", 0}}}},
                                        Json{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                {"pair", Json::array({Json{{"SpecialToken", {{"id", b}, {"type_id", 0}}}},
                                      Json{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                      Json{{"SpecialToken", {{"id", b}, {"type_id", 1}}}},
                                      Json{{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
                {"special_tokens",
                 {{b, {{"id", b}, {"ids", Json::array({bos})}, {"tokens", Json::array({b})}}}}}};
  }
  return post;
}

}  // namespace

SpModel parse_sp_model(const std::string& bytes, const std::string& where) {
  SpModel m;
  each_field(bytes, where, [&](int field, int type, Wire& w) {
    if (field == 1 && type == 2) {
      m.pieces.push_back(parse_piece(w.bytes(), where));
    } else if (field == 2 && type == 2) {  // TrainerSpec
      each_field(w.bytes(), where, [&](int f, int t, Wire& tw) {
        if (f == 3 && t == 0) {
          const uint64_t v = tw.varint();
          if (v < 1 || v > 4) tw.bad("model type " + std::to_string(v));
          m.type = static_cast<SpModel::Type>(v);
        } else if (f == 24 && t == 0)
          m.treat_whitespace_as_suffix = tw.varint() != 0;
        else if (f == 35 && t == 0)
          m.byte_fallback = tw.varint() != 0;
        else
          tw.skip(t);
      });
    } else if (field == 3 && type == 2) {  // NormalizerSpec
      each_field(w.bytes(), where, [&](int f, int t, Wire& nw) {
        if (f == 1 && t == 2)
          m.normalizer_name = std::string(nw.bytes());
        else if (f == 2 && t == 2)
          m.precompiled_charsmap_bytes = nw.bytes().size();
        else if (f == 3 && t == 0)
          m.add_dummy_prefix = nw.varint() != 0;
        else if (f == 4 && t == 0)
          m.remove_extra_whitespaces = nw.varint() != 0;
        else if (f == 5 && t == 0)
          m.escape_whitespaces = nw.varint() != 0;
        else
          nw.skip(t);
      });
    } else {
      w.skip(type);
    }
  });
  if (m.pieces.empty()) Wire(bytes, where).bad("no pieces");
  return m;
}

// SentencePiece never reads a control or unknown piece from text; tokenizers' Unigram does when the
// alternative needs an unknown character: it scores an unknown character below every piece of the
// vocabulary, the demoted special pieces included. So in a Unigram model every character of a
// special piece's spelling must be a normal piece (then the normal path wins).
void check_specials_unreadable(const SpModel& m, const std::string& where) {
  if (m.type != SpModel::Type::unigram) return;
  std::unordered_set<std::string> normal;
  for (const auto& e : m.pieces)
    if (e.type == SpModel::Piece::normal) normal.insert(e.piece);
  for (const auto& e : m.pieces) {
    if (e.type != SpModel::Piece::control && e.type != SpModel::Piece::unknown) continue;
    std::vector<size_t> ends = inner_boundaries(e.piece);
    ends.push_back(e.piece.size());
    size_t start = 0;
    for (size_t end : ends) {
      const std::string c = e.piece.substr(start, end - start);
      if (!normal.count(c))
        refuse(where, "in this unigram model the character '" + c + "' of the special piece '" +
                          e.piece +
                          "' is no piece of its own, so tokenizers would read that special piece "
                          "from plain text where SentencePiece does not");
      start = end;
    }
  }
}

Json hf_tokenizer_json(const SpModel& m, const std::string& where) {
  check_exact(m, where);
  Pieces ps = scan_pieces(m, where);
  check_specials_unreadable(m, where);

  // Normalizer.
  Json norms = Json::array();
  if (m.add_dummy_prefix) norms.push_back(Json{{"type", "Prepend"}, {"prepend", kSpace}});
  norms.push_back(replace_normalizer(Json{{"String", " "}}, kSpace));

  // Model.
  Json model = m.type == SpModel::Type::bpe ? bpe_model(m, ps) : unigram_model(m, ps);

  Json post = post_processor(m, ps.bos);

  Json decoders = Json::array({replace_normalizer(Json{{"String", kSpace}}, " ")});
  if (m.byte_fallback) decoders.push_back(Json{{"type", "ByteFallback"}});
  decoders.push_back(Json{{"type", "Fuse"}});
  if (m.add_dummy_prefix)
    decoders.push_back(Json{{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});

  return Json{{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", std::move(ps.added)},
              {"normalizer", Json{{"type", "Sequence"}, {"normalizers", std::move(norms)}}},
              {"pre_tokenizer", nullptr},
              {"post_processor", std::move(post)},
              {"decoder", Json{{"type", "Sequence"}, {"decoders", std::move(decoders)}}},
              {"model", std::move(model)}};
}

}  // namespace deepthin::exports
