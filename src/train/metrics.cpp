// The metrics window, metrics.jsonl (trimmed to the checkpoint on resume) and the TensorBoard event
// writer (metrics.h).
#include "train/metrics.h"

#include <unistd.h>

#include <chrono>
#include <sstream>
#include <vector>

#include "util/error.h"
#include "util/fs.h"

namespace deepthin::train {

void MetricsWindow::add(int64_t step_tokens, bool applied, double loss, double ce, double kd) {
  tokens_ += step_tokens;
  ++steps_;
  if (applied) loss_ += loss;
  ce_ += ce;
  kd_ += kd;
}

void MetricsWindow::reset() {
  start_ = Clock::now();
  tokens_ = steps_ = 0;
  loss_ = ce_ = kd_ = 0;
}

uint32_t crc32c(const void* data, size_t n) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

namespace {

uint32_t masked_crc(const void* data, size_t n) {
  uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  s += static_cast<char>(v);
}
template <class T>
void put_fixed(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);  // little-endian hosts
}
void put_bytes(std::string& s, int field, const std::string& b) {
  put_varint(s, (static_cast<uint64_t>(field) << 3) | 2);
  put_varint(s, b.size());
  s += b;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
std::string event(int64_t step, const std::string* file_version, const std::string* summary) {
  std::string e;
  put_varint(e, (1 << 3) | 1);
  put_fixed<double>(e, now_seconds());
  put_varint(e, (2 << 3) | 0);
  put_varint(e, static_cast<uint64_t>(step));
  if (file_version) put_bytes(e, 3, *file_version);
  if (summary) put_bytes(e, 5, *summary);
  return e;
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  char host[256] = "host";
  ::gethostname(host, sizeof host - 1);
  auto path = dir / ("events.out.tfevents." + std::to_string(static_cast<int64_t>(now_seconds())) +
                     "." + host + "." + std::to_string(::getpid()));
  out_.open(path, std::ios::binary);
  if (!out_) fail_runtime("cannot write " + path.string());
  std::string version = "brain.Event:2";
  record(event(0, &version, nullptr));
}

void TensorBoardWriter::record(const std::string& data) {
  std::string r;
  put_fixed<uint64_t>(r, data.size());
  put_fixed<uint32_t>(r, masked_crc(r.data(), 8));
  r += data;
  put_fixed<uint32_t>(r, masked_crc(data.data(), data.size()));
  out_.write(r.data(), static_cast<std::streamsize>(r.size()));
}

void TensorBoardWriter::scalar(const std::string& tag, double value, int64_t step) {
  // Summary { repeated Value value = 1; }  Value { string tag = 1; float simple_value = 2; }
  std::string v;
  put_bytes(v, 1, tag);
  put_varint(v, (2 << 3) | 5);
  put_fixed<float>(v, static_cast<float>(value));
  std::string summary;
  put_bytes(summary, 1, v);
  record(event(step, nullptr, &summary));
}

void TensorBoardWriter::flush() {
  out_.flush();
}

MetricsLog::MetricsLog(const std::filesystem::path& run_dir, bool tensorboard,
                       int64_t resume_step) {
  auto path = run_dir / "metrics.jsonl";
  if (resume_step >= 0 && std::filesystem::exists(path)) {
    std::istringstream in(read_file(path));
    std::string line, kept;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      try {
        const Json row = json::parse(line);  // kept: find() points into it
        const Json* s = json::find(row, "step");
        if (s && json::as_int(*s) > resume_step) continue;
      } catch (const Error&) {
        continue;  // a torn last line from a killed run
      }
      kept += line + "\n";
    }
    write_file_atomic(path, kept);
  }
  out_.open(path, std::ios::app);
  if (!out_) fail_runtime("cannot write " + path.string());
  if (tensorboard) tb_ = std::make_unique<TensorBoardWriter>(run_dir / "tensorboard");
}

void MetricsLog::write(const Json& record) {
  out_ << json::dump(record) << "\n";
  out_.flush();
  if (!tb_) return;
  const Json* step = json::find(record, "step");
  const Json* type = json::find(record, "type");
  if (!step || !type) return;
  for (const auto& [k, v] : json::as_object(record).items()) {
    if (k == "step" || k == "type" || !v.is_number()) continue;
    tb_->scalar(json::as_string(*type) + "/" + k, json::as_double(v), json::as_int(*step));
  }
  tb_->flush();
}

void MetricsLog::flush() {
  out_.flush();
  if (tb_) tb_->flush();
}

}  // namespace deepthin::train
