#include "dist/gloo_backend.h"

#include <dlfcn.h>
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "util/error.h"

namespace deepthin::dist {

namespace {

// gloo's rendezvous store interface over a c10d store.
class StoreAdapter : public gloo::rendezvous::Store {
 public:
  explicit StoreAdapter(c10::intrusive_ptr<c10d::Store> s) : store_(std::move(s)) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    store_->set(key, std::vector<uint8_t>(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    auto v = store_->get(key);
    return {v.begin(), v.end()};
  }
  void wait(const std::vector<std::string>& keys) override { store_->wait(keys); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    store_->wait(keys, timeout);
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
};

class GlooWork : public c10d::Work {
 public:
  GlooWork(int rank, c10d::OpType type) : c10d::Work(rank, type) {}
  void done(std::exception_ptr e) { finish(std::move(e)); }
};

// The queue and the gloo context live apart from the backend object so that a worker thread stuck
// in a failing collective can be left behind at shutdown without touching freed memory.
struct Shared {
  std::shared_ptr<gloo::Context> context;
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::pair<std::function<void()>, c10::intrusive_ptr<GlooWork>>> queue;
  bool stop = false;
  bool busy = false;
};

void worker_loop(std::shared_ptr<Shared> s) {
  for (;;) {
    std::pair<std::function<void()>, c10::intrusive_ptr<GlooWork>> job;
    {
      std::unique_lock<std::mutex> lock(s->mutex);
      s->cv.wait(lock, [&] { return s->stop || !s->queue.empty(); });
      if (s->queue.empty()) return;
      job = std::move(s->queue.front());
      s->queue.pop_front();
      s->busy = true;
    }
    std::exception_ptr error;
    try {
      job.first();
    } catch (const std::exception& e) {
      error = std::make_exception_ptr(std::runtime_error(std::string("gloo: ") + e.what()));
    }
    job.second->done(error);
    std::lock_guard<std::mutex> lock(s->mutex);
    s->busy = false;
  }
}

template <class T>
gloo::AllreduceOptions::Func reduce_fn(c10d::ReduceOp::RedOpType op) {
  switch (op) {
    case c10d::ReduceOp::SUM:
      return [](void* c, const void* a, const void* b, size_t n) { gloo::sum<T>(c, a, b, n); };
    case c10d::ReduceOp::MAX:
      return [](void* c, const void* a, const void* b, size_t n) { gloo::max<T>(c, a, b, n); };
    case c10d::ReduceOp::MIN:
      return [](void* c, const void* a, const void* b, size_t n) { gloo::min<T>(c, a, b, n); };
    default:
      throw std::invalid_argument("the gloo backend supports SUM, MAX and MIN reductions");
  }
}

void check_cpu_dense(const at::Tensor& t, const char* op) {
  if (!t.device().is_cpu() || !t.is_contiguous() || t.is_sparse())
    throw std::invalid_argument(std::string(op) +
                                ": the gloo backend takes contiguous dense CPU tensors");
}

class GlooBackend : public c10d::Backend {
 public:
  GlooBackend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
              const std::string& hostname, std::chrono::milliseconds timeout)
      : c10d::Backend(rank, size), timeout_(timeout), shared_(std::make_shared<Shared>()) {
    gloo::transport::tcp::attr attr;
    if (const char* iface = std::getenv("GLOO_SOCKET_IFNAME"))
      attr.iface = iface;
    else
      attr.hostname = hostname;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
    ctx->setTimeout(timeout);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("deepthin-gloo", store);
    StoreAdapter adapter(prefixed);
    ctx->connectFullMesh(adapter, device);
    shared_->context = ctx;
    worker_ = std::thread(worker_loop, shared_);
  }

  ~GlooBackend() override {
    bool busy;
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->stop = true;
      busy = shared_->busy;
    }
    shared_->cv.notify_all();
    // A worker inside a collective whose peer is gone finishes only at the timeout: leave it.
    if (busy)
      worker_.detach();
    else
      worker_.join();
  }

  const std::string getBackendName() const override { return "deepthin-gloo"; }

  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& opts) override {
    TORCH_CHECK(tensors.size() == 1, "allreduce: one tensor per call");
    at::Tensor t = tensors[0];
    check_cpu_dense(t, "allreduce");
    gloo::AllreduceOptions::Func fn;
    switch (t.scalar_type()) {
      case at::kFloat:
        fn = reduce_fn<float>(opts.reduceOp);
        break;
      case at::kDouble:
        fn = reduce_fn<double>(opts.reduceOp);
        break;
      case at::kLong:
        fn = reduce_fn<int64_t>(opts.reduceOp);
        break;
      case at::kInt:
        fn = reduce_fn<int32_t>(opts.reduceOp);
        break;
      default:
        throw std::invalid_argument("allreduce: the gloo backend takes float32/64, int32/64");
    }
    const size_t elem = t.element_size();
    return enqueue(c10d::OpType::ALLREDUCE,
                   [ctx = shared_->context, to = timeout_, t, fn, elem, tag = next_tag()] {
                     gloo::AllreduceOptions o(ctx);
                     // Typed pointer only fixes the element size; the reduce function knows the
                     // real type.
                     switch (elem) {
                       case 4:
                         o.setOutput(static_cast<int32_t*>(t.data_ptr()), t.numel());
                         break;
                       default:
                         o.setOutput(static_cast<int64_t*>(t.data_ptr()), t.numel());
                         break;
                     }
                     o.setReduceFunction(fn);
                     o.setTag(tag);
                     o.setTimeout(to);
                     gloo::allreduce(o);
                   });
  }

  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts) override {
    TORCH_CHECK(tensors.size() == 1, "broadcast: one tensor per call");
    at::Tensor t = tensors[0];
    check_cpu_dense(t, "broadcast");
    const int root = static_cast<int>(opts.rootRank);
    return enqueue(c10d::OpType::BROADCAST,
                   [ctx = shared_->context, to = timeout_, t, root, tag = next_tag()] {
                     gloo::BroadcastOptions o(ctx);
                     o.setOutput(static_cast<uint8_t*>(t.data_ptr()), t.nbytes());
                     o.setRoot(root);
                     o.setTag(tag);
                     o.setTimeout(to);
                     gloo::broadcast(o);
                   });
  }

  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output, at::Tensor& input,
                                                 const c10d::AllgatherOptions&) override {
    check_cpu_dense(output, "allgather");
    check_cpu_dense(input, "allgather");
    TORCH_CHECK(output.nbytes() == input.nbytes() * static_cast<size_t>(getSize()),
                "allgather: output must hold world_size × input");
    at::Tensor out = output, in = input;
    return enqueue(c10d::OpType::_ALLGATHER_BASE,
                   [ctx = shared_->context, to = timeout_, out, in, tag = next_tag()] {
                     // In place (input is this rank's slot of output) is fine: copy it out first.
                     at::Tensor src = in.clone();
                     gloo::AllgatherOptions o(ctx);
                     o.setInput(static_cast<uint8_t*>(src.data_ptr()), src.nbytes());
                     o.setOutput(static_cast<uint8_t*>(out.data_ptr()), out.nbytes());
                     o.setTag(tag);
                     o.setTimeout(to);
                     gloo::allgather(o);
                   });
  }

  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions&) override {
    return enqueue(c10d::OpType::BARRIER,
                   [ctx = shared_->context, to = timeout_, tag = next_tag()] {
                     gloo::BarrierOptions o(ctx);
                     o.setTag(tag);
                     o.setTimeout(to);
                     gloo::barrier(o);
                   });
  }

 private:
  uint32_t next_tag() { return tag_++; }
  c10::intrusive_ptr<c10d::Work> enqueue(c10d::OpType type, std::function<void()> fn) {
    auto work = c10::make_intrusive<GlooWork>(getRank(), type);
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      shared_->queue.emplace_back(std::move(fn), work);
    }
    shared_->cv.notify_one();
    return work;
  }

  std::chrono::milliseconds timeout_;
  std::shared_ptr<Shared> shared_;
  std::thread worker_;
  uint32_t tag_ = 1;
};

// The torch wheel exports its own gloo. If libtorch came first in the link order, our gloo calls
// would land in torch's copy (another version) and corrupt memory: refuse with the reason.
void check_gloo_binding() {
  Dl_info info{};
  void (*fn)(gloo::AllreduceOptions const&) = &gloo::allreduce;
  if (dladdr(reinterpret_cast<void*>(fn), &info) && info.dli_fname &&
      std::strstr(info.dli_fname, "libgloo") == nullptr)
    fail_runtime(std::string("gloo symbols resolve to ") + info.dli_fname +
                 " instead of libgloo.so: link libgloo before libtorch (see CMakeLists.txt)");
}

}  // namespace

c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    int rank, int size, const std::string& hostname,
                                                    std::chrono::milliseconds timeout) {
  check_gloo_binding();
  return c10::make_intrusive<GlooBackend>(store, rank, size, hostname, timeout);
}

}  // namespace deepthin::dist
