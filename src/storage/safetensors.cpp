#include "storage/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "util/error.h"
#include "util/fs.h"
#include "util/json_io.h"

namespace deepthin::storage {

namespace {

struct DtypeName {
  at::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {at::kFloat, "F32"}, {at::kBFloat16, "BF16"}, {at::kHalf, "F16"},  {at::kDouble, "F64"},
    {at::kLong, "I64"},  {at::kInt, "I32"},       {at::kShort, "I16"}, {at::kChar, "I8"},
    {at::kByte, "U8"},   {at::kBool, "BOOL"},
};

at::ScalarType parse_dtype(const std::string& name, const std::string& where) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  fail_input(where + ": unsupported safetensors dtype '" + name +
             "' (supported: F32, BF16, F16, F64, I64, I32, I16, I8, U8, BOOL)");
}

// A read-only mapping of a whole file, unmapped on scope exit.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path) {
    fd_ = ::open(path.c_str(), O_RDONLY);
    if (fd_ < 0) fail_input("cannot open " + path.string() + ": " + std::strerror(errno));
    struct stat st {};
    ::fstat(fd_, &st);
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (data_ == MAP_FAILED)
        fail_runtime("cannot map " + path.string() + ": " + std::strerror(errno));
    }
  }
  ~MappedFile() {
    if (data_ && data_ != MAP_FAILED) ::munmap(data_, size_);
    if (fd_ >= 0) ::close(fd_);
  }
  const uint8_t* data() const { return static_cast<const uint8_t*>(data_); }
  size_t size() const { return size_; }

 private:
  int fd_ = -1;
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

std::string safetensors_dtype(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  fail_input(std::string("cannot store dtype ") + c10::toString(t) + " in safetensors");
}

void save_safetensors(const std::filesystem::path& path, const TensorList& tensors,
                      const std::map<std::string, std::string>& metadata, std::string* sha256) {
  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::vector<at::Tensor> contiguous;
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (header.contains(name))
      fail_runtime("duplicate tensor name '" + name + "' in " + path.string());
    auto c = t.detach().to(at::kCPU).contiguous();
    Json shape = Json::array();
    for (auto s : c.sizes()) shape.push_back(static_cast<int64_t>(s));
    size_t bytes = c.nbytes();
    Json entry = Json::object();
    entry["dtype"] = safetensors_dtype(c.scalar_type());
    entry["shape"] = std::move(shape);
    entry["data_offsets"] =
        Json::array({static_cast<int64_t>(offset), static_cast<int64_t>(offset + bytes)});
    header[name] = std::move(entry);
    offset += bytes;
    contiguous.push_back(std::move(c));
  }
  std::string head = json::dump(header);
  while ((8 + head.size()) % 8 != 0) head += ' ';  // keep the data 8-byte aligned
  std::string prefix;
  const uint64_t n = head.size();
  for (int i = 0; i < 8; ++i) prefix += static_cast<char>((n >> (8 * i)) & 0xFF);
  prefix += head;
  std::vector<std::string_view> parts{prefix};
  for (const auto& c : contiguous)
    parts.emplace_back(static_cast<const char*>(c.data_ptr()), c.nbytes());
  std::string hex = write_file_atomic(path, parts, sha256 != nullptr);
  if (sha256) *sha256 = std::move(hex);
}

SafetensorsFile load_safetensors(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail_input("safetensors file not found: " + path.string());
  MappedFile file(path);
  const std::string where = path.string();
  if (file.size() < 8)
    fail_input(where + ": too short for a safetensors file (" + std::to_string(file.size()) +
               " bytes)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(file.data()[i]) << (8 * i);
  if (n > file.size() - 8 || n > (100u << 20))
    fail_input(where + ": header length " + std::to_string(n) + " does not fit the file's " +
               std::to_string(file.size()) + " bytes; not a safetensors file or truncated");
  Json header = json::parse(std::string_view(reinterpret_cast<const char*>(file.data()) + 8, n),
                            where + " (header)");
  if (!header.is_object()) fail_input(where + ": header is not a JSON object");
  const size_t data_start = 8 + n;
  const size_t data_size = file.size() - data_start;

  SafetensorsFile out;
  for (const auto& [name, entry] : json::as_object(header).items()) {
    if (name == "__metadata__") {
      for (const auto& [k, v] : json::as_object(entry, where + ": __metadata__").items())
        out.metadata[k] = v.is_string() ? json::as_string(v) : json::dump(v);
      continue;
    }
    const std::string what = where + ": tensor '" + name + "'";
    auto dtype =
        parse_dtype(json::as_string(json::at(entry, "dtype", what), what + " dtype"), what);
    std::vector<int64_t> shape;
    int64_t numel = 1;
    for (const auto& s : json::as_array(json::at(entry, "shape", what), what + " shape")) {
      int64_t d = json::as_int(s, what + " shape");
      if (d < 0) fail_input(what + ": negative dimension in shape");
      shape.push_back(d);
      if (__builtin_mul_overflow(numel, d, &numel))
        fail_input(what + ": its shape holds more than 2^63 elements");
    }
    const auto& offsets =
        json::as_array(json::at(entry, "data_offsets", what), what + " data_offsets");
    if (offsets.size() != 2) fail_input(what + ": data_offsets must hold two numbers");
    int64_t begin = json::as_int(offsets[0], what), end = json::as_int(offsets[1], what);
    int64_t expected = 0;
    if (__builtin_mul_overflow(numel, static_cast<int64_t>(c10::elementSize(dtype)), &expected))
      fail_input(what + ": its shape holds more than 2^63 bytes");
    if (begin < 0 || end < begin || end - begin != expected)
      fail_input(what + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                 "] do not match its shape and dtype (" + std::to_string(expected) + " bytes)");
    if (static_cast<size_t>(end) > data_size)
      fail_input(what + ": data ends at byte " + std::to_string(end) + " but the file holds only " +
                 std::to_string(data_size) + " bytes of data; the file is truncated");
    auto t = at::empty(shape, at::TensorOptions().dtype(dtype));
    if (expected > 0)
      std::memcpy(t.data_ptr(), file.data() + data_start + begin, static_cast<size_t>(expected));
    out.tensors.emplace_back(name, std::move(t));
  }
  return out;
}

}  // namespace deepthin::storage
