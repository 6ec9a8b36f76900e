// Checkpoint directories (layout in checkpoint.h): atomic writes with checksums, verification and
// fallback on load, pruning, stale temporaries, trainer state as JSON and the CPU generator's
// state.
#include "train/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <future>
#include <map>
#include <regex>

#include "storage/model_dir.h"
#include "train/device_info.h"
#include "util/error.h"
#include "util/fault.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/strings.h"

namespace deepthin::train {

namespace fs = std::filesystem;

namespace {

at::Tensor from_hex(const std::string& s) {
  auto t = at::empty({static_cast<int64_t>(s.size() / 2)}, at::kByte);
  uint8_t* p = t.data_ptr<uint8_t>();
  auto nib = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (size_t i = 0; i + 1 < s.size(); i += 2)
    p[i / 2] = static_cast<uint8_t>(nib(s[i]) << 4 | nib(s[i + 1]));
  return t;
}

}  // namespace

void capture_cpu_rng(TrainerState& state) {
  auto bytes = at::detail::getDefaultCPUGenerator().get_state().contiguous();
  state.cpu_rng = hex_encode(bytes.data_ptr<uint8_t>(), static_cast<size_t>(bytes.numel()));
}

void restore_cpu_rng(const TrainerState& state) {
  if (state.cpu_rng.empty()) return;
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  gen.set_state(from_hex(state.cpu_rng));
}

Json TrainerState::to_json() const {
  Json j = Json::object();
  j["step"] = step;
  j["tokens"] = tokens;
  j["loader"] = loader.to_json();
  j["elapsed_s"] = elapsed_s;
  j["cpu_rng"] = cpu_rng;
  j["cuda_rng"] = cuda_rng;
  return j;
}

TrainerState TrainerState::from_json(const Json& j, const std::string& where) {
  TrainerState s;
  s.step = json::as_int(json::at(j, "step", where), where + ": step");
  s.tokens = json::as_int(json::at(j, "tokens", where), where + ": tokens");
  s.loader = data::LoaderState::from_json(json::at(j, "loader", where), where + ": loader");
  s.elapsed_s = json::as_double(json::at(j, "elapsed_s", where));
  s.cpu_rng = json::as_string(json::at(j, "cpu_rng", where));
  s.cuda_rng = json::as_string(json::at(j, "cuda_rng", where));
  return s;
}

HostStaging::Layout HostStaging::layout_of(
    const std::vector<const storage::TensorList*>& lists,
    const std::vector<std::optional<at::ScalarType>>& dtypes) {
  Layout l;
  for (size_t i = 0; i < lists.size(); ++i)
    for (const auto& [name, t] : *lists[i]) {
      const at::ScalarType dt = dtypes[i].value_or(t.scalar_type());
      l.shapes.emplace_back(t.sizes().vec(), dt);
      l.bytes += (t.numel() * static_cast<int64_t>(at::elementSize(dt)) + 63) / 64 * 64;
    }
  return l;
}

void HostStaging::ensure(const c10::Device& device, const Layout& l) {
  if (block_.defined() && device_ == device && layout_ == l) return;
  views_.clear();
  block_ = at::Tensor();  // the old block goes before the new one is allocated
  block_ = host_bytes_for(device, std::max<int64_t>(l.bytes, 1));
  int64_t offset = 0;
  for (const auto& [sizes, dt] : l.shapes) {
    int64_t numel = 1;
    for (int64_t d : sizes) numel *= d;
    const int64_t n = numel * static_cast<int64_t>(at::elementSize(dt));
    views_.push_back(block_.narrow(0, offset, n).view(dt).view(sizes));
    offset += (n + 63) / 64 * 64;
  }
  layout_ = l;
  device_ = device;
}

void HostStaging::reserve(const c10::Device& device,
                          const std::vector<const storage::TensorList*>& lists,
                          const std::vector<std::optional<at::ScalarType>>& dtypes) {
  ensure(device, layout_of(lists, dtypes));
}

std::vector<storage::TensorList> HostStaging::copy(
    const std::vector<const storage::TensorList*>& lists,
    const std::vector<std::optional<at::ScalarType>>& dtypes) {
  c10::Device device(at::kCPU);
  for (const auto* l : lists)
    for (const auto& [name, t] : *l)
      if (t.is_cuda()) device = t.device();
  ensure(device, layout_of(lists, dtypes));
  std::vector<storage::TensorList> out(lists.size());
  std::vector<at::Tensor> converted;  // device-side dtype conversions live until the transfers end
  size_t k = 0;
  for (size_t i = 0; i < lists.size(); ++i)
    for (const auto& [name, t] : *lists[i]) {
      at::Tensor src = t.detach();
      at::Tensor& dst = views_[k++];
      if (src.is_cuda() && src.scalar_type() != dst.scalar_type()) {
        converted.push_back(src.to(dst.scalar_type()));
        src = converted.back();
      }
      dst.copy_(src, /*non_blocking=*/src.is_cuda());
      out[i].emplace_back(name, dst);
    }
  synchronize(device);
  return out;
}

CheckpointSnapshot snapshot_checkpoint(const model::Decoder& m, const config::Config& cfg,
                                       const storage::TensorList& optimizer,
                                       const TrainerState& state, HostStaging* staging) {
  HostStaging own;
  HostStaging& st = staging ? *staging : own;
  const storage::TensorList model = storage::model_tensors(m, /*expand_shared=*/false);
  auto copies = st.copy({&model, &optimizer}, {storage::SaveOptions{}.dtype, std::nullopt});
  CheckpointSnapshot s;
  s.model = std::move(copies[0]);
  s.optimizer = std::move(copies[1]);
  s.state = state;
  s.cfg = cfg;
  return s;
}

fs::path save_checkpoint(const fs::path& run_dir, const model::Decoder& m,
                         const config::Config& cfg, const storage::TensorList& optimizer,
                         const TrainerState& state, int64_t keep_last) {
  return write_checkpoint(run_dir, snapshot_checkpoint(m, cfg, optimizer, state), keep_last);
}

fs::path write_checkpoint(const fs::path& run_dir, const CheckpointSnapshot& snap,
                          int64_t keep_last) {
  const config::Config& cfg = snap.cfg;
  const TrainerState& state = snap.state;
  const fs::path final_dir = run_dir / "checkpoints" / ("step_" + std::to_string(state.step));
  AtomicDir dir(final_dir);
  // The optimizer's moments (two thirds of the bytes) are written on a second thread while this one
  // writes the weights; both files are hashed as they are written, not read back.
  std::map<std::string, std::string> written_sums;
  auto optimizer_file = std::async(std::launch::async, [&] {
    std::string sum;
    storage::save_safetensors(dir.path() / "optimizer.safetensors", snap.optimizer, {}, &sum);
    return sum;
  });
  try {
    storage::write_model_files(dir.path(), snap.model, cfg, {}, &written_sums["model.safetensors"]);
  } catch (...) {
    optimizer_file.wait();
    throw;
  }
  if (!cfg.data.tokenizer.empty() && fs::exists(cfg.data.tokenizer)) {
    fs::path tok = cfg.data.tokenizer;
    if (fs::is_directory(tok)) tok /= "tokenizer.model";
    fs::copy_file(tok, dir.path() / "tokenizer.model", fs::copy_options::overwrite_existing);
  }
  if (fault_at("crash_in_checkpoint", state.step)) std::abort();  // test hook: die mid-write
  if (fault_at("fail_in_checkpoint", state.step)) {  // test hook: a write that fails (a full disk)
    optimizer_file.wait();
    fail_runtime("fault injection: the checkpoint write failed");
  }
  written_sums["optimizer.safetensors"] = optimizer_file.get();
  write_file_atomic(dir.path() / "trainer_state.json", json::dump(state.to_json(), 2) + "\n");
  Json sums = Json::object();
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir.path())) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    const auto it = written_sums.find(f.filename().string());
    sums[f.filename().string()] = it != written_sums.end() ? it->second : sha256_file(f);
  }
  write_file_atomic(dir.path() / "checksums.json", json::dump(sums, 2) + "\n");
  dir.commit();

  prune_checkpoints(run_dir, state.step, keep_last);
  return final_dir;
}

void prune_checkpoints(const fs::path& run_dir, int64_t kept_step, int64_t keep_last) {
  // Only checkpoints whose own trainer_state says they are older than the one just written are
  // candidates; a newer one (left by a run resumed from further back) is never deleted.
  std::vector<CheckpointRef> older;
  for (const auto& c : list_checkpoints(run_dir)) {
    if (c.step < kept_step)
      older.push_back(c);
    else if (c.step > kept_step)
      log::warn("keeping {}: it holds step {}, later than the step {} this run has reached",
                c.dir.string(), c.step, kept_step);
  }
  const size_t keep_older = static_cast<size_t>(std::max<int64_t>(0, keep_last - 1));
  for (size_t i = 0; i + keep_older < older.size(); ++i) {
    const auto inside = stored_step(older[i].dir);  // read again just before deleting
    if (!inside || *inside != older[i].step || *inside >= kept_step) {
      log::warn("not deleting {}: its trainer_state.json no longer shows an older step",
                older[i].dir.string());
      continue;
    }
    remove_tree(older[i].dir);
  }
}

std::optional<int64_t> stored_step(const fs::path& dir) {
  std::error_code ec;
  const fs::path f = dir / "trainer_state.json";
  if (!fs::is_regular_file(f, ec)) return std::nullopt;
  try {
    const Json j = json::parse(read_file(f, "trainer state"), f.string());
    const Json* step = j.is_object() ? json::find(j, "step") : nullptr;
    if (!step || !step->is_number_integer()) return std::nullopt;
    return json::as_int(*step);
  } catch (const Error&) {
    return std::nullopt;  // unreadable: verification reports it
  }
}

std::vector<CheckpointRef> list_checkpoints(const fs::path& run_dir) {
  std::vector<CheckpointRef> out;
  std::error_code ec;
  if (!fs::is_directory(run_dir / "checkpoints", ec)) return out;
  static const std::regex name("step_([0-9]+)");
  for (const auto& e : fs::directory_iterator(run_dir / "checkpoints")) {
    std::smatch m;
    std::string fname = e.path().filename().string();
    if (!e.is_directory() || !std::regex_match(fname, m, name)) continue;
    const auto n = parse_int(m[1].str());
    if (!n) continue;  // more digits than a step count holds: not a checkpoint deepthin wrote
    // A checkpoint is what its trainer_state says, not what its folder is called: a folder copied
    // or linked under another step's name would be resumed from (and make pruning delete newer
    // work), so a disagreement stops the command.
    if (const auto inside = stored_step(e.path()); inside && *inside != *n)
      fail_input("checkpoint folder " + e.path().string() + " is named for step " +
                 std::to_string(*n) + " but its trainer_state.json holds step " +
                 std::to_string(*inside) + " (a copied or linked checkpoint?); rename it to step_" +
                 std::to_string(*inside) + " or move it out of " +
                 (run_dir / "checkpoints").string());
    out.push_back({e.path(), *n});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

void verify_checkpoint(const fs::path& dir) {
  auto sums_path = dir / "checksums.json";
  if (!fs::exists(sums_path))
    fail_input("checkpoint " + dir.string() + " is incomplete: checksums.json is missing");
  Json sums = json::parse(read_file(sums_path), sums_path.string());
  for (const char* required :
       {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "deepthin.yaml"})
    if (!sums.contains(required))
      fail_input("checkpoint " + dir.string() + " is incomplete: " + required + " is not listed");
  for (const auto& [file, sum] : json::as_object(sums).items()) {
    if (!fs::exists(dir / file))
      fail_input("checkpoint " + dir.string() + " is incomplete: " + file + " is missing");
    if (sha256_file(dir / file) != json::as_string(sum))
      fail_input("checkpoint " + dir.string() + " is corrupt: " + file +
                 " does not match its sha256 in checksums.json");
  }
}

std::optional<CheckpointRef> latest_checkpoint(const fs::path& run_dir, bool fallback) {
  auto all = list_checkpoints(run_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      verify_checkpoint(it->dir);
      return *it;
    } catch (const Error& e) {
      if (!fallback)
        throw Error(ErrorKind::input,
                    std::string(e.what()) +
                        "; pass --resume-fallback to resume from the previous checkpoint");
      log::warn("{}; falling back to an earlier checkpoint", e.what());
    }
  }
  if (!all.empty() && fallback) fail_input("no checkpoint in " + run_dir.string() + " verifies");
  return std::nullopt;
}

CheckpointContents read_checkpoint(const fs::path& dir) {
  CheckpointContents c;
  c.model_dir = dir.string();
  c.optimizer = storage::load_safetensors(dir / "optimizer.safetensors").tensors;
  auto where = (dir / "trainer_state.json").string();
  c.state = TrainerState::from_json(json::parse(read_file(where), where), where);
  return c;
}

void remove_stale_temporaries(const fs::path& run_dir) {
  std::error_code ec;
  if (!fs::is_directory(run_dir / "checkpoints", ec)) return;
  for (const auto& e : fs::directory_iterator(run_dir / "checkpoints")) {
    auto n = e.path().filename().string();
    if (n.find(".tmp.") != std::string::npos || n.find(".old.") != std::string::npos) {
      log::warn("removing {} left by an interrupted checkpoint write", e.path().string());
      remove_tree(e.path());
    }
  }
}

std::filesystem::path model_dir_of(const std::filesystem::path& run_or_dir,
                                   const std::string& what) {
  std::error_code ec;
  if (!std::filesystem::exists(run_or_dir, ec))
    fail_input(what + ": " + run_or_dir.string() + " does not exist");
  if (!std::filesystem::is_directory(run_or_dir / "checkpoints", ec)) return run_or_dir;
  auto ref = latest_checkpoint(run_or_dir, /*fallback=*/false);
  if (!ref) fail_input(what + ": run " + run_or_dir.string() + " has no checkpoint yet");
  return ref->dir;
}

}  // namespace deepthin::train
