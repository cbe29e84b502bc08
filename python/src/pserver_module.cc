// pserver._pserver: the Python binding of the public API (include/pserver/), for workers.
//
// Arrays cross without copies where the library allows it: push values and keys are the numpy
// arrays' own buffers, kept alive until the request completed; a pull fills the numpy array it
// returns (given as `out`, or made by the call), copying once from the received message, as
// KVWorker::Pull into a non-empty array does. Nothing is converted silently: keys must be uint64
// and values of the table's dtype, C-contiguous, or ValueError is raised before anything is sent.
//
// Threads: every blocking call releases the GIL. The library's completion callbacks run on its
// receive thread, which never takes the GIL: they queue work for one Python thread of this
// module (the "dispatcher"), which runs the user's callbacks and drops the references to the
// arrays of completed requests. Callbacks thus run off the receive thread, one at a time. A
// callback that raises is recorded: barrier() and finalize() raise it (finalize ending the job
// with it), so that a check failing in a callback cannot end in exit status 0.
//
// Exit: a worker whose program ends without finalize() or close() -- an uncaught exception, a
// forgotten finalize() -- ends the job with an error (ExitHook), never leaving it to end well
// without this worker's part.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "pserver/pserver.h"

namespace py = pybind11;

namespace pserver::python {
namespace {

// ---- Errors: a Status becomes the exception of its code (pserver/_errors.py).

py::object ExceptionFor(const Status& status) {
  py::object by_code = py::module_::import("pserver._errors").attr("BY_CODE");
  const std::string code(StatusCodeName(status.code()));
  py::object cls = by_code.attr("get")(code, by_code["Internal"]);
  return cls(status.message());
}

[[noreturn]] void Raise(const Status& status) {
  py::object exc = ExceptionFor(status);
  PyErr_SetObject(exc.get_type().ptr(), exc.ptr());
  throw py::error_already_set();
}

void Check(const Status& status) {
  if (!status.ok()) Raise(status);
}

template <typename T>
T Unwrap(Result<T>&& result) {
  if (!result.ok()) Raise(result.status());
  return std::move(result).value();
}

std::string Text(const py::handle& object) { return py::str(object).cast<std::string>(); }

[[noreturn]] void ValueError(const std::string& message) {
  Raise(Status::InvalidArgument(message));
}

// A timeout argument in seconds (None: `fallback`). Needs the GIL: a bad one raises ValueError.
std::chrono::milliseconds Timeout(std::optional<double> seconds, std::chrono::milliseconds fallback) {
  constexpr double kMaxSeconds = 365.0 * 86400;
  if (!seconds) return fallback;
  if (!(*seconds >= 0 && *seconds <= kMaxSeconds)) {  // NaN fails both
    ValueError("a timeout is a number of seconds from 0 to a year, not " + std::to_string(*seconds));
  }
  return std::chrono::milliseconds(static_cast<int64_t>(*seconds * 1000));
}

// Runs `f` without the GIL (a call that may block) and returns what it returns. `f` must not
// touch Python objects, nor raise.
template <typename F>
auto WithoutGil(F&& f) {
  py::gil_scoped_release release;
  return f();
}

// ---- The dispatcher: the one Python thread that runs callbacks and drops array references.

class Dispatcher {
 public:
  static Dispatcher& Get() {
    static Dispatcher* dispatcher = new Dispatcher();  // stopped at exit (atexit), never freed
    return *dispatcher;
  }

  // Any thread, GIL or not: `task` runs later on the dispatcher with the GIL held.
  void Post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;  // the interpreter is ending: leak rather than touch it
      queue_.push_back(std::move(task));
      ++posted_;
    }
    cv_.notify_all();
  }

  // With the GIL, not on the dispatcher: returns once every task posted before the call has run
  // (the callbacks of every request that completed before it), the GIL released meanwhile.
  void Flush() {
    if (std::this_thread::get_id() == thread_.get_id()) return;  // a callback calling finalize()
    py::gil_scoped_release release;
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t target = posted_;
    done_cv_.wait(lock, [&] { return done_ >= target || !thread_.joinable() || stopping_; });
  }

  // With the GIL: lets the thread run (once).
  void Start() {
    std::lock_guard<std::mutex> lock(mu_);
    if (thread_.joinable() || stopped_) return;
    thread_ = std::thread([this] { Loop(); });
  }

  // With the GIL, at interpreter exit: runs what is queued, then ends the thread.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_one();
    done_cv_.notify_all();
    if (thread_.joinable()) {
      py::gil_scoped_release release;
      thread_.join();
    }
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
  }

 private:
  void Loop() {
    for (;;) {
      std::deque<std::function<void()>> batch;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        batch.swap(queue_);
      }
      const size_t ran = batch.size();
      {
        py::gil_scoped_acquire gil;
        for (auto& task : batch) task();
        batch.clear();  // the tasks' captures (Python references among them) go with the GIL held
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        done_ += ran;
      }
      done_cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;       // work queued, or stopping
  std::condition_variable done_cv_;  // tasks ran (Flush)
  std::deque<std::function<void()>> queue_;
  uint64_t posted_ = 0;  // tasks ever queued
  uint64_t done_ = 0;    // tasks ever run
  std::thread thread_;
  bool stopping_ = false;
  bool stopped_ = false;
};

// An owner for a SharedArray aliasing a Python object's buffer: holds a reference, dropped on
// the dispatcher (never on the library's threads, which must not take the GIL). Needs the GIL.
std::shared_ptr<void> KeepAlive(const py::handle& object) {
  object.inc_ref();
  PyObject* raw = object.ptr();
  return std::shared_ptr<void>(raw, [](void* p) {
    Dispatcher::Get().Post([p] { Py_DECREF(static_cast<PyObject*>(p)); });
  });
}

// ---- Tables.

// numpy's equality of dtypes: 'Q' is uint64, a big-endian float32 is not float32.
// numpy keeps one object per built-in dtype, so the identity test answers nearly every call
// without a Python comparison.
bool SameDtype(const py::dtype& a, const py::dtype& b) { return a.is(b) || a.equal(b); }

ValueType ParseDtype(const py::object& dtype_like) {
  const py::dtype dtype = py::dtype::from_args(dtype_like);
  if (SameDtype(dtype, py::dtype::of<float>())) return ValueType::kFloat32;
  if (SameDtype(dtype, py::dtype::of<double>())) return ValueType::kFloat64;
  if (SameDtype(dtype, py::dtype::of<int32_t>())) return ValueType::kInt32;
  if (SameDtype(dtype, py::dtype::of<int64_t>())) return ValueType::kInt64;
  ValueError("a table's dtype is float32, float64, int32 or int64, not " + Text(dtype));
}

py::dtype DtypeOf(ValueType type) {
  switch (type) {
    case ValueType::kFloat32: return py::dtype::of<float>();
    case ValueType::kFloat64: return py::dtype::of<double>();
    case ValueType::kInt32: return py::dtype::of<int32_t>();
    case ValueType::kInt64: return py::dtype::of<int64_t>();
  }
  ValueError("unknown value type");
}

// A declared table: what requests name.
struct Table {
  TableId id;
  std::string name;
  ValueType type;
  uint32_t width;
};

// ---- Node.

// The first exception a request callback raised, if any: from then on wait, barrier and finalize
// raise it (finalize ends the job with it), so that a check that failed in a callback cannot end
// in exit status 0. Shared by the node and its callbacks; holds no Python object, so any thread
// may drop it.
class CallbackFailure {
 public:
  void Record(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (first_.empty()) first_ = what;
  }
  std::optional<Status> Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    if (first_.empty()) return std::nullopt;
    return Status::Internal("a request callback raised " + first_);
  }

 private:
  mutable std::mutex mu_;
  std::string first_;
};

// The node, shared by the KVWorker objects made from it: it is destroyed after the last of
// them. close() only stops it (Node::Stop: pending calls end with AbortedError). Used with the
// GIL held.
struct NodeHandle {
  std::unique_ptr<Node> node;
  std::shared_ptr<CallbackFailure> callback_failure = std::make_shared<CallbackFailure>();
  bool finalized = false;  // finalize() or finalize_with_error() was called
  bool closed = false;

  void Close() {
    if (closed) return;
    closed = true;
    WithoutGil([this] { node->Stop(); });
  }

  // Ends the whole job with `why` (FinalizeWithError), at most once.
  void FinalizeWithError(const std::string& why) {
    if (finalized || closed) return;
    finalized = true;
    (void)WithoutGil([&] { return node->FinalizeWithError(Status::Internal(why)); });  // the job's error: `why`
  }

  // Raises the recorded callback failure, if any.
  void CheckCallbacks() {
    if (std::optional<Status> failed = callback_failure->Get()) Raise(*failed);
  }
};

// Every node this process started, so that the interpreter's exit can end them (see ExitHook).
std::vector<std::weak_ptr<NodeHandle>>& OpenNodes() {
  static auto* nodes = new std::vector<std::weak_ptr<NodeHandle>>();
  return *nodes;
}

Node& Get(const std::shared_ptr<NodeHandle>& handle) {
  if (handle->closed) Raise(Status::Aborted("this node was closed"));
  return *handle->node;
}

// At interpreter exit (atexit, the GIL held): a worker that neither finalized nor closed its node
// ended without finishing its part -- an uncaught exception, or a forgotten finalize() -- so the
// job ends with that error instead of going on, or ending well, without its work. Then every node
// stops, before the dispatcher and before C++'s static destruction.
void ExitHook() {
  // A copy: the loop releases the GIL, and another thread could start a node meanwhile.
  const std::vector<std::weak_ptr<NodeHandle>> nodes = OpenNodes();
  for (const std::weak_ptr<NodeHandle>& weak : nodes) {
    std::shared_ptr<NodeHandle> h = weak.lock();
    if (!h || h->closed) continue;
    if (h->node->role() == Role::kWorker && !h->finalized) {
      std::fprintf(stderr, "pserver: worker %u exits without finalize(): ending the job with an error\n",
                   h->node->rank().value);
      h->FinalizeWithError("the Python program exited without calling finalize()");
    }
    h->Close();
  }
  Dispatcher::Get().Stop();
}

BarrierGroup ParseGroup(const std::string& group) {
  if (group == "workers") return BarrierGroup::kWorkers;
  if (group == "servers") return BarrierGroup::kServers;
  if (group == "all") return BarrierGroup::kAll;
  ValueError("a barrier group is 'workers', 'servers' or 'all', not '" + group + "'");
}

TableSpec MakeSpec(const std::string& name, const py::object& dtype, uint32_t width, const std::string& updater,
                   const std::map<std::string, double>& params, const std::string& init, double init_scale,
                   uint64_t init_seed, const std::string& storage, const std::optional<std::pair<Key, Key>>& key_range,
                   const std::string& filters, bool checkpointed) {
  TableSpec spec;
  spec.name = name;
  spec.value_type = ParseDtype(dtype);
  spec.width = width;
  spec.updater = {.name = updater, .params = params};
  if (init == "zero") {
    spec.initializer = {};
  } else if (init == "uniform") {
    spec.initializer = {.kind = InitializerSpec::Kind::kUniform, .scale = init_scale, .seed = init_seed};
  } else {
    ValueError("init is 'zero' or 'uniform', not '" + init + "'");
  }
  if (storage == "dense") {
    if (!key_range) ValueError("storage='dense' needs key_range=(first, last)");
    spec.storage = StorageKind::kDense;
  } else if (storage != "sparse") {
    ValueError("storage is 'sparse' or 'dense', not '" + storage + "'");
  }
  if (key_range) {
    spec.placement = KeyPlacement::kRange;
    spec.key_range = {key_range->first, key_range->second};
  }
  if (!filters.empty()) spec.filters = Unwrap(ParseFilters(filters));
  spec.checkpointed = checkpointed;
  return spec;
}

// ---- KVWorker: one object for every value type; each request dispatches on its table's.

// Whether the array's elements sit at addresses of their alignment (a view at an odd offset
// into a byte buffer does not, and reading it as its dtype would be undefined behaviour).
// The flag word, not `a.flags.aligned`: two attribute lookups per array on every request.
bool Aligned(const py::array& a) { return (a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) != 0; }

// Checks `keys` (1-D, C-contiguous uint64) and wraps its buffer without a copy. Needs the GIL.
SharedArray<Key> WrapKeys(const py::array& keys) {
  if (!SameDtype(keys.dtype(), py::dtype::of<uint64_t>())) {
    ValueError("keys must be a numpy array of dtype uint64, not " + Text(keys.dtype()));
  }
  if (keys.ndim() != 1) ValueError("keys must be 1-dimensional, not of shape " + Text(keys.attr("shape")));
  if (!(keys.flags() & py::array::c_style) || !Aligned(keys)) {
    ValueError("keys must be C-contiguous and aligned (numpy.ascontiguousarray makes them so)");
  }
  return SharedArray<Key>(KeepAlive(keys), static_cast<Key*>(const_cast<void*>(keys.data())),
                          static_cast<size_t>(keys.size()));
}

// Checks that `values` holds `rows` rows of `table` -- shape (rows,), (rows * width,) or (rows,
// width) -- and wraps its buffer. Needs the GIL.
template <typename T>
SharedArray<T> WrapValues(const py::array& values, const Table& table, size_t rows, bool writable,
                          const char* what) {
  const size_t want = rows * table.width;
  if (!SameDtype(values.dtype(), DtypeOf(table.type))) {
    ValueError(std::string(what) + " of table '" + table.name + "' must be of dtype " +
               std::string(ValueTypeName(table.type)) + ", not " + Text(values.dtype()));
  }
  const bool shape_ok = (values.ndim() == 1 && static_cast<size_t>(values.size()) == want) ||
                        (values.ndim() == 2 && static_cast<size_t>(values.shape(0)) == rows &&
                         static_cast<size_t>(values.shape(1)) == table.width);
  if (!shape_ok) {
    ValueError(std::string(what) + " of table '" + table.name + "' (width " + std::to_string(table.width) +
               ") for " + std::to_string(rows) + " keys must have shape (" + std::to_string(want) + ",) or (" +
               std::to_string(rows) + ", " + std::to_string(table.width) + "), not " +
               Text(values.attr("shape")));
  }
  if (!(values.flags() & py::array::c_style) || !Aligned(values)) {
    ValueError(std::string(what) + " must be C-contiguous and aligned (numpy.ascontiguousarray makes it so)");
  }
  if (writable && !values.writeable()) ValueError(std::string(what) + " must be writable");
  return SharedArray<T>(KeepAlive(values), static_cast<T*>(const_cast<void*>(values.data())), want);
}

// A fresh array for `rows` rows of `table`: (rows,) for width 1, else (rows, width).
py::array NewValues(const Table& table, size_t rows) {
  std::vector<py::ssize_t> shape = {static_cast<py::ssize_t>(rows)};
  if (table.width != 1) shape.push_back(table.width);
  return py::array(DtypeOf(table.type), shape);
}

class PyKVWorker {
 public:
  explicit PyKVWorker(std::shared_ptr<NodeHandle> node)
      : node_(std::move(node)),
        f32_(Get(node_)), f64_(Get(node_)), i32_(Get(node_)), i64_(Get(node_)) {
    if (Get(node_).role() != Role::kWorker) Raise(Status::InvalidArgument("a KVWorker needs a worker node"));
    Dispatcher::Get().Start();
  }

  int64_t Push(const Table& table, const py::array& keys, const py::array& values, const py::object& callback,
               const std::vector<int64_t>& after, std::optional<int64_t> max_delay) {
    return Dispatch(table, [&](auto& kv, auto tag) {
      using T = decltype(tag);
      SharedArray<Key> k = WrapKeys(keys);
      SharedArray<T> v = WrapValues<T>(values, table, k.size(), false, "values");
      RequestOptions opts = Options(callback, after, max_delay);
      return WithoutGil([&] { return kv.Push(table.id, k, v, opts); });
    });
  }

  std::pair<int64_t, py::array> Pull(const Table& table, const py::array& keys, std::optional<py::array> out,
                                     const py::object& callback, const std::vector<int64_t>& after,
                                     std::optional<int64_t> max_delay) {
    py::array result;
    const int64_t ts = Dispatch(table, [&](auto& kv, auto tag) {
      using T = decltype(tag);
      SharedArray<Key> k = WrapKeys(keys);
      result = out ? *out : NewValues(table, k.size());
      auto v = std::make_shared<SharedArray<T>>(WrapValues<T>(result, table, k.size(), true, "out"));
      RequestOptions opts = KeepingUntilDone(v, Options(callback, after, max_delay));
      return WithoutGil([&] { return kv.Pull(table.id, k, v.get(), opts); });
    });
    return {ts, result};
  }

  std::pair<int64_t, py::array> PushPull(const Table& table, const py::array& keys, const py::array& values,
                                         std::optional<py::array> out, const py::object& callback,
                                         const std::vector<int64_t>& after, std::optional<int64_t> max_delay) {
    py::array result;
    const int64_t ts = Dispatch(table, [&](auto& kv, auto tag) {
      using T = decltype(tag);
      SharedArray<Key> k = WrapKeys(keys);
      SharedArray<T> v = WrapValues<T>(values, table, k.size(), false, "values");
      result = out ? *out : NewValues(table, k.size());
      auto o = std::make_shared<SharedArray<T>>(WrapValues<T>(result, table, k.size(), true, "out"));
      RequestOptions opts = KeepingUntilDone(o, Options(callback, after, max_delay));
      return WithoutGil([&] { return kv.PushPull(table.id, k, v, o.get(), opts); });
    });
    return {ts, result};
  }

  void Wait(int64_t ts, std::optional<double> timeout) {
    Get(node_);
    const auto limit = Timeout(timeout, kDefaultWaitTimeout);
    Check(WithoutGil([&] { return f32_.Wait(Timestamp(ts), limit); }));
    node_->CheckCallbacks();
  }

  void SetMaxDelay(const Table& table, int64_t tau) {
    Get(node_);
    Check(f32_.SetMaxDelay(table.id, tau));
  }
  void SetStaleness(const Table& table, int64_t s) {
    Get(node_);
    Check(f32_.SetStaleness(table.id, s));
  }
  uint64_t Clock() {
    Get(node_);
    return Unwrap(WithoutGil([&] { return f32_.Clock(); }));
  }
  uint64_t clock() const { return f32_.clock(); }
  uint32_t ServerOf(const Table& table, Key key) const {
    Get(node_);
    return Unwrap(f32_.ServerOf(table.id, key));
  }

 private:
  // Runs `call(kv, T{})` with the KVWorker<T> of the table's value type; returns the timestamp.
  template <typename Call>
  int64_t Dispatch(const Table& table, Call&& call) {
    Get(node_);  // raises once closed
    Result<Timestamp> ts = Status::Internal("no value type");
    switch (table.type) {
      case ValueType::kFloat32: ts = call(f32_, float{}); break;
      case ValueType::kFloat64: ts = call(f64_, double{}); break;
      case ValueType::kInt32: ts = call(i32_, int32_t{}); break;
      case ValueType::kInt64: ts = call(i64_, int64_t{}); break;
    }
    return Unwrap(std::move(ts)).value;
  }

  // The request's options; a Python callback is called on the dispatcher as callback(error),
  // error None or the exception. One that raises is reported (sys.unraisablehook) and recorded:
  // the node's next wait, barrier or finalize raises it. Needs the GIL.
  RequestOptions Options(const py::object& callback, const std::vector<int64_t>& after,
                         std::optional<int64_t> max_delay) const {
    RequestOptions opts;
    for (int64_t ts : after) opts.after.push_back(Timestamp(ts));
    opts.max_delay = max_delay;
    if (!callback.is_none()) {
      if (!PyCallable_Check(callback.ptr())) ValueError("callback must be callable");
      std::shared_ptr<void> fn = KeepAlive(callback);
      opts.callback = [fn, failure = node_->callback_failure](const Status& status) {
        Dispatcher::Get().Post([fn, failure, status] {
          py::handle f(static_cast<PyObject*>(fn.get()));
          try {
            f(status.ok() ? py::none() : ExceptionFor(status));
          } catch (py::error_already_set& e) {
            try {
              failure->Record(Text(e.type().attr("__name__")) + ": " + Text(e.value()));
            } catch (py::error_already_set&) {  // an exception whose str() raises too
              failure->Record("an exception that cannot be printed");
            }
            e.discard_as_unraisable("pserver request callback");
          }
        });
      };
    }
    return opts;
  }

  // The library writes a pull's result into the SharedArray it was given when the request
  // completes: `out` must live until then, so the request's callback (destroyed only after the
  // request completed) owns it.
  template <typename T>
  static RequestOptions KeepingUntilDone(std::shared_ptr<SharedArray<T>> out, RequestOptions opts) {
    opts.callback = [out = std::move(out), user = std::move(opts.callback)](const Status& status) {
      if (user) user(status);
    };
    return opts;
  }

  std::shared_ptr<NodeHandle> node_;
  KVWorker<float> f32_;
  KVWorker<double> f64_;
  KVWorker<int32_t> i32_;
  KVWorker<int64_t> i64_;
};

}  // namespace

PYBIND11_MODULE(_pserver, m) {
  m.doc() = "pserver's C++ core (use the package `pserver`, which re-exports it)";

  py::class_<Table>(m, "Table", "A declared table; returned by Node.declare_table and named by requests.")
      .def_property_readonly("id", [](const Table& t) { return t.id.value; }, "The table's id in the job.")
      .def_readonly("name", &Table::name, "The table's name.")
      .def_property_readonly("dtype", [](const Table& t) { return DtypeOf(t.type); }, "The values' numpy dtype.")
      .def_readonly("width", &Table::width, "Values per key.")
      .def("__repr__", [](const Table& t) {
        return "Table(name='" + t.name + "', id=" + std::to_string(t.id.value) + ", dtype=" +
               std::string(ValueTypeName(t.type)) + ", width=" + std::to_string(t.width) + ")";
      });

  py::class_<NodeHandle, std::shared_ptr<NodeHandle>>(m, "Node",
                                                       "This process's node of a pserver job (a worker, for Python).")
      .def_static(
          "start",
          [](std::optional<double> register_timeout) {
            NodeOptions options = Unwrap(NodeOptionsFromEnvironment());
            if (register_timeout) options.register_timeout = Timeout(register_timeout, options.register_timeout);
            auto handle = std::make_shared<NodeHandle>();
            handle->node = Unwrap(WithoutGil([&] { return Node::Start(options); }));
            OpenNodes().push_back(handle);
            return handle;
          },
          py::kw_only(), py::arg("register_timeout") = py::none(),
          "Starts this node from the environment `pserver launch` (or `pserver node`) gives it:\n"
          "registers with the scheduler and waits until the whole cluster has. Blocks without the GIL.\n"
          "register_timeout: seconds (default: PSERVER_REGISTER_TIMEOUT_MS, else 60).\n"
          "A worker that reaches the interpreter's exit without finalize() or close() ends the job\n"
          "with an error: its part of the work was not done.")
      .def_property_readonly(
          "role", [](const std::shared_ptr<NodeHandle>& h) { return std::string(RoleName(Get(h).role())); },
          "'worker' (or 'server', 'scheduler').")
      .def_property_readonly(
          "rank", [](const std::shared_ptr<NodeHandle>& h) { return Get(h).rank().value; },
          "This node's index among the nodes of its role, from 0.")
      .def_property_readonly(
          "num_servers", [](const std::shared_ptr<NodeHandle>& h) { return Get(h).num_servers(); },
          "The job's servers now (joins and drains change it).")
      .def_property_readonly(
          "num_workers", [](const std::shared_ptr<NodeHandle>& h) { return Get(h).num_workers(); },
          "The job's workers.")
      .def_property_readonly(
          "metrics_address", [](const std::shared_ptr<NodeHandle>& h) { return Get(h).metrics_address(); },
          "'HOST:PORT' where this node serves its Prometheus metrics (PSERVER_METRICS_PORT,\n"
          "`pserver launch --metrics-port`; docs/metrics.md); '' without.")
      .def(
          "declare_table",
          [](const std::shared_ptr<NodeHandle>& h, const std::string& name, const py::object& dtype, uint32_t width,
             const std::string& updater, const std::map<std::string, double>& params, const std::string& init,
             double init_scale, uint64_t init_seed, const std::string& storage,
             const std::optional<std::pair<Key, Key>>& key_range, const std::string& filters, bool checkpointed,
             std::optional<double> timeout) {
            TableSpec spec = MakeSpec(name, dtype, width, updater, params, init, init_scale, init_seed, storage,
                                      key_range, filters, checkpointed);
            const auto limit = Timeout(timeout, kDefaultControlTimeout);
            Node& node = Get(h);
            TableId id = Unwrap(WithoutGil([&] { return node.DeclareTable(spec, limit); }));
            return Table{id, spec.name, spec.value_type, spec.width};
          },
          py::arg("name"), py::kw_only(), py::arg("dtype") = py::dtype::of<float>(), py::arg("width") = 1,
          py::arg("updater") = "add", py::arg("params") = std::map<std::string, double>{},
          py::arg("init") = "zero", py::arg("init_scale") = 0.0, py::arg("init_seed") = 0,
          py::arg("storage") = "sparse", py::arg("key_range") = py::none(), py::arg("filters") = "",
          py::arg("checkpointed") = true, py::arg("timeout") = py::none(),
          "Declares a table by name; every worker declaring the same name and spec gets the same table.\n"
          "dtype: float32, float64, int32 or int64. width: values per key (a row).\n"
          "updater: the servers' rule -- add, assign, sgd, adagrad, adam, ftrl, prox -- with its params\n"
          "(e.g. {'lr': 0.1}). init: 'zero' or 'uniform' (in [-init_scale, init_scale], seeded by init_seed).\n"
          "storage: 'sparse', or 'dense' over key_range=(first, last) (which also places keys by range).\n"
          "filters: e.g. 'keycache,zstd' (docs/filters.md). Raises ValueError for a bad or conflicting spec.")
      .def(
          "barrier",
          [](const std::shared_ptr<NodeHandle>& h, const std::string& group, std::optional<double> timeout) {
            const BarrierGroup g = ParseGroup(group);
            const auto limit = Timeout(timeout, kDefaultControlTimeout);
            Node& node = Get(h);
            Dispatcher::Get().Flush();
            h->CheckCallbacks();
            Check(WithoutGil([&] { return node.Barrier(g, limit); }));
          },
          py::arg("group") = "workers", py::kw_only(), py::arg("timeout") = py::none(),
          "Blocks (without the GIL) until every node of group ('workers', 'servers', 'all') called it.\n"
          "Raises the exception a request callback raised, if one did.")
      .def(
          "finalize",
          [](const std::shared_ptr<NodeHandle>& h, std::optional<double> timeout) {
            const auto limit = Timeout(timeout, kDefaultControlTimeout);
            Node& node = Get(h);
            Dispatcher::Get().Flush();  // the callbacks of the requests waited for have run
            if (std::optional<Status> failed = h->callback_failure->Get()) {
              h->FinalizeWithError(failed->message());
              Raise(*failed);
            }
            h->finalized = true;
            Check(WithoutGil([&] { return node.Finalize(limit); }));
          },
          py::kw_only(), py::arg("timeout") = py::none(),
          "Reports this worker done and waits until all workers are: the end of the job. Call it after\n"
          "the last wait(); it raises if the job failed. If a request callback raised, it ends the job\n"
          "with that error instead, and raises it.")
      .def(
          "finalize_with_error",
          [](const std::shared_ptr<NodeHandle>& h, const std::string& why) {
            Get(h);
            h->FinalizeWithError(why);
          },
          py::arg("why"),
          "Ends the whole job with an error naming this worker and `why` (e.g. a check failed), so\n"
          "that `pserver launch` exits non-zero instead of 0 with a wrong model.")
      .def("close", &NodeHandle::Close,
           "Leaves the job at once (after finalize(), or instead of it when giving up): pending and later\n"
           "calls of this node and its KVWorkers raise AbortedError.")
      .def("__enter__", [](const std::shared_ptr<NodeHandle>& h) { return h; })
      .def(
          "__exit__",
          [](const std::shared_ptr<NodeHandle>& h, const py::object& type, const py::object& value,
             const py::object&) {
            // A block that raised ends the job with its exception; one that ended without
            // finalize() finalizes (raising if the job failed). Then the node is closed.
            if (!type.is_none()) {
              h->FinalizeWithError("the worker raised " + Text(type.attr("__name__")) + ": " + Text(value));
            } else if (!h->finalized && !h->closed) {
              Dispatcher::Get().Flush();
              const Status s = h->callback_failure->Get().value_or(Status::Ok());
              if (!s.ok()) h->FinalizeWithError(s.message());
              h->finalized = true;
              const Status done = s.ok() ? WithoutGil([&] { return h->node->Finalize(kDefaultControlTimeout); }) : s;
              h->Close();
              Check(done);
            }
            h->Close();
          },
          "Ends the `with` block: finalize() if it was not called (raising if the job failed), or, when\n"
          "the block raised, ends the job with that exception; then close().");

  py::class_<PyKVWorker>(m, "KVWorker",
                         "Pushes and pulls of a worker node's tables. Every call returns at once with a timestamp;\n"
                         "wait(ts) blocks until that request completed.")
      .def(py::init<std::shared_ptr<NodeHandle>>(), py::arg("node"), py::keep_alive<1, 2>())
      .def("push", &PyKVWorker::Push, py::arg("table"), py::arg("keys"), py::arg("values"), py::kw_only(),
           py::arg("callback") = py::none(), py::arg("after") = std::vector<int64_t>{},
           py::arg("max_delay") = py::none(),
           "Adds `values` (by the table's update rule) to the values of `keys` (sorted, unique uint64).\n"
           "values: the table's dtype, shape (n,) or (n, width) for n keys. Neither array may change\n"
           "until the request completed: they are sent from their own buffers. Returns the timestamp.\n"
           "callback(error): runs once done (error None, or the exception) on pserver's dispatcher thread.\n"
           "after: timestamps that must complete first. max_delay: this request's delay bound.")
      .def("pull", &PyKVWorker::Pull, py::arg("table"), py::arg("keys"), py::arg("out") = py::none(), py::kw_only(),
           py::arg("callback") = py::none(), py::arg("after") = std::vector<int64_t>{},
           py::arg("max_delay") = py::none(),
           "Fetches the values of `keys` into `out` (a writable array of the table's dtype and shape,\n"
           "or a new one). Returns (timestamp, out): read out only after wait(timestamp).")
      .def("push_pull", &PyKVWorker::PushPull, py::arg("table"), py::arg("keys"), py::arg("values"),
           py::arg("out") = py::none(), py::kw_only(), py::arg("callback") = py::none(),
           py::arg("after") = std::vector<int64_t>{}, py::arg("max_delay") = py::none(),
           "push then pull in one round trip: out receives the values after the push was applied.\n"
           "Returns (timestamp, out).")
      .def("wait", &PyKVWorker::Wait, py::arg("ts"), py::arg("timeout") = py::none(),
           "Blocks (without the GIL) until request ts completed; raises its error, or TimeoutError\n"
           "(DeadlineExceededError) after timeout seconds (default 120), the request still pending.")
      .def("set_max_delay", &PyKVWorker::SetMaxDelay, py::arg("table"), py::arg("tau"),
           "Bounded delay for later requests of table: 0 sequential, -1 none (the default).")
      .def("set_staleness", &PyKVWorker::SetStaleness, py::arg("table"), py::arg("staleness"),
           "Stale-synchronous pulls: answered once every worker reached this clock minus staleness\n"
           "(0: bulk-synchronous, -1: no wait, the default).")
      .def("clock", &PyKVWorker::Clock, "Advances this worker's clock by one; returns the new clock.")
      .def_property_readonly("current_clock", &PyKVWorker::clock, "This worker's clock (0 at the start).")
      .def("server_of", &PyKVWorker::ServerOf, py::arg("table"), py::arg("key"),
           "The rank of the server holding key under the current routing.");

  // Run before the interpreter ends, so that no thread of ours takes the GIL of a finalizing one.
  py::module_::import("atexit").attr("register")(py::cpp_function(&ExitHook));
}

}  // namespace pserver::python
