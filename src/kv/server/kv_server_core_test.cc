// KVServerCore's request validation, fed transport::Message objects directly. The core runs on
// a real server runtime of an in-process cluster (so that its replies travel the inproc
// transport) but is not attached to it: the test thread calls OnData itself. The worker's runtime
// has a recording data handler instead of a KVWorker, so the test sees each reply as sent.
#include "kv/server/kv_server_core.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cluster/cluster_test_util.h"
#include "kv/node_access.h"
#include "kv/table_catalog.h"
#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "testing/intercepting_transport.h"
#include "kv/local_cluster.h"
#include "testing/test_util.h"

namespace pserver::kv {
namespace {

using pserver::testing::StatusIs;
using transport::Bytes;
using transport::Message;
using transport::MessageType;

template <typename T>
Bytes BytesOf(std::vector<T> v) {
  return transport::AsBytes(SharedArray<T>(std::move(v)));
}

template <typename T>
std::vector<T> ValuesOf(const Bytes& b) {
  std::vector<T> v(b.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), b.data(), b.size());
  return v;
}

// A handler's answer: how many values (and lengths) it returns, whatever the request.
ServerHandler FixedAnswer(size_t num_vals, std::optional<size_t> num_lens = std::nullopt) {
  return [num_vals, num_lens](const ServerRequest&, ServerResponse* resp) {
    resp->vals = transport::AsBytes(SharedArray<float>(num_vals));
    if (num_lens) {
      SharedArray<int32_t> lens(*num_lens);
      for (int32_t& l : lens) l = 1;
      resp->lens = lens;
    }
    return Status::Ok();
  };
}

class KVServerCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pserver::kv::LocalClusterOptions o;
    o.inproc = true;
    Node* server = nullptr;
    auto c = pserver::kv::LocalCluster::Start(o, [&server](Node& n) -> std::shared_ptr<void> {
      server = &n;
      return nullptr;  // no KVServer: the test drives its own core
    });
    ASSERT_OK(c);
    cluster_ = std::move(c).value();
    ASSERT_NE(server, nullptr);
    cluster::NodeRuntime* worker = internal::NodeAccess::Runtime(cluster_->worker(0));
    worker_id_ = worker->id();
    // The identity the worker's connections present, as a request delivered by the runtime carries it.
    worker_identity_ = worker->routing()->Find(worker_id_)->identity;
    recorder_ = std::make_shared<pserver::testing::RecordingDataHandler>();
    worker->AttachDataHandler([this] { return recorder_; });
    core_ = std::make_unique<KVServerCore>(internal::NodeAccess::Runtime(*server));
  }

  void TearDown() override {
    core_.reset();
    cluster_.reset();
  }

  // A request from the worker with the given header fields and frames.
  // The first request of a table declares it with that request's shape, as the scheduler's
  // announcement would.
  Message Request(MessageType type, TableId table, ValueType vt, uint32_t width, transport::Frames frames) {
    if (declared_.insert(table.value).second) {
      TableSpec spec{.name = "t" + std::to_string(table.value), .value_type = vt, .width = width == 0 ? 1 : width,
                     .variable_length = width == 0};
      EXPECT_OK(core_->OnTableDeclared(table, EncodeTableSpec(spec)));
    }
    Message m;
    m.header.type = type;
    m.header.sender = worker_id_;
    m.origin = worker_identity_;
    m.header.table = table;
    m.header.value_type = vt;
    m.header.width = width;
    m.header.request_id = next_request_++;
    m.frames = std::move(frames);
    return m;
  }

  // Hands `m` to the core and returns the status its reply carries (and the reply in *reply).
  Status Handle(Message m, Message* reply = nullptr) {
    const int64_t id = m.header.request_id;
    const MessageType type = m.header.type;
    core_->OnData(std::move(m));
    std::optional<Message> r = recorder_->Next();
    if (!r) return Status::Internal("no reply");
    EXPECT_TRUE(r->header.is_reply());
    EXPECT_EQ(r->header.request_id, id);
    EXPECT_EQ(r->header.type, type);
    EXPECT_EQ(r->header.receiver, worker_id_);
    Status s;
    if (r->header.is_error()) {
      std::string text =
          r->frames.empty() ? "" : std::string(reinterpret_cast<const char*>(r->frames[0].data()), r->frames[0].size());
      s = Status(static_cast<StatusCode>(r->header.status), text);
    }
    if (reply) *reply = std::move(*r);
    return s;
  }

  Status PushFloats(TableId table, std::vector<Key> keys, std::vector<float> vals, uint32_t width = 1) {
    return Handle(Request(MessageType::kPush, table, ValueType::kFloat32, width,
                          {BytesOf(std::move(keys)), BytesOf(std::move(vals)), Bytes()}));
  }
  // The float values of `keys`, or empty when the pull failed (with a test failure).
  std::vector<float> PullFloats(TableId table, std::vector<Key> keys, uint32_t width = 1) {
    Message reply;
    Status s = Handle(
        Request(MessageType::kPull, table, ValueType::kFloat32, width, {BytesOf(std::move(keys)), Bytes(), Bytes()}),
        &reply);
    EXPECT_OK(s);
    if (!s.ok()) return {};
    EXPECT_EQ(reply.frames.size(), 4u);  // the fourth: the range's vector clock
    return reply.frames.size() >= 3 ? ValuesOf<float>(reply.frames[1]) : std::vector<float>{};
  }

  std::unique_ptr<pserver::kv::LocalCluster> cluster_;
  std::shared_ptr<pserver::testing::RecordingDataHandler> recorder_;
  std::unique_ptr<KVServerCore> core_;
  NodeId worker_id_;
  transport::ConnectionId worker_identity_;
  int64_t next_request_ = 1;
  std::set<uint32_t> declared_;
};

TEST_F(KVServerCoreTest, AnswersWellFormedRequests) {
  core_->ServeDefault(ValueType::kFloat32, true);
  ASSERT_OK(PushFloats(TableId(1), {1, 2}, {1.5f, 2.5f}));
  ASSERT_OK(PushFloats(TableId(1), {2, 3}, {10, 20}));
  EXPECT_EQ(PullFloats(TableId(1), {1, 2, 3, 4}), (std::vector<float>{1.5f, 12.5f, 20, 0}));
}

// A worker the scheduler declared dead (silent, not dead: stopped or cut off) is fenced: its
// work was handed to another worker, so its pushes and pulls are refused from then on, before
// anything is applied, naming the reason.
TEST_F(KVServerCoreTest, RefusesTheRequestsOfAWorkerDeclaredDead) {
  core_->ServeDefault(ValueType::kFloat32, true);
  ASSERT_OK(PushFloats(TableId(1), {1}, {1}));
  core_->OnNodeFailed(cluster::NodeFailure{worker_id_, Role::kWorker, Rank(0), "no heartbeat for 1000 ms"});
  Status refused = PushFloats(TableId(1), {1}, {5});
  EXPECT_TRUE(StatusIs(refused, StatusCode::kUnavailable, "was declared dead (no heartbeat for 1000 ms)")) << refused;
  Status pull = Handle(Request(MessageType::kPull, TableId(1), ValueType::kFloat32, 1, {BytesOf<Key>({1}), Bytes(), Bytes()}));
  EXPECT_TRUE(StatusIs(pull, StatusCode::kUnavailable, "its requests are refused")) << pull;
}

TEST_F(KVServerCoreTest, RefusesWrongFrameCount) {
  core_->ServeDefault(ValueType::kFloat32, true);
  const TableId t(1);
  EXPECT_TRUE(
      StatusIs(Handle(Request(MessageType::kPush, t, ValueType::kFloat32, 1, {BytesOf<Key>({1}), BytesOf<float>({1})})),
               StatusCode::kCorruption, "data request with 2 frames, expected 3"));
  EXPECT_TRUE(StatusIs(
      Handle(Request(MessageType::kPull, t, ValueType::kFloat32, 1, {BytesOf<Key>({1}), Bytes(), Bytes(), Bytes()})),
      StatusCode::kCorruption, "data request with 4 frames, expected 3"));
  EXPECT_TRUE(StatusIs(Handle(Request(MessageType::kPull, t, ValueType::kFloat32, 1, {})), StatusCode::kCorruption,
                       "data request with 0 frames"));
  // Nothing was applied, and the server still answers.
  EXPECT_EQ(PullFloats(t, {1}), (std::vector<float>{0}));
}

TEST_F(KVServerCoreTest, RefusesKeyFrameThatIsNotWholeKeys) {
  core_->ServeDefault(ValueType::kFloat32, true);
  const TableId t(1);
  EXPECT_TRUE(StatusIs(Handle(Request(MessageType::kPush, t, ValueType::kFloat32, 1,
                                      {BytesOf<uint32_t>({1, 2, 3}), BytesOf<float>({1}), Bytes()})),
                       StatusCode::kCorruption, "key frame of 12 bytes"));
  EXPECT_TRUE(StatusIs(
      Handle(Request(MessageType::kPull, t, ValueType::kFloat32, 1, {BytesOf<uint8_t>({1}), Bytes(), Bytes()})),
      StatusCode::kCorruption, "key frame of 1 bytes"));
  EXPECT_EQ(PullFloats(t, {1}), (std::vector<float>{0}));
}

TEST_F(KVServerCoreTest, RefusesValueSizeThatDoesNotMatchKeysAndWidth) {
  core_->ServeDefault(ValueType::kFloat32, true);
  const TableId t(1);
  // Two keys of width 1 need 8 bytes of float32.
  EXPECT_TRUE(StatusIs(Handle(Request(MessageType::kPush, t, ValueType::kFloat32, 1,
                                      {BytesOf<Key>({1, 2}), BytesOf<float>({1, 2, 3}), Bytes()})),
                       StatusCode::kCorruption, "12 value bytes for 2 keys of width 1"));
  EXPECT_TRUE(StatusIs(Handle(Request(MessageType::kPushPull, t, ValueType::kFloat32, 1,
                                      {BytesOf<Key>({1, 2}), BytesOf<float>({1}), Bytes()})),
                       StatusCode::kCorruption, "4 value bytes for 2 keys of width 1"));
  // Width 2 of another table: 2 keys need 4 values.
  EXPECT_TRUE(StatusIs(Handle(Request(MessageType::kPush, TableId(2), ValueType::kFloat32, 2,
                                      {BytesOf<Key>({1, 2}), BytesOf<float>({1, 2}), Bytes()})),
                       StatusCode::kCorruption, "8 value bytes for 2 keys of width 2"));
  // A pull carries no values.
  EXPECT_TRUE(StatusIs(
      Handle(Request(MessageType::kPull, t, ValueType::kFloat32, 1, {BytesOf<Key>({1}), BytesOf<float>({1}), Bytes()})),
      StatusCode::kCorruption, "a pull request carries values"));
  EXPECT_EQ(PullFloats(t, {1, 2}), (std::vector<float>{0, 0}));
}

TEST_F(KVServerCoreTest, RefusesBadLengthsOfVariableLengthPush) {
  core_->ServeDefault(ValueType::kFloat32, true);
  const TableId t(3);
  auto var_push = [&](std::vector<Key> keys, std::vector<float> vals, Bytes lens) {
    return Handle(Request(MessageType::kPush, t, ValueType::kFloat32, 0,
                          {BytesOf(std::move(keys)), BytesOf(std::move(vals)), std::move(lens)}));
  };
  EXPECT_TRUE(
      StatusIs(var_push({1, 2}, {1, 2}, BytesOf<int32_t>({2, -1})), StatusCode::kCorruption, "negative length -1"));
  EXPECT_TRUE(StatusIs(var_push({1, 2}, {1, 2}, BytesOf<int32_t>({2})), StatusCode::kCorruption,
                       "4 bytes of lengths for 2 keys"));
  EXPECT_TRUE(StatusIs(var_push({1, 2}, {1, 2}, BytesOf<int32_t>({1, 2})), StatusCode::kCorruption,
                       "8 value bytes where the lengths say 3 values (push arity 1)"));
  // The table is still empty and usable.
  ASSERT_OK(var_push({1, 2}, {1, 2, 3}, BytesOf<int32_t>({1, 2})));
  Message reply;
  ASSERT_OK(
      Handle(Request(MessageType::kPull, t, ValueType::kFloat32, 0, {BytesOf<Key>({1, 2}), Bytes(), Bytes()}), &reply));
  ASSERT_EQ(reply.frames.size(), 4u);  // values, lengths and the range's vector clock
  EXPECT_EQ(ValuesOf<float>(reply.frames[1]), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(ValuesOf<int32_t>(reply.frames[2]), (std::vector<int32_t>{1, 2}));
}

// Variable-length rows of a rule that takes two values per stored value ("prox": gradient, then
// curvature): the lengths count stored values, the push carries twice as many.
TEST_F(KVServerCoreTest, VariableLengthPushCarriesPushArityValuesPerStoredValue) {
  core_->ServeDefault(ValueType::kFloat32, true);
  const TableId t(13);
  TableSpec spec{.name = "prox_var", .value_type = ValueType::kFloat32, .width = 1, .variable_length = true};
  spec.updater = {.name = "prox", .params = {{"delta", 10}}};
  spec.push_arity = 2;
  ASSERT_OK(core_->OnTableDeclared(t, EncodeTableSpec(spec)));
  declared_.insert(t.value);
  auto var_push = [&](std::vector<Key> keys, std::vector<float> vals, std::vector<int32_t> lens) {
    return Handle(Request(MessageType::kPush, t, ValueType::kFloat32, 0,
                          {BytesOf(std::move(keys)), BytesOf(std::move(vals)), BytesOf(std::move(lens))}));
  };
  EXPECT_TRUE(StatusIs(var_push({1}, {1, 2}, {2}), StatusCode::kCorruption,
                       "8 value bytes where the lengths say 2 values (push arity 2)"));
  // Key 1 of length 2: gradients (1, -2), curvatures (1, 2); the step from 0 is -g / u.
  ASSERT_OK(var_push({1}, {1, -2, 1, 2}, {2}));
  Message reply;
  ASSERT_OK(
      Handle(Request(MessageType::kPull, t, ValueType::kFloat32, 0, {BytesOf<Key>({1}), Bytes(), Bytes()}), &reply));
  EXPECT_EQ(ValuesOf<float>(reply.frames[1]), (std::vector<float>{-1, 1}));
  EXPECT_EQ(ValuesOf<int32_t>(reply.frames[2]), (std::vector<int32_t>{2}));
}

TEST_F(KVServerCoreTest, RefusesChangeOfTableValueTypeOrWidth) {
  core_->ServeDefault(ValueType::kFloat32, true);
  core_->ServeDefault(ValueType::kFloat64, true);
  const TableId t(7);
  ASSERT_OK(PushFloats(t, {1, 2}, {3, 4}));
  EXPECT_TRUE(StatusIs(PushFloats(t, {1, 2}, {1, 1, 1, 1}, 2), StatusCode::kInvalidArgument,
                       "table 't7' holds float32 values of width 1, the request has float32 of width 2"));
  EXPECT_TRUE(StatusIs(Handle(Request(MessageType::kPush, t, ValueType::kFloat64, 1,
                                      {BytesOf<Key>({1}), BytesOf<double>({1}), Bytes()})),
                       StatusCode::kInvalidArgument, "the request has float64 of width 1"));
  EXPECT_TRUE(
      StatusIs(Handle(Request(MessageType::kPull, t, ValueType::kFloat32, 0, {BytesOf<Key>({1}), Bytes(), Bytes()})),
               StatusCode::kInvalidArgument, "of width 0"));
  // Nothing changed.
  EXPECT_EQ(PullFloats(t, {1, 2}), (std::vector<float>{3, 4}));
}

TEST_F(KVServerCoreTest, RepliesUnavailableWithoutHandlerForTheValueType) {
  core_->ServeDefault(ValueType::kFloat32, true);
  EXPECT_TRUE(StatusIs(Handle(Request(MessageType::kPush, TableId(2), ValueType::kInt64, 1,
                                      {BytesOf<Key>({1}), BytesOf<int64_t>({1}), Bytes()})),
                       StatusCode::kUnavailable, "no handler for int64 tables"));
  // Tables no longer served are refused too.
  core_->ServeDefault(ValueType::kFloat32, false);
  EXPECT_TRUE(StatusIs(
      Handle(Request(MessageType::kPull, TableId(1), ValueType::kFloat32, 1, {BytesOf<Key>({1}), Bytes(), Bytes()})),
      StatusCode::kUnavailable, "no handler for float32 tables"));
}

TEST_F(KVServerCoreTest, RefusesHandlerAnswerOfTheWrongSize) {
  const TableId t(1);
  core_->SetHandler(ValueType::kFloat32, FixedAnswer(1));
  EXPECT_TRUE(
      StatusIs(Handle(Request(MessageType::kPull, t, ValueType::kFloat32, 1, {BytesOf<Key>({1, 2}), Bytes(), Bytes()})),
               StatusCode::kInternal, "the handler returned 1 values for 2 keys of width 1"));
  core_->SetHandler(ValueType::kFloat32, FixedAnswer(5));
  EXPECT_TRUE(StatusIs(Handle(Request(MessageType::kPushPull, TableId(2), ValueType::kFloat32, 2,
                                      {BytesOf<Key>({1, 2}), BytesOf<float>({1, 2, 3, 4}), Bytes()})),
                       StatusCode::kInternal, "the handler returned 5 values for 2 keys of width 2"));
  // Variable length: wrong number of lengths, then values that do not match the lengths.
  core_->SetHandler(ValueType::kFloat32, FixedAnswer(1, 1));
  EXPECT_TRUE(StatusIs(
      Handle(Request(MessageType::kPull, TableId(3), ValueType::kFloat32, 0, {BytesOf<Key>({1, 2}), Bytes(), Bytes()})),
      StatusCode::kInternal, "the handler returned 1 lengths for 2 keys"));
  core_->SetHandler(ValueType::kFloat32, FixedAnswer(3, 2));
  EXPECT_TRUE(StatusIs(
      Handle(Request(MessageType::kPull, TableId(3), ValueType::kFloat32, 0, {BytesOf<Key>({1, 2}), Bytes(), Bytes()})),
      StatusCode::kInternal, "the handler returned 3 values where its lengths say 2"));
  // A push-only request does not look at the answer.
  ASSERT_OK(PushFloats(t, {1}, {1}));
  // The right size is accepted.
  core_->SetHandler(ValueType::kFloat32, FixedAnswer(2));
  EXPECT_EQ(PullFloats(t, {1, 2}), (std::vector<float>{0, 0}));
}

TEST_F(KVServerCoreTest, PassesTheHandlersErrorToTheWorker) {
  core_->SetHandler(ValueType::kFloat32, [](const ServerRequest& req, ServerResponse*) {
    return Status::NotFound("no key " + std::to_string(req.keys[0]));
  });
  EXPECT_TRUE(StatusIs(
      Handle(Request(MessageType::kPull, TableId(1), ValueType::kFloat32, 1, {BytesOf<Key>({17}), Bytes(), Bytes()})),
      StatusCode::kNotFound, "no key 17"));
}

TEST_F(KVServerCoreTest, HandlerSeesTheRequestAsSent) {
  std::optional<ServerRequest> seen;
  core_->SetHandler(ValueType::kInt32, [&seen](const ServerRequest& req, ServerResponse* resp) {
    seen = req;
    resp->vals = req.vals;
    resp->lens = req.lens;
    return Status::Ok();
  });
  Message reply;
  ASSERT_OK(Handle(Request(MessageType::kPushPull, TableId(9), ValueType::kInt32, 0,
                           {BytesOf<Key>({4, 8}), BytesOf<int32_t>({1, 2, 3}), BytesOf<int32_t>({1, 2})}),
                   &reply));
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->type, MessageType::kPushPull);
  EXPECT_EQ(seen->table, TableId(9));
  EXPECT_EQ(seen->sender, worker_id_);
  EXPECT_EQ(seen->timestamp, Timestamp(next_request_ - 1));
  EXPECT_EQ(seen->value_type, ValueType::kInt32);
  EXPECT_EQ(seen->width, 0u);
  EXPECT_EQ(std::vector<Key>(seen->keys.begin(), seen->keys.end()), (std::vector<Key>{4, 8}));
  EXPECT_EQ(ValuesOf<int32_t>(seen->vals), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(std::vector<int32_t>(seen->lens.begin(), seen->lens.end()), (std::vector<int32_t>{1, 2}));
  ASSERT_EQ(reply.frames.size(), 4u);  // values, lengths and the range's vector clock
  EXPECT_EQ(ValuesOf<int32_t>(reply.frames[1]), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(ValuesOf<int32_t>(reply.frames[2]), (std::vector<int32_t>{1, 2}));
}

TEST_F(KVServerCoreTest, RefusesMessagesFlaggedAsReplies) {
  core_->ServeDefault(ValueType::kFloat32, true);
  Message m = Request(MessageType::kPush, TableId(1), ValueType::kFloat32, 1,
                      {BytesOf<Key>({1}), BytesOf<float>({1}), Bytes()});
  m.header.flags = transport::kFlagReply;
  EXPECT_TRUE(StatusIs(Handle(std::move(m)), StatusCode::kInvalidArgument, "a server does not take replies"));
  EXPECT_EQ(PullFloats(TableId(1), {1}), (std::vector<float>{0}));
}

// The same checks seen from a KVWorker: a fault-injecting transport under the worker corrupts
// its (well-formed) requests on the way out, and Wait returns the server's refusal, naming the
// problem and the server.
TEST(KVServerCoreWireTest, WorkerWaitNamesTheProblemOfAMalformedRequest) {
  enum class Fault { kNone, kDropFrame, kCutKeyFrame, kCutValues, kNegativeLength };
  std::atomic<Fault> fault{Fault::kNone};
  auto rewrite = [&fault](Message& m) {
    if (!transport::IsDataMessage(m.header.type) || m.header.is_reply() || m.frames.size() != 3) return;
    switch (fault.load()) {
      case Fault::kNone:
        return;
      case Fault::kDropFrame:
        m.frames.pop_back();
        return;
      case Fault::kCutKeyFrame:
        m.frames[0] = m.frames[0].Slice(0, m.frames[0].size() - 4);
        return;
      case Fault::kCutValues:
        m.frames[1] = m.frames[1].Slice(0, m.frames[1].size() - 4);
        return;
      case Fault::kNegativeLength: {
        SharedArray<int32_t> lens(m.frames[2].size() / sizeof(int32_t));
        std::memcpy(lens.data(), m.frames[2].data(), m.frames[2].size());
        lens[0] = -lens[0];
        m.frames[2] = transport::AsBytes(lens);
        return;
      }
    }
  };
  pserver::testing::InprocJob job{NodeOptions{}};
  ASSERT_OK(job.StartScheduler(1, 1));
  job.RunScheduler();
  std::vector<std::unique_ptr<transport::Transport>> transports;
  transports.push_back(nullptr);  // the server's: plain
  transports.push_back(
      std::make_unique<pserver::testing::ObservingTransport>(job.NewTransport(), nullptr, nullptr, rewrite));
  std::vector<Status> started =
      job.StartNodes({job.OptionsFor({Role::kServer, -1}), job.OptionsFor({Role::kWorker, -1})}, std::move(transports));
  for (const Status& s : started) ASSERT_OK(s);
  Node& server = *job.node(0);
  Node& worker = *job.node(1);
  KVServer<float> serve(server);
  auto run = job.Spawn([&] { return server.Run(); });

  TableSpec fixed;
  fixed.name = "fixed";
  TableSpec var = fixed;
  var.name = "var";
  var.variable_length = true;
  Result<TableId> f = worker.DeclareTable(fixed);
  Result<TableId> v = worker.DeclareTable(var);
  ASSERT_OK(f);
  ASSERT_OK(v);
  KVWorker<float> w(worker);
  auto push = [&](Fault what, TableId table, bool variable) -> Status {
    fault = what;
    Result<Timestamp> ts =
        variable ? w.Push(table, std::vector<Key>{1, 2}, std::vector<float>{1, 2, 3}, std::vector<int32_t>{1, 2})
                 : w.Push(table, std::vector<Key>{1, 2}, std::vector<float>{1, 2});
    fault = Fault::kNone;
    PSERVER_RETURN_IF_ERROR(ts.status());
    return w.Wait(*ts, std::chrono::seconds(30));
  };
  const Status dropped = push(Fault::kDropFrame, *f, false);
  EXPECT_TRUE(StatusIs(dropped, StatusCode::kCorruption, "data request with 2 frames, expected 3"));
  EXPECT_TRUE(StatusIs(dropped, StatusCode::kCorruption, "push request"));
  EXPECT_TRUE(StatusIs(dropped, StatusCode::kCorruption, "server 0 (node "));
  EXPECT_TRUE(StatusIs(push(Fault::kCutKeyFrame, *f, false), StatusCode::kCorruption, "key frame of 12 bytes"));
  EXPECT_TRUE(
      StatusIs(push(Fault::kCutValues, *f, false), StatusCode::kCorruption, "4 value bytes for 2 keys of width 1"));
  // (The first length sent is that of the first key in routing order, which need not be key 1.)
  EXPECT_TRUE(StatusIs(push(Fault::kNegativeLength, *v, true), StatusCode::kCorruption, "negative length -"));
  EXPECT_TRUE(
      StatusIs(push(Fault::kCutValues, *v, true), StatusCode::kCorruption, "8 value bytes where the lengths say 3 values"));
  // None of it was applied, and the server still serves.
  ASSERT_OK(push(Fault::kNone, *f, false));
  SharedArray<float> got;
  Result<Timestamp> ts = w.Pull(*f, std::vector<Key>{1, 2}, &got);
  ASSERT_OK(ts);
  ASSERT_OK(w.Wait(*ts));
  EXPECT_EQ(std::vector<float>(got.begin(), got.end()), (std::vector<float>{1, 2}));
  EXPECT_OK(worker.Finalize());
  EXPECT_OK(run.get());
  EXPECT_OK(job.SchedulerOutcome());
}

}  // namespace
}  // namespace pserver::kv

namespace pserver::kv {
namespace {

// The range vector clocks: a request seen twice (same worker, same timestamp) is applied once,
// for the summing store and for an update-rule store alike; the pull part of a duplicated
// push-pull is still answered.
TEST_F(KVServerCoreTest, DuplicatedRequestIsAppliedOnce) {
  core_->ServeDefault(ValueType::kFloat32, true);
  TableSpec sgd{.name = "sgd", .value_type = ValueType::kFloat32, .width = 1};
  sgd.updater = {.name = "sgd", .params = {{"lr", 0.5}}};
  ASSERT_OK(core_->OnTableDeclared(TableId(5), EncodeTableSpec(sgd)));
  declared_.insert(5);
  for (TableId t : {TableId(1), TableId(5)}) {
    SCOPED_TRACE(t.value);
    const float unit = t == TableId(5) ? -0.5f : 1.0f;  // what one push of 1 does to a value
    Message push = Request(MessageType::kPush, t, ValueType::kFloat32, 1,
                           {BytesOf<Key>({1, 2, 3}), BytesOf<float>({1, 1, 1}), Bytes()});
    ASSERT_OK(Handle(push));
    ASSERT_OK(Handle(push));  // the resend
    EXPECT_EQ(PullFloats(t, {1, 2, 3}), (std::vector<float>{unit, unit, unit}));
    // A resend of a push-pull answers the pull without applying the push again.
    Message pp = Request(MessageType::kPushPull, t, ValueType::kFloat32, 1,
                         {BytesOf<Key>({2}), BytesOf<float>({1}), Bytes()});
    Message reply;
    ASSERT_OK(Handle(pp, &reply));
    EXPECT_EQ(ValuesOf<float>(reply.frames[1]), (std::vector<float>{2 * unit}));
    ASSERT_OK(Handle(pp, &reply));
    EXPECT_EQ(ValuesOf<float>(reply.frames[1]), (std::vector<float>{2 * unit}));
    // A newer request over the same keys is applied.
    ASSERT_OK(PushFloats(t, {1, 2, 3}, {1, 1, 1}));
    EXPECT_EQ(PullFloats(t, {1, 2, 3}), (std::vector<float>{2 * unit, 3 * unit, 2 * unit}));
  }
}

// Exactly-once on the wire (item 15 of issue 11): two workers push three rounds to the same
// keys of a summing table and an SGD table over two servers; then each re-sends, through an
// intercepting transport under it, its round-1 push messages whole and its round-2 push
// messages cut to a sub-range of their keys -- copies of requests the servers already applied,
// arriving after later pushes of the same worker. Both workers use the same timestamps, so a
// clock that ignored the worker would drop the other's pushes. The final values must be the
// closed form of the three rounds, each applied once.
TEST(KVServerCoreWireTest, ResentPushesAndSubRangesOfThemAreAppliedOnce) {
  constexpr uint32_t kWorkers = 2;
  std::vector<pserver::testing::InterceptingTransport*> wires(kWorkers, nullptr);
  pserver::kv::LocalClusterOptions o;
  o.inproc = true;
  o.num_servers = 2;
  o.num_workers = kWorkers;
  o.wrap_transport = [&wires](Role role, uint32_t hint, std::unique_ptr<transport::Transport> inner)
      -> std::unique_ptr<transport::Transport> {
    if (role != Role::kWorker) return inner;
    auto t = std::make_unique<pserver::testing::InterceptingTransport>(std::move(inner));
    t->Record([](const Message& m) { return m.header.type == MessageType::kPush && !m.header.is_reply(); });
    wires[hint] = t.get();
    return t;
  };
  auto cluster = pserver::kv::LocalCluster::Start(o);
  ASSERT_OK(cluster);
  std::vector<Key> keys;
  for (Key k = 0; k < 64; ++k) keys.push_back(k * 7919);
  constexpr int kRounds = 3;
  std::atomic<size_t> resent{0};
  std::vector<std::vector<float>> sums(kWorkers), sgd(kWorkers);
  ASSERT_OK((*cluster)->RunWorkers([&](Node& node) -> Status {
    const uint32_t rank = node.rank().value;
    pserver::testing::InterceptingTransport* wire = wires[rank];
    PSERVER_RETURN_IF_FALSE(wire != nullptr);
    TableSpec sum_spec{.name = "sum", .value_type = ValueType::kFloat32, .width = 1};
    TableSpec sgd_spec{.name = "sgd", .value_type = ValueType::kFloat32, .width = 1};
    sgd_spec.updater = {.name = "sgd", .params = {{"lr", 0.5}}};
    PSERVER_ASSIGN_OR_RETURN(TableId t_sum, node.DeclareTable(sum_spec));
    PSERVER_ASSIGN_OR_RETURN(TableId t_sgd, node.DeclareTable(sgd_spec));
    KVWorker<float> kv(node);
    // Round r (1..3) pushes (rank + 1) * r to every key of both tables: requests 2r-1 and 2r.
    for (int r = 1; r <= kRounds; ++r) {
      const std::vector<float> vals(keys.size(), static_cast<float>((rank + 1) * r));
      PSERVER_ASSIGN_OR_RETURN(Timestamp a, kv.Push(t_sum, std::vector<Key>(keys), std::vector<float>(vals)));
      PSERVER_ASSIGN_OR_RETURN(Timestamp b, kv.Push(t_sgd, std::vector<Key>(keys), std::vector<float>(vals)));
      PSERVER_RETURN_IF_FALSE(a.value == 2 * r - 1 && b.value == 2 * r);
      PSERVER_RETURN_IF_ERROR(kv.Wait(a));
      PSERVER_RETURN_IF_ERROR(kv.Wait(b));
    }
    // The resends: rounds 1 (requests 1, 2) whole, round 2 (requests 3, 4) as a sub-range.
    size_t mine = 0;
    for (const Message& m : wire->Recorded()) {
      const size_t n = m.frames[0].size() / sizeof(Key);
      // Unsequenced (seq 0): a byte-exact copy would be dropped by the server's channel order
      // (cluster/channel_order.h) before the store saw it; as a resend over a new channel
      // would, these copies reach the store, whose clock must catch them.
      Message copy = m;
      copy.header.seq = 0;
      if (m.header.request_id <= 2) {
        PSERVER_RETURN_IF_ERROR(wire->Inject(copy));
      } else if (m.header.request_id <= 4 && n >= 3) {
        PSERVER_RETURN_IF_ERROR(wire->Inject(pserver::testing::KeySubRange(copy, 1, n - 1)));
      } else {
        continue;
      }
      ++mine;
    }
    PSERVER_RETURN_IF_FALSE(mine >= 8);  // 4 requests over 2 servers (every part has >= 3 keys)
    resent += mine;
    // Each resend is answered (the worker ignores the answer to a request it finished): once all
    // answers are in, the servers have handled every resend.
    const size_t originals = wire->Count(pserver::testing::Direction::kSend, pserver::testing::IsRequest(MessageType::kPush)) - mine;
    PSERVER_RETURN_IF_FALSE(wire->WaitFor(pserver::testing::Direction::kReceive,
                                          pserver::testing::IsReply(MessageType::kPush), originals + mine));
    PSERVER_RETURN_IF_ERROR(node.Barrier(BarrierGroup::kWorkers));
    SharedArray<float> a, b;
    PSERVER_ASSIGN_OR_RETURN(Timestamp pa, kv.Pull(t_sum, std::vector<Key>(keys), &a));
    PSERVER_ASSIGN_OR_RETURN(Timestamp pb, kv.Pull(t_sgd, std::vector<Key>(keys), &b));
    PSERVER_RETURN_IF_ERROR(kv.Wait(pa));
    PSERVER_RETURN_IF_ERROR(kv.Wait(pb));
    sums[rank].assign(a.begin(), a.end());
    sgd[rank].assign(b.begin(), b.end());
    return Status::Ok();
  }));
  EXPECT_GE(resent, 16u);
  // (1 + 2) workers' weights times (1 + 2 + 3) rounds, each push once.
  const float total = 3.0f * 6.0f;
  for (uint32_t w = 0; w < kWorkers; ++w) {
    EXPECT_EQ(sums[w], std::vector<float>(keys.size(), total)) << "worker " << w;
    EXPECT_EQ(sgd[w], std::vector<float>(keys.size(), -0.5f * total)) << "worker " << w;
  }
}

TEST_F(KVServerCoreTest, PullRepliesCarryTheRangesVectorClock) {
  core_->ServeDefault(ValueType::kFloat32, true);
  ASSERT_OK(PushFloats(TableId(1), {1, 2}, {1, 1}));   // request 1
  ASSERT_OK(PushFloats(TableId(1), {1, 2}, {1, 1}));   // request 2
  Message reply;
  ASSERT_OK(Handle(Request(MessageType::kPull, TableId(1), ValueType::kFloat32, 1,
                           {BytesOf<Key>({1, 2}), Bytes(), Bytes()}),
                   &reply));
  ASSERT_EQ(reply.frames.size(), 4u);
  EXPECT_EQ(ValuesOf<int64_t>(reply.frames[3]), (std::vector<int64_t>{2}));  // one worker, up to request 2
}

TEST_F(KVServerCoreTest, TableWithUnknownRuleOrBadParameterIsRefusedAtDeclaration) {
  TableSpec unknown{.name = "u", .value_type = ValueType::kFloat32, .width = 1};
  unknown.updater = {.name = "no_such_rule", .params = {}};
  EXPECT_TRUE(StatusIs(core_->OnTableDeclared(TableId(8), EncodeTableSpec(unknown)), StatusCode::kNotFound, "no_such_rule"));
  TableSpec bad{.name = "b", .value_type = ValueType::kFloat32, .width = 1};
  bad.updater = {.name = "adam", .params = {{"lr2", 1.0}}};
  EXPECT_TRUE(StatusIs(core_->OnTableDeclared(TableId(9), EncodeTableSpec(bad)), StatusCode::kInvalidArgument, "lr2"));
  TableSpec ints{.name = "i", .value_type = ValueType::kInt32, .width = 1};
  ints.updater = {.name = "sgd", .params = {}};
  EXPECT_EQ(core_->OnTableDeclared(TableId(10), EncodeTableSpec(ints)).code(), StatusCode::kInvalidArgument);
  // A peer's bytes are decoded and checked before anything is built from them.
  EXPECT_TRUE(StatusIs(core_->OnTableDeclared(TableId(11), transport::BytesFromString("junk")), StatusCode::kCorruption,
                       "malformed table spec"));
  // A filter this server does not know (a node of another build declared it), or a param it
  // does not take.
  TableSpec filtered{.name = "f", .value_type = ValueType::kFloat32, .width = 1};
  filtered.filters = {{"gzip", {}}};
  EXPECT_TRUE(StatusIs(core_->OnTableDeclared(TableId(13), EncodeTableSpec(filtered)), StatusCode::kInvalidArgument,
                       "server 0: table 'f': unknown filter 'gzip' (this node knows: keycache, zstd, lz4, fp16, q8, sigmod)"));
  filtered.filters = {{"lz4", {{"level", 3}}}};
  EXPECT_TRUE(StatusIs(core_->OnTableDeclared(TableId(14), EncodeTableSpec(filtered)), StatusCode::kInvalidArgument,
                       "no param 'level'"));
  TableSpec nameless{.name = "", .value_type = ValueType::kFloat32, .width = 1};
  EXPECT_TRUE(StatusIs(core_->OnTableDeclared(TableId(12), EncodeTableSpec(nameless)), StatusCode::kInvalidArgument,
                       "1 to 128 bytes"));
}

}  // namespace
}  // namespace pserver::kv
