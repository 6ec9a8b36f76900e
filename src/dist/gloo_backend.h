// The CPU backend: a c10d::Backend over Debian's gloo (libgloo-dev) with its TCP transport, so that
// CI can run real multi-process data parallelism without GPUs. It never stands in for NCCL: the
// trainer picks it only for CPU devices. Built when CMake finds gloo (DEEPTHIN_GLOO).
//
// The torch wheel carries its own, newer gloo inside libtorch_cpu.so and exports those symbols, so
// libgloo.so must come before libtorch in the executable's link order for gloo's names to bind to
// Debian's library (CMakeLists.txt does this); make_gloo_backend checks it and refuses otherwise.
//
// Collectives run in order on one worker thread; each returns a c10d::Work that completes (or
// fails, with gloo's message) on that thread. Every operation carries the configured timeout, and a
// peer that dies closes its sockets, so a failure reaches the surviving ranks as an error, never a
// hang.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <string>

namespace deepthin::dist {

// Connects every rank to every other through `store`. `hostname` is the address this rank listens
// on (127.0.0.1 when the whole job is on one machine).
c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    int rank, int size, const std::string& hostname,
                                                    std::chrono::milliseconds timeout);

}  // namespace deepthin::dist
