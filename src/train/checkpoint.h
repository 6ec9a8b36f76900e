// Checkpoints: runs/<name>/checkpoints/step_N/ holds
//   model.safetensors, config.json, deepthin.yaml  the export layout (a checkpoint is a model dir)
//   tokenizer.model                                when the run names one: generation needs nothing
//   else optimizer.safetensors                          AdamW moments (fp32) trainer_state.json
//   step, tokens, loader state, RNG state, elapsed time checksums.json sha256 of every file above;
//   written last
//
// The directory is built as step_N.tmp.<pid>, fsynced and renamed: a crash mid-write leaves only a
// .tmp directory, which is never mistaken for a checkpoint. Loading verifies every checksum.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/loader.h"
#include "model/decoder.h"
#include "storage/safetensors.h"
#include "util/json_io.h"

namespace deepthin::train {

struct TrainerState {
  int64_t step = 0;    // optimizer steps done
  int64_t tokens = 0;  // tokens trained on, all ranks
  data::LoaderState loader;
  double elapsed_s = 0;
  std::string cpu_rng;   // hex of the default CPU generator's state
  std::string cuda_rng;  // hex of the current CUDA generator's state (empty without CUDA)
  Json to_json() const;
  static TrainerState from_json(const Json& j, const std::string& where);
};

struct CheckpointRef {
  std::filesystem::path dir;
  int64_t step = 0;
};

struct CheckpointContents {
  std::string model_dir;  // = dir, for storage::load_model_dir
  storage::TensorList optimizer;
  TrainerState state;
};

// Everything a checkpoint holds, copied off the live model and optimizer into host memory: what a
// background writer writes while training goes on.
struct CheckpointSnapshot {
  storage::TensorList model;
  storage::TensorList optimizer;
  TrainerState state;
  config::Config cfg;
};

// The host memory snapshots are copied into, kept from one checkpoint to the next: one block for
// all tensors (page-locked when they live on a GPU), allocated once, so a checkpoint costs one
// batch of device-to-host transfers and one synchronization, not an allocation and a sync per
// tensor. A snapshot taken into it stays valid until the next one is taken.
class HostStaging {
 public:
  // Allocates for these tensors (model first, then optimizer, as snapshots pass them) ahead of
  // the first checkpoint, so that its cost is start-up's.
  void reserve(const c10::Device& device, const std::vector<const storage::TensorList*>& lists,
               const std::vector<std::optional<at::ScalarType>>& dtypes);
  // Copies of each list's tensors (in the dtype given, else their own), all transfers finished.
  std::vector<storage::TensorList> copy(const std::vector<const storage::TensorList*>& lists,
                                        const std::vector<std::optional<at::ScalarType>>& dtypes);
  int64_t bytes() const { return block_.defined() ? block_.numel() : 0; }

 private:
  struct Layout {
    std::vector<std::pair<std::vector<int64_t>, at::ScalarType>> shapes;
    int64_t bytes = 0;
    bool operator==(const Layout&) const = default;
  };
  static Layout layout_of(const std::vector<const storage::TensorList*>& lists,
                          const std::vector<std::optional<at::ScalarType>>& dtypes);
  void ensure(const c10::Device& device, const Layout& l);
  Layout layout_;
  std::optional<c10::Device> device_;
  at::Tensor block_;
  std::vector<at::Tensor> views_;
};

// staging null: fresh host memory for this snapshot alone.
CheckpointSnapshot snapshot_checkpoint(const model::Decoder& m, const config::Config& cfg,
                                       const storage::TensorList& optimizer,
                                       const TrainerState& state, HostStaging* staging = nullptr);
// Writes step_<state.step> atomically and prunes to keep_last.
std::filesystem::path write_checkpoint(const std::filesystem::path& run_dir,
                                       const CheckpointSnapshot& s, int64_t keep_last);
// snapshot_checkpoint then write_checkpoint.
std::filesystem::path save_checkpoint(const std::filesystem::path& run_dir, const model::Decoder& m,
                                      const config::Config& cfg,
                                      const storage::TensorList& optimizer,
                                      const TrainerState& state, int64_t keep_last);

// Finished checkpoints (step_N directories), oldest first; temporary directories are ignored. A
// folder whose trainer_state.json holds another step than its name says is an input error naming
// both: checkpoints are identified by their contents.
std::vector<CheckpointRef> list_checkpoints(const std::filesystem::path& run_dir);
// The step a checkpoint directory's trainer_state.json holds; nullopt when it is missing or
// unreadable.
std::optional<int64_t> stored_step(const std::filesystem::path& dir);
// Keeps `keep_last` checkpoints counting the one at `kept_step`: deletes only those whose
// trainer_state (read again just before) shows an older step; never a newer one.
void prune_checkpoints(const std::filesystem::path& run_dir, int64_t kept_step, int64_t keep_last);
// Input error naming the file when a checksum is missing or wrong.
void verify_checkpoint(const std::filesystem::path& dir);
// The newest checkpoint that verifies. A corrupt newest one is an error unless `fallback`, which
// then walks back to the newest good one (and says so). nullopt when the run has no checkpoint yet.
std::optional<CheckpointRef> latest_checkpoint(const std::filesystem::path& run_dir, bool fallback);
CheckpointContents read_checkpoint(const std::filesystem::path& dir);
// A model directory from a path that is one, or a run directory (its newest checkpoint). Input
// error naming `what` (e.g. "kd.teacher") when the path does not exist or the run has no checkpoint
// yet.
std::filesystem::path model_dir_of(const std::filesystem::path& run_or_dir,
                                   const std::string& what);
// The default CPU generator's state into state.cpu_rng, and back (a no-op when it is empty).
void capture_cpu_rng(TrainerState& state);
void restore_cpu_rng(const TrainerState& state);
// Removes step_N.tmp.* directories left by crashed writes.
void remove_stale_temporaries(const std::filesystem::path& run_dir);

}  // namespace deepthin::train
