// The teacher's top-k cache (kd_cache.h): writing it with the teacher, reading it per batch.
#include "train/kd_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>

#include "data/shard.h"
#include "train/precision.h"
#include "train/teacher.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json_io.h"
#include "util/log.h"
#include "util/paths.h"

namespace deepthin::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "deepthin-kd-topk";
constexpr int64_t kVersion = 1;

OutputKind cache_output() {
  OutputKind k;
  k.name = "a distillation cache";
  k.directory = true;
  k.entries = {"kd_cache.json", "*.ids", "*.logp"};
  k.required = "kd_cache.json";
  return k;
}

void write_all(std::ofstream& f, const at::Tensor& t, const fs::path& path) {
  auto c = t.contiguous();
  f.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
  if (!f) fail_runtime("cannot write " + path.string() + ": " + std::strerror(errno));
}

// One source's windows through the teacher, batch by batch, into <i>.ids and <i>.logp.
struct SourceWriter {
  const data::TokenDataset& ds;
  int64_t seq_len, k, batch;
  at::ScalarType id_type;
  Teacher& teacher;
  at::Tensor head;  // the teacher's output weight, fp32 on its device

  int64_t write(const fs::path& ids_path, const fs::path& logp_path,
                const std::function<void(int64_t windows, int64_t bytes)>& done) {
    std::ofstream ids(ids_path, std::ios::binary), logp(logp_path, std::ios::binary);
    if (!ids || !logp) fail_runtime("cannot create " + ids_path.string());
    const int64_t n = ds.num_windows(seq_len);
    std::vector<int64_t> buf(static_cast<size_t>(batch * (seq_len + 1)));
    int64_t bytes = 0;
    for (int64_t w0 = 0; w0 < n; w0 += batch) {
      const int64_t b = std::min(batch, n - w0);
      for (int64_t i = 0; i < b; ++i)
        ds.read_window(w0 + i, seq_len, buf.data() + i * (seq_len + 1));
      auto tokens = at::from_blob(buf.data(), {b, seq_len + 1}, at::kLong);
      auto top = teacher_topk(tokens.narrow(1, 0, seq_len));
      auto top_ids = std::get<1>(top).to(at::kCPU).to(id_type);
      auto top_logp = std::get<0>(top).to(at::kCPU).to(at::kHalf);
      write_all(ids, top_ids, ids_path);
      write_all(logp, top_logp, logp_path);
      bytes += static_cast<int64_t>(top_ids.nbytes() + top_logp.nbytes());
      done(b, bytes);
    }
    ids.close();
    logp.close();
    if (!ids || !logp) fail_runtime("cannot write " + ids_path.string());
    return bytes;
  }

  // The teacher's k most likely tokens and their log-probabilities at each position.
  std::tuple<at::Tensor, at::Tensor> teacher_topk(const at::Tensor& input) {
    torch::NoGradGuard no_grad;
    auto h = teacher.model->hidden_states(input.to(teacher.device));
    auto logits = at::matmul(h.to(at::kFloat), head.t());
    return at::topk(at::log_softmax(logits, -1), k, -1);
  }
};

Json read_manifest(const fs::path& dir) {
  const fs::path m = dir / "kd_cache.json";
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail_input("kd.cache " + dir.string() +
               " is not a directory (write one with deepthin kd cache)");
  if (!fs::exists(m, ec))
    fail_input("kd.cache " + dir.string() +
               " has no kd_cache.json: not a cache written by deepthin kd cache");
  Json j = json::parse(read_file(m, "kd_cache.json"));
  if (json::as_string(json::at(j, "format", "kd_cache.json")) != kFormat ||
      json::as_int(json::at(j, "version", "kd_cache.json")) != kVersion)
    fail_input(m.string() + " is not a deepthin top-k cache of version " +
               std::to_string(kVersion));
  return j;
}

int open_read(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_input("cannot open " + p.string() + ": " + std::strerror(errno));
  return fd;
}

void read_at(int fd, void* dst, size_t n, int64_t offset, const fs::path& what) {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (got <= 0)
      fail_runtime("cannot read " + what.string() + " at byte " + std::to_string(offset) +
                   (got == 0 ? ": the file is shorter than kd_cache.json says"
                             : std::string(": ") + std::strerror(errno)));
    p += got;
    n -= static_cast<size_t>(got);
    offset += got;
  }
}

}  // namespace

KdCacheStats write_kd_cache(const config::Config& cfg, const fs::path& out, int64_t k,
                            int64_t batch, const c10::Device& device, bool force,
                            const std::function<void(const KdCacheProgress&)>& progress) {
  if (cfg.kd.teacher.empty()) fail_input("deepthin kd cache needs kd.teacher: the model to cache");
  const int64_t V = cfg.model.vocab_size, T = cfg.train.seq_len;
  if (k < 1 || k > V)
    fail_input("--k must be between 1 and the vocabulary (" + std::to_string(V) + "); got " +
               std::to_string(k));
  const auto sources = config::data_sources(cfg.data);
  OutputRules rules{"deepthin kd cache", "--out", force, {cfg.kd.teacher}};
  for (const auto& s : sources) rules.inputs.push_back(s.path);
  check_output(out, cache_output(), rules);

  Teacher teacher = load_teacher(cfg, device);
  const auto id_type = V <= 65536 ? at::kShort : at::kInt;
  const at::Tensor head = teacher.model->output_weight().detach().to(at::kFloat);
  std::vector<std::shared_ptr<data::TokenDataset>> datasets;
  KdCacheProgress p;
  for (const auto& s : sources) {
    datasets.push_back(data::TokenDataset::open(s.path, "train"));
    datasets.back()->check_vocab(V, "model.vocab_size");
    p.total_windows += datasets.back()->num_windows(T);
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  AtomicDir dir(out);
  Json src = Json::array();
  for (size_t i = 0; i < sources.size(); ++i) {
    SourceWriter sw{*datasets[i], T, k, batch, id_type, teacher, head};
    const int64_t before = p.bytes;
    sw.write(dir.path() / (std::to_string(i) + ".ids"), dir.path() / (std::to_string(i) + ".logp"),
             [&](int64_t windows, int64_t bytes) {
               p.windows += windows;
               p.bytes = before + bytes;
               p.seconds = seconds();
               if (progress) progress(p);
             });
    Json s = Json::object();
    s["name"] = sources[i].name;
    s["path"] = sources[i].path;
    s["windows"] = datasets[i]->num_windows(T);
    s["tokens"] = datasets[i]->total_tokens();
    src.push_back(s);
  }
  Json m = Json::object();
  m["format"] = kFormat;
  m["version"] = kVersion;
  m["k"] = k;
  m["vocab_size"] = V;
  m["seq_len"] = T;
  m["id_bytes"] = V <= 65536 ? 2 : 4;
  m["teacher"] = teacher.dir;
  m["sources"] = src;
  write_file_atomic(dir.path() / "kd_cache.json", json::dump(m, 2) + "\n");
  dir.commit();
  KdCacheStats st;
  st.windows = p.windows;
  st.tokens = p.windows * T;
  st.bytes = p.bytes;
  st.seconds = seconds();
  return st;
}

KdCache::KdCache(const fs::path& dir, const config::Config& cfg,
                 const std::vector<std::shared_ptr<data::TokenDataset>>& train)
    : dir_(dir) {
  const Json m = read_manifest(dir);
  const std::string where = (dir / "kd_cache.json").string();
  k_ = json::as_int(json::at(m, "k", where));
  seq_len_ = json::as_int(json::at(m, "seq_len", where));
  id_bytes_ = json::as_int(json::at(m, "id_bytes", where));
  teacher_ = json::as_string(json::at(m, "teacher", where));
  const int64_t V = json::as_int(json::at(m, "vocab_size", where));
  if (V != cfg.model.vocab_size)
    fail_input("kd.cache " + dir.string() + " holds a teacher of " + std::to_string(V) +
               " tokens, the student has model.vocab_size " + std::to_string(cfg.model.vocab_size));
  if (seq_len_ != cfg.train.seq_len)
    fail_input("kd.cache " + dir.string() + " was written for train.seq_len " +
               std::to_string(seq_len_) + ", this run has " + std::to_string(cfg.train.seq_len) +
               ": its windows would not line up");
  const auto sources = config::data_sources(cfg.data);
  const Json& cached = json::at(m, "sources", where);
  if (cached.size() != sources.size())
    fail_input("kd.cache " + dir.string() + " holds " + std::to_string(cached.size()) +
               " data sources, this run reads " + std::to_string(sources.size()));
  for (size_t i = 0; i < sources.size(); ++i) {
    const Json& c = cached[i];
    const std::string name = json::as_string(json::at(c, "name", where));
    const std::string label = sources[i].name.empty() ? "data.path" : "source " + sources[i].name;
    const auto& ds = train.at(i);
    const int64_t windows = json::as_int(json::at(c, "windows", where));
    const int64_t tokens = json::as_int(json::at(c, "tokens", where));
    if (name != sources[i].name || windows != ds->num_windows(seq_len_) ||
        tokens != ds->total_tokens())
      fail_input("kd.cache " + dir.string() + " was written for other data: its source " +
                 std::to_string(i + 1) + " is '" + name + "' with " + std::to_string(tokens) +
                 " tokens, this run's " + label + " (" + sources[i].path + ") has " +
                 std::to_string(ds->total_tokens()) + "; write the cache again");
    const auto ids = dir / (std::to_string(i) + ".ids");
    const auto logp = dir / (std::to_string(i) + ".logp");
    const auto per_window = static_cast<uintmax_t>(seq_len_ * k_);
    std::error_code ec;
    if (fs::file_size(ids, ec) != per_window * windows * id_bytes_ ||
        fs::file_size(logp, ec) != per_window * windows * 2)
      fail_input("kd.cache " + dir.string() + ": " + ids.filename().string() + " or " +
                 logp.filename().string() + " does not have the size kd_cache.json implies");
    ids_fd_.push_back(open_read(ids));
    logp_fd_.push_back(open_read(logp));
    windows_.push_back(windows);
  }
}

KdCache::~KdCache() {
  for (int fd : ids_fd_) ::close(fd);
  for (int fd : logp_fd_) ::close(fd);
}

std::string KdCache::describe() const {
  return dir_.string() + " (top " + std::to_string(k_) + " of teacher " + teacher_ + ", " +
         std::to_string(k_ * (id_bytes_ + 2)) + " bytes a token)";
}

KdCacheRows KdCache::rows(const std::vector<int>& sources,
                          const std::vector<int64_t>& windows) const {
  const auto B = static_cast<int64_t>(windows.size());
  const int64_t per = seq_len_ * k_;
  auto ids = at::empty({B, seq_len_, k_}, id_bytes_ == 2 ? at::kShort : at::kInt);
  auto logp = at::empty({B, seq_len_, k_}, at::kHalf);
  for (int64_t b = 0; b < B; ++b) {
    const int s = sources.at(static_cast<size_t>(b));
    const int64_t w = windows[static_cast<size_t>(b)];
    if (s < 0 || s >= static_cast<int>(windows_.size()) || w < 0 || w >= windows_[s])
      fail_runtime("kd.cache: window " + std::to_string(w) + " of source " + std::to_string(s) +
                   " is not in the cache");
    read_at(ids_fd_[s], static_cast<char*>(ids.data_ptr()) + b * per * id_bytes_,
            static_cast<size_t>(per * id_bytes_), w * per * id_bytes_,
            dir_ / (std::to_string(s) + ".ids"));
    read_at(logp_fd_[s], static_cast<char*>(logp.data_ptr()) + b * per * 2,
            static_cast<size_t>(per * 2), w * per * 2, dir_ / (std::to_string(s) + ".logp"));
  }
  // uint16 ids were stored as int16: the ids above 32767 wrap, and come back with & 0xffff.
  auto id64 = ids.to(at::kLong);
  if (id_bytes_ == 2) id64 = at::bitwise_and(id64, 0xffff);
  return {id64, logp.to(at::kFloat)};
}

}  // namespace deepthin::train
