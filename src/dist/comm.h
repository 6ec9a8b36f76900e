// The process group of a training job: rank and world from the launcher (dist/launch.h), a c10d
// TCPStore for the rendezvous (torchrun's agent store when it serves one), and a c10d backend:
// ProcessGroupNCCL on CUDA, the gloo backend (dist/gloo_backend.h) on the CPU.
//
// Every wait goes through Comm::wait, which turns a backend failure — a peer that died, or one
// that stalled past distributed.timeout_s — into a runtime error naming this rank, the operation
// and the likely cause, so that no rank hangs. NCCL's wait does not block the host (it orders the
// stream), so on NCCL a guard thread watches every waited-for collective: when one reports an error
// (a peer died and NCCL saw it) or is still unfinished after distributed.timeout_s, the guard
// prints deepthin's message naming the rank and the operation, aborts the communicator (so no
// kernel spins on a dead peer) and ends the process with exit status 1 — even while the main thread
// is blocked in a device synchronisation. Torch's own watchdog only cleans up
// (TORCH_NCCL_ASYNC_ERROR_HANDLING=2 unless the user set it).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "config/train_config.h"
#include "dist/launch.h"

namespace deepthin::dist {

class Comm {
 public:
  // A world of one: every collective is the identity.
  Comm() = default;
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  // Joins the job described by `env` (a world of one when env.world_size is 1). `device` picks the
  // backend: NCCL for CUDA, gloo for the CPU (or as configured).
  static std::shared_ptr<Comm> create(const LaunchEnv& env, const c10::Device& device,
                                      const config::DistributedConfig& cfg);

  int rank() const { return env_.rank; }
  int size() const { return env_.world_size; }
  bool active() const { return env_.world_size > 1; }
  const LaunchEnv& env() const { return env_; }
  const std::string& backend_name() const { return backend_name_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // Asynchronous collectives (nullptr in a world of one). The tensor must live on the backend's
  // device and stay alive until the work is waited for.
  c10::intrusive_ptr<c10d::Work> allreduce_async(const at::Tensor& t,
                                                 c10d::ReduceOp op = c10d::ReduceOp::SUM);
  // Waits; on failure raises a runtime error that says which operation failed on which rank.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what);

  // Blocking conveniences.
  void allreduce(const at::Tensor& t, c10d::ReduceOp op = c10d::ReduceOp::SUM,
                 const std::string& what = "allreduce");
  void broadcast(const at::Tensor& t, int root, const std::string& what = "broadcast");
  // output holds size() × input.numel() elements; input may be this rank's slot of output.
  void allgather_into(const at::Tensor& output, const at::Tensor& input,
                      const std::string& what = "allgather");
  void barrier(const std::string& what = "barrier");
  // Fails with `message` (an input error) unless every rank passes the same 64-bit value.
  void check_same(uint64_t value, const std::string& message);

  // The device collectives run on (tensors for them must live there).
  const c10::Device& device() const { return device_; }

 private:
  LaunchEnv env_;
  c10::Device device_{c10::kCPU};
  std::string backend_name_ = "none";
  std::chrono::milliseconds timeout_{0};
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> backend_;

  // The NCCL guard (see the top of this file).
  struct Pending {
    c10::intrusive_ptr<c10d::Work> work;
    std::string what;
    std::chrono::steady_clock::time_point since;
  };
  void start_guard();
  void guard_loop();
  [[noreturn]] void guard_fail(const Pending& p, const std::string& cause);
  std::mutex guard_mu_;
  std::condition_variable guard_cv_;
  std::deque<Pending> pending_;
  bool guard_stop_ = false;
  std::thread guard_;
};

}  // namespace deepthin::dist
