#include "train/checkpoint_writer.h"

#include <chrono>

#include "util/log.h"

namespace deepthin::train {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

CheckpointWriter::CheckpointWriter(std::filesystem::path run_dir, int64_t keep_last, bool async)
    : run_dir_(std::move(run_dir)), keep_last_(keep_last), async_(async) {
  if (async_) thread_ = std::thread([this] { run(); });
}

CheckpointWriter::~CheckpointWriter() {
  if (!async_) return;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !busy_; });
    stop_ = true;
    cv_.notify_all();
  }
  thread_.join();
  if (error_) {
    try {
      std::rethrow_exception(error_);
    } catch (const std::exception& e) {
      log::error("a checkpoint could not be written: {}", e.what());
    }
  }
}

void CheckpointWriter::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || pending_.has_value(); });
    if (!pending_) return;
    CheckpointSnapshot s = std::move(*pending_);
    pending_.reset();
    lock.unlock();
    std::exception_ptr err;
    try {
      const auto t = std::chrono::steady_clock::now();
      const auto dir = write_checkpoint(run_dir_, s, keep_last_);
      log::info("checkpoint {} (written in the background in {} s)", dir.string(),
                log::fixed(seconds_since(t), 2));
    } catch (...) {
      err = std::current_exception();
    }
    lock.lock();
    if (err && !error_) error_ = err;
    busy_ = false;
    cv_.notify_all();
  }
}

double CheckpointWriter::submit(CheckpointSnapshot s) {
  const auto t = std::chrono::steady_clock::now();
  if (!async_) {
    const auto dir = write_checkpoint(run_dir_, s, keep_last_);
    log::info("checkpoint {}", dir.string());
    return seconds_since(t);
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !busy_; });  // the previous checkpoint is still being written
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  pending_ = std::move(s);
  busy_ = true;
  cv_.notify_all();
  return seconds_since(t);
}

void CheckpointWriter::check() {
  if (!async_) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

double CheckpointWriter::wait() {
  if (!async_) return 0;
  const auto t = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !busy_; });
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  return seconds_since(t);
}

}  // namespace deepthin::train
