#include "dist/comm.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#ifdef DEEPTHIN_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#ifdef DEEPTHIN_GLOO
#include "dist/gloo_backend.h"
#endif

#include "util/error.h"
#include "util/log.h"

namespace deepthin::dist {

namespace {

c10::intrusive_ptr<c10d::Store> connect_store(const LaunchEnv& env,
                                              std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(env.master_port);
  o.timeout = timeout;
  try {
    if (env.agent_store) {
      // torchrun's agent serves the store on MASTER_PORT; workers are clients under the prefix of
      // the current restart attempt.
      o.isServer = false;
      o.waitWorkers = false;
      auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
      return c10::make_intrusive<c10d::PrefixStore>(
          "/worker/attempt_" + std::to_string(env.restart_count), tcp);
    }
    o.isServer = env.rank == 0;
    o.numWorkers = env.world_size;
    o.waitWorkers = true;
    return c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
  } catch (const std::exception& e) {
    fail_runtime("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                 ": no rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port) +
                 " within " + std::to_string(timeout.count() / 1000) +
                 " s (are all ranks started, with the same MASTER_ADDR/MASTER_PORT?): " + e.what());
  }
}

std::string listen_host(const LaunchEnv& env) {
  // One machine: loopback. Several: this host's name, which the peers can resolve.
  if (env.local_world_size >= env.world_size) return "127.0.0.1";
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "127.0.0.1";
  return name;
}

}  // namespace

std::shared_ptr<Comm> Comm::create(const LaunchEnv& env, const c10::Device& device,
                                   const config::DistributedConfig& cfg) {
  auto c = std::make_shared<Comm>();
  c->env_ = env;
  c->device_ = device;
  c->timeout_ = std::chrono::milliseconds(cfg.timeout_s * 1000);
  if (!env.distributed()) return c;
  using B = config::DistBackend;
  B backend = cfg.backend;
  if (backend == B::auto_) backend = device.is_cuda() ? B::nccl : B::gloo;
  if (backend == B::nccl && !device.is_cuda())
    fail_input("distributed.backend is nccl but train.device is " + device.str() +
               "; NCCL needs CUDA devices (use gloo for CPU runs)");
  if (backend == B::gloo && device.is_cuda())
    fail_input(
        "distributed.backend is gloo, which deepthin runs on CPU tensors only; use nccl "
        "(or auto) for CUDA devices");
  c->store_ = connect_store(env, c->timeout_);
  try {
    if (backend == B::nccl) {
#ifdef DEEPTHIN_NCCL
      // Torch's watchdog aborts the communicator on an error or timeout but leaves the process to
      // deepthin's guard, which says what happened in deepthin's words (see comm.h).
      setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2", /*overwrite=*/0);
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = c->timeout_;
      auto pg =
          c10::make_intrusive<c10d::ProcessGroupNCCL>(c->store_, env.rank, env.world_size, opts);
      pg->eagerConnectSingleDevice(device);
      c->backend_ = pg;
      c->backend_name_ = "nccl";
      c->start_guard();
#else
      fail_input(
          "this build has no NCCL (torch without CUDA); distributed GPU training needs the "
          "CUDA build");
#endif
    } else {
#ifdef DEEPTHIN_GLOO
      c->backend_ =
          make_gloo_backend(c->store_, env.rank, env.world_size, listen_host(env), c->timeout_);
      c->backend_name_ = "gloo";
#else
      fail_input(
          "this build has no CPU distributed backend: install libgloo-dev and rebuild "
          "(scripts/setup.sh does)");
#endif
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail_runtime("rank " + std::to_string(env.rank) + ": could not set up the " +
                 std::string(backend == B::nccl ? "NCCL" : "gloo") + " process group: " + e.what());
  }
  return c;
}

void Comm::wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
  if (!work) return;
  try {
    work->wait();
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (auto* ce = dynamic_cast<const c10::Error*>(&e)) msg = ce->what_without_backtrace();
    fail_runtime("rank " + std::to_string(rank()) + " of " + std::to_string(size()) + ": " + what +
                 " failed (" + backend_name_ + "): " + msg +
                 "\nAnother rank has probably died or stalled for longer than "
                 "distributed.timeout_s = " +
                 std::to_string(timeout_.count() / 1000) + " s; look at its output.");
  }
  if (guard_.joinable()) {
    std::lock_guard<std::mutex> lock(guard_mu_);
    pending_.push_back({work, what, std::chrono::steady_clock::now()});
  }
}

Comm::~Comm() {
  if (!guard_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(guard_mu_);
    guard_stop_ = true;
  }
  guard_cv_.notify_all();
  guard_.join();
}

void Comm::start_guard() {
  guard_ = std::thread([this] { guard_loop(); });
}

void Comm::guard_loop() {
  using namespace std::chrono;
  std::unique_lock<std::mutex> lock(guard_mu_);
  while (!guard_stop_) {
    guard_cv_.wait_for(lock, milliseconds(200));
    // Oldest first: collectives on one stream finish in order, so the front is the one to watch.
    while (!pending_.empty()) {
      Pending p = pending_.front();
      lock.unlock();
      bool done = false;
      std::string error;
      try {
        done = p.work->isCompleted();
        if (done && p.work->exception()) std::rethrow_exception(p.work->exception());
      } catch (const std::exception& e) {
        auto* ce = dynamic_cast<const c10::Error*>(&e);
        error = ce ? ce->what_without_backtrace() : e.what();
        done = true;
      }
      if (!error.empty()) guard_fail(p, "failed: " + error);
      if (!done && steady_clock::now() - p.since > timeout_)
        guard_fail(p, "did not finish within distributed.timeout_s = " +
                          std::to_string(timeout_.count() / 1000) + " s");
      lock.lock();
      if (!done) break;
      pending_.pop_front();
    }
  }
}

void Comm::guard_fail(const Pending& p, const std::string& cause) {
  // The main thread may be blocked in a device synchronisation behind this collective, so the
  // guard ends the process itself: message first, then the communicator's abort (bounded: a
  // helper thread does it and the guard waits at most 10 s), then exit status 1.
  std::fprintf(stderr,
               "deepthin: error: rank %d of %d: %s (%s) %s.\nAnother rank has probably died or "
               "stalled; look at its output. Aborting the communicator and exiting.\n",
               rank(), size(), p.what.c_str(), backend_name_.c_str(), cause.c_str());
  std::fflush(stderr);
  auto backend = backend_;
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread([backend, done] {
    try {
      backend->abort();
    } catch (...) {
    }
    done->store(true);
  }).detach();
  for (int i = 0; i < 100 && !done->load(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::_Exit(1);
}

c10::intrusive_ptr<c10d::Work> Comm::allreduce_async(const at::Tensor& t, c10d::ReduceOp op) {
  if (!active()) return {};
  std::vector<at::Tensor> v{t};
  c10d::AllreduceOptions o;
  o.reduceOp = op;
  return backend_->allreduce(v, o);
}

void Comm::allreduce(const at::Tensor& t, c10d::ReduceOp op, const std::string& what) {
  wait(allreduce_async(t, op), what);
}

void Comm::broadcast(const at::Tensor& t, int root, const std::string& what) {
  if (!active()) return;
  std::vector<at::Tensor> v{t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  wait(backend_->broadcast(v, o), what);
}

void Comm::allgather_into(const at::Tensor& output, const at::Tensor& input,
                          const std::string& what) {
  if (!active()) {
    if (output.data_ptr() != input.data_ptr()) output.copy_(input.view_as(output));
    return;
  }
  at::Tensor out = output, in = input;
  wait(backend_->_allgather_base(out, in), what);
}

void Comm::barrier(const std::string& what) {
  // A one-element allreduce on the collective device: the same everywhere, NCCL included.
  if (!active()) return;
  allreduce(at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device_)),
            c10d::ReduceOp::SUM, what);
}

void Comm::check_same(uint64_t value, const std::string& message) {
  if (!active()) return;
  // Split into two 32-bit halves so that the int64 comparison never overflows.
  auto v = at::tensor({static_cast<int64_t>(value >> 32), static_cast<int64_t>(value & 0xffffffff)},
                      at::TensorOptions().dtype(at::kLong))
               .to(device_);
  auto lo = v.clone(), hi = v.clone();
  allreduce(lo, c10d::ReduceOp::MIN, "consistency check");
  allreduce(hi, c10d::ReduceOp::MAX, "consistency check");
  if (!at::equal(lo, hi)) fail_input(message);
}

}  // namespace deepthin::dist
