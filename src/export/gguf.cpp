#include "export/gguf.h"

#include <ATen/ATen.h>
#include <c10/util/Half.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "data/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"

namespace deepthin::exports {

namespace {

constexpr uint32_t kAlignment = 32;
constexpr int64_t kBlock = 32;

// Each type's name, ggml type id and llama.cpp general.file_type value.
struct TypeInfo {
  GgufType type;
  const char* name;
  uint32_t ggml_id, file_type;
};
constexpr TypeInfo kTypes[] = {{GgufType::f32, "f32", 0, 0},
                               {GgufType::f16, "f16", 1, 1},
                               {GgufType::bf16, "bf16", 30, 32},
                               {GgufType::q8_0, "q8_0", 8, 7},
                               {GgufType::q4_0, "q4_0", 2, 2}};
const TypeInfo& info(GgufType t) {
  for (const auto& i : kTypes)
    if (i.type == t) return i;
  return kTypes[0];
}
uint32_t ggml_type_id(GgufType t) {
  return info(t).ggml_id;
}
uint32_t file_type_id(GgufType t) {
  return info(t).file_type;
}

// GGUF value types.
enum : uint32_t {
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
};

// Little-endian serialisation into a byte buffer.
class Bytes {
 public:
  template <typename T>
  void put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    buf_.insert(buf_.end(), p, p + sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    buf_.insert(buf_.end(), s.begin(), s.end());
  }
  const std::vector<uint8_t>& data() const { return buf_; }

 private:
  std::vector<uint8_t> buf_;
};

// The metadata section: key/value pairs and their count.
class Metadata {
 public:
  void u32(const std::string& k, uint32_t v) { head(k, kU32).put(v); }
  void f32(const std::string& k, float v) { head(k, kF32).put(v); }
  void boolean(const std::string& k, bool v) { head(k, kBool).put<uint8_t>(v ? 1 : 0); }
  void str(const std::string& k, const std::string& v) { head(k, kString).str(v); }
  void strings(const std::string& k, const std::vector<std::string>& v) {
    array_head(k, kString, v.size());
    for (const auto& s : v) b_.str(s);
  }
  void f32s(const std::string& k, const std::vector<float>& v) {
    array_head(k, kF32, v.size());
    for (float x : v) b_.put(x);
  }
  void i32s(const std::string& k, const std::vector<int32_t>& v) {
    array_head(k, kI32, v.size());
    for (int32_t x : v) b_.put(x);
  }
  uint64_t count() const { return n_; }
  const std::vector<uint8_t>& data() const { return b_.data(); }

 private:
  Bytes& head(const std::string& k, uint32_t type) {
    ++n_;
    b_.str(k);
    b_.put(type);
    return b_;
  }
  void array_head(const std::string& k, uint32_t elem, uint64_t n) {
    head(k, kArray).put(elem);
    b_.put(n);
  }
  Bytes b_;
  uint64_t n_ = 0;
};

uint16_t to_half_bits(float v) {
  return c10::Half(v).x;
}
float from_half_bits(uint16_t b) {
  return static_cast<float>(c10::Half(b, c10::Half::from_bits()));
}

// Rows of a q_proj / k_proj weight [heads · hd, in] reordered per head from rotate-half pairs
// (i, i + hd/2) to adjacent pairs (2i, 2i + 1).
at::Tensor interleave_rope_rows(const at::Tensor& w, int64_t heads) {
  const int64_t hd = w.size(0) / heads;
  return w.reshape({heads, 2, hd / 2, w.size(1)}).transpose(1, 2).reshape(w.sizes()).contiguous();
}

// A tensor's bytes in a GGUF type.
std::vector<uint8_t> encode(const at::Tensor& t, GgufType type) {
  auto f = t.to(at::kFloat).contiguous();
  const int64_t n = f.numel();
  const float* p = f.data_ptr<float>();
  std::vector<uint8_t> out;
  auto raw = [&](const at::Tensor& x) {
    auto c = x.contiguous();
    const auto* b = static_cast<const uint8_t*>(c.data_ptr());
    out.assign(b, b + c.numel() * c.element_size());
  };
  switch (type) {
    case GgufType::f32:
      raw(f);
      break;
    case GgufType::f16:
      raw(f.to(at::kHalf));
      break;
    case GgufType::bf16:
      raw(f.to(at::kBFloat16));
      break;
    case GgufType::q8_0:
      out = quantize_q8_0(p, n);
      break;
    case GgufType::q4_0:
      out = quantize_q4_0(p, n);
      break;
  }
  return out;
}

int32_t llama_token_type(data::Tokenizer::PieceType t) {
  using P = data::Tokenizer::PieceType;
  switch (t) {
    case P::normal:
      return 1;
    case P::unknown:
      return 2;
    case P::control:
      return 3;
    case P::unused:
      return 5;
    case P::byte:
      return 6;
  }
  return 1;
}

// tokenizer.ggml.*: every piece with its score and type; ids past the tokenizer's pieces (a
// vocabulary padded for the embedding) become unused tokens.
void add_tokenizer(Metadata& md, const std::filesystem::path& path, int64_t vocab) {
  auto tok = data::Tokenizer::load(path);
  if (tok.vocab_size() > vocab)
    fail_input("tokenizer " + path.string() + " has " + std::to_string(tok.vocab_size()) +
               " pieces but the model's vocabulary is " + std::to_string(vocab) +
               " (model.vocab_size): the ids would not fit the embedding");
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (int64_t id = 0; id < vocab; ++id) {
    if (id < tok.vocab_size()) {
      const auto i = static_cast<int32_t>(id);
      pieces.push_back(tok.piece(i));
      scores.push_back(tok.score(i));
      types.push_back(llama_token_type(tok.piece_type(i)));
    } else {
      pieces.push_back("<unused" + std::to_string(id) + ">");
      scores.push_back(-1e9f);
      types.push_back(5);
    }
  }
  md.str("tokenizer.ggml.model", "llama");
  md.strings("tokenizer.ggml.tokens", pieces);
  md.f32s("tokenizer.ggml.scores", scores);
  md.i32s("tokenizer.ggml.token_type", types);
  md.u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(tok.bos_id()));
  md.u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(tok.eos_id()));
  md.u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(tok.unk_id()));
  md.boolean("tokenizer.ggml.add_bos_token", true);
  md.boolean("tokenizer.ggml.add_eos_token", false);
  md.boolean("tokenizer.ggml.add_space_prefix", tok.adds_space_prefix());
}

void write_all(std::FILE* f, const void* p, size_t n, const std::filesystem::path& path) {
  if (n && std::fwrite(p, 1, n, f) != n)
    fail_runtime("writing " + path.string() + " failed (disk full?)");
}

}  // namespace

GgufType parse_gguf_type(const std::string& name) {
  for (const auto& i : kTypes)
    if (name == i.name) return i.type;
  fail_input("unknown GGUF quantization '" + name + "'; expected f32, f16, bf16, q8_0 or q4_0");
}

const char* gguf_type_name(GgufType t) {
  return info(t).name;
}

void check_gguf_expressible(const config::ModelConfig& m, GgufType type) {
  if (m.norm.type != config::NormType::rmsnorm)
    fail_input(
        "model.norm.type is layernorm: llama.cpp's llama architecture has RMSNorm only (no bias), "
        "so GGUF cannot express this model");
  if (m.ffn.type != config::FfnType::swiglu)
    fail_input("model.ffn.type is " + std::string(config::kFfnTypes[static_cast<int>(m.ffn.type)]) +
               ": llama.cpp's llama architecture runs a SwiGLU feed-forward (gate, up, down), so "
               "GGUF cannot express a plain one");
  if (type == GgufType::q8_0 || type == GgufType::q4_0) {
    auto need = [&](int64_t v, const char* key) {
      if (v % kBlock != 0)
        fail_input(std::string(key) + " is " + std::to_string(v) + ": " + gguf_type_name(type) +
                   " quantizes rows in blocks of 32, so it must be a multiple of 32 (use f16, bf16 "
                   "or f32)");
    };
    need(m.dim, "model.dim");
    need(m.ffn.hidden_dim, "model.ffn.hidden_dim");
    need(m.q_dim(), "model.n_heads × model.head_dim");
  }
}

std::vector<uint8_t> quantize_q8_0(const float* x, int64_t n) {
  std::vector<uint8_t> out(static_cast<size_t>(n / kBlock) * 34);
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const float* v = x + b * kBlock;
    float amax = 0;
    for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(v[j]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    uint8_t* o = out.data() + b * 34;
    const uint16_t h = to_half_bits(d);
    std::memcpy(o, &h, 2);
    for (int j = 0; j < kBlock; ++j)
      o[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(v[j] * id)));
  }
  return out;
}

std::vector<uint8_t> quantize_q4_0(const float* x, int64_t n) {
  std::vector<uint8_t> out(static_cast<size_t>(n / kBlock) * 18);
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const float* v = x + b * kBlock;
    // The scale maps the element of largest magnitude (sign kept) to −8.
    float amax = 0, max = 0;
    for (int j = 0; j < kBlock; ++j)
      if (std::fabs(v[j]) > amax) {
        amax = std::fabs(v[j]);
        max = v[j];
      }
    const float d = max / -8.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    uint8_t* o = out.data() + b * 18;
    const uint16_t h = to_half_bits(d);
    std::memcpy(o, &h, 2);
    auto q = [&](float e) {
      return static_cast<uint8_t>(
          std::min(15, static_cast<int>(static_cast<int8_t>(e * id + 8.5f))));
    };
    for (int j = 0; j < kBlock / 2; ++j)
      o[2 + j] = static_cast<uint8_t>(q(v[j]) | (q(v[j + kBlock / 2]) << 4));
  }
  return out;
}

std::vector<float> dequantize_q8_0(const uint8_t* data, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const uint8_t* o = data + b * 34;
    uint16_t h;
    std::memcpy(&h, o, 2);
    const float d = from_half_bits(h);
    for (int j = 0; j < kBlock; ++j) out[b * kBlock + j] = d * static_cast<int8_t>(o[2 + j]);
  }
  return out;
}

std::vector<float> dequantize_q4_0(const uint8_t* data, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const uint8_t* o = data + b * 18;
    uint16_t h;
    std::memcpy(&h, o, 2);
    const float d = from_half_bits(h);
    for (int j = 0; j < kBlock / 2; ++j) {
      out[b * kBlock + j] = d * static_cast<float>((o[2 + j] & 0x0F) - 8);
      out[b * kBlock + j + kBlock / 2] = d * static_cast<float>((o[2 + j] >> 4) - 8);
    }
  }
  return out;
}

OutputKind gguf_output() {
  return {"a GGUF file", false, {}, "", [](const std::filesystem::path& p) {
            return read_prefix(p, 4) == "GGUF";
          }};
}

namespace {

// The metadata: llama architecture and hyper-parameters, then the tokenizer.
Metadata model_metadata(const config::ModelConfig& m, GgufType type, size_t block_count,
                        const std::filesystem::path& tokenizer, const std::string& name) {
  const bool quantized = type == GgufType::q8_0 || type == GgufType::q4_0;
  Metadata md;
  md.str("general.architecture", "llama");
  md.str("general.name", name);
  md.u32("general.alignment", kAlignment);
  md.u32("general.file_type", file_type_id(type));
  if (quantized) md.u32("general.quantization_version", 2);
  md.u32("llama.vocab_size", static_cast<uint32_t>(m.vocab_size));
  md.u32("llama.context_length", static_cast<uint32_t>(m.max_seq_len));
  md.u32("llama.embedding_length", static_cast<uint32_t>(m.dim));
  md.u32("llama.block_count", static_cast<uint32_t>(block_count));
  md.u32("llama.feed_forward_length", static_cast<uint32_t>(m.ffn.hidden_dim));
  md.u32("llama.attention.head_count", static_cast<uint32_t>(m.n_heads));
  md.u32("llama.attention.head_count_kv", static_cast<uint32_t>(m.n_kv_heads));
  md.u32("llama.attention.key_length", static_cast<uint32_t>(m.head_dim));
  md.u32("llama.attention.value_length", static_cast<uint32_t>(m.head_dim));
  md.u32("llama.rope.dimension_count", static_cast<uint32_t>(m.head_dim));
  md.f32("llama.rope.freq_base", static_cast<float>(m.rope.theta));
  md.f32("llama.attention.layer_norm_rms_epsilon", static_cast<float>(m.norm.eps));
  add_tokenizer(md, tokenizer, m.vocab_size);
  return md;
}

// One tensor of the file: its info and its encoded bytes.
struct Entry {
  GgufTensorInfo info;
  std::vector<uint8_t> data;
};

// The tensors, in llama.cpp's names and order, each block of the schedule written out.
std::vector<Entry> gguf_tensors(const storage::LoadedModel& model, GgufType type,
                                const std::vector<int64_t>& schedule) {
  const auto& m = model.config.model;
  auto params = model.model->named_parameters(/*recurse=*/true);
  auto get = [&](const std::string& hf) { return params[hf].detach().cpu(); };
  std::vector<Entry> entries;
  auto add = [&](const std::string& gname, const at::Tensor& t, GgufType ty) {
    Entry e;
    e.info.name = gname;
    for (int64_t d = t.dim() - 1; d >= 0; --d) e.info.dims.push_back(t.size(d));
    e.info.type = ty;
    e.data = encode(t, ty);
    e.info.bytes = static_cast<int64_t>(e.data.size());
    entries.push_back(std::move(e));
  };
  // Matrices in the asked-for type; with q4_0 the embedding and output keep q8_0.
  const GgufType outer = type == GgufType::q4_0 ? GgufType::q8_0 : type;
  add("token_embd.weight", get("model.embed_tokens.weight"), outer);
  for (size_t e = 0; e < schedule.size(); ++e) {
    const std::string src = "model.layers." + std::to_string(schedule[e]) + ".";
    const std::string dst = "blk." + std::to_string(e) + ".";
    add(dst + "attn_norm.weight", get(src + "input_layernorm.weight"), GgufType::f32);
    add(dst + "attn_q.weight",
        interleave_rope_rows(get(src + "self_attn.q_proj.weight"), m.n_heads), type);
    add(dst + "attn_k.weight",
        interleave_rope_rows(get(src + "self_attn.k_proj.weight"), m.n_kv_heads), type);
    add(dst + "attn_v.weight", get(src + "self_attn.v_proj.weight"), type);
    add(dst + "attn_output.weight", get(src + "self_attn.o_proj.weight"), type);
    add(dst + "ffn_norm.weight", get(src + "post_attention_layernorm.weight"), GgufType::f32);
    add(dst + "ffn_gate.weight", get(src + "mlp.gate_proj.weight"), type);
    add(dst + "ffn_up.weight", get(src + "mlp.up_proj.weight"), type);
    add(dst + "ffn_down.weight", get(src + "mlp.down_proj.weight"), type);
  }
  add("output_norm.weight", get("model.norm.weight"), GgufType::f32);
  if (!m.tie_embeddings) add("output.weight", get("lm_head.weight"), outer);
  return entries;
}

// v rounded up to the file's alignment.
uint64_t align_up(uint64_t v) {
  return (v + kAlignment - 1) / kAlignment * kAlignment;
}

// Tensor infos with their aligned offsets.
Bytes tensor_infos(const std::vector<Entry>& entries) {
  Bytes infos;
  uint64_t offset = 0;
  for (const auto& e : entries) {
    infos.str(e.info.name);
    infos.put<uint32_t>(static_cast<uint32_t>(e.info.dims.size()));
    for (int64_t d : e.info.dims) infos.put<uint64_t>(static_cast<uint64_t>(d));
    infos.put<uint32_t>(ggml_type_id(e.info.type));
    infos.put<uint64_t>(offset);
    offset = align_up(offset + e.data.size());
  }
  return infos;
}

// Writes the file atomically (temporary file, fsync, rename): header, metadata, tensor infos, then
// the tensors, each aligned. Fills the report's tensors and file size.
void write_file(const std::filesystem::path& out, const Metadata& md, const Bytes& infos,
                const std::vector<Entry>& entries, GgufReport& report) {
  const auto tmp =
      out.parent_path() / (out.filename().string() + ".tmp." + std::to_string(getpid()));
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail_input("cannot write " + tmp.string() + ": " + std::strerror(errno));
  try {
    Bytes head;
    head.put<uint32_t>(0x46554747);  // "GGUF"
    head.put<uint32_t>(3);
    head.put<uint64_t>(entries.size());
    head.put<uint64_t>(md.count());
    uint64_t pos = 0;
    auto emit = [&](const void* p, size_t n) {
      write_all(f, p, n, tmp);
      pos += n;
    };
    emit(head.data().data(), head.data().size());
    emit(md.data().data(), md.data().size());
    emit(infos.data().data(), infos.data().size());
    const std::vector<uint8_t> zeros(kAlignment, 0);
    emit(zeros.data(), align_up(pos) - pos);
    for (const auto& e : entries) {
      emit(e.data.data(), e.data.size());
      emit(zeros.data(), align_up(pos) - pos);
      report.tensors.push_back(e.info);
    }
    if (std::fflush(f) != 0 || fsync(fileno(f)) != 0)
      fail_runtime("writing " + tmp.string() + " failed: " + std::strerror(errno));
    std::fclose(f);
    f = nullptr;
    std::filesystem::rename(tmp, out);
    report.file_bytes = static_cast<int64_t>(pos);
  } catch (...) {
    if (f) std::fclose(f);
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

}  // namespace

GgufReport write_gguf(const std::filesystem::path& out, const storage::LoadedModel& model,
                      const std::filesystem::path& tokenizer, GgufType type,
                      const std::string& name) {
  const auto& m = model.config.model;
  check_gguf_expressible(m, type);
  const auto schedule = m.layer_schedule();
  const Metadata md = model_metadata(m, type, schedule.size(), tokenizer, name);
  const std::vector<Entry> entries = gguf_tensors(model, type, schedule);
  const Bytes infos = tensor_infos(entries);
  GgufReport report;
  write_file(out, md, infos, entries, report);
  report.block_count = static_cast<int64_t>(schedule.size());
  report.physical_layers = m.n_layers;
  return report;
}

}  // namespace deepthin::exports
