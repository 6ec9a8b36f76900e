// Asynchronous checkpoints: the step only snapshots the state into host memory
// (train/checkpoint.h's CheckpointSnapshot); a background thread writes the files, checksums and
// keep_last pruning exactly as a synchronous save does, and a checkpoint still appears only when
// complete. The next checkpoint waits only while the previous one is being written. A failed write
// is reported at the next step boundary (check()) and stops the run with its error.
#pragma once

#include <condition_variable>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "train/checkpoint.h"

namespace deepthin::train {

class CheckpointWriter {
 public:
  // async false: submit() writes in the calling thread.
  CheckpointWriter(std::filesystem::path run_dir, int64_t keep_last, bool async);
  // Waits for a write in progress; its error, if any, is logged (the run is already ending).
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Writes the snapshot (in the background when async). Returns the seconds the caller waited:
  // for the previous write when async, for this one otherwise. Rethrows a failed earlier write.
  double submit(CheckpointSnapshot s);
  // Rethrows the error of a failed background write (once).
  void check();
  // Waits for the write in progress and rethrows its error. Returns the seconds waited.
  double wait();
  bool async() const { return async_; }
  // Where snapshots for this writer are taken: reusable once wait() has returned.
  HostStaging& staging() { return staging_; }

 private:
  void run();
  std::filesystem::path run_dir_;
  int64_t keep_last_;
  bool async_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<CheckpointSnapshot> pending_;  // handed to the thread
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
  HostStaging staging_;
};

}  // namespace deepthin::train
