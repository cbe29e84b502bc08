// Issue 11, items 10 and 11: no control message from a stranger, and peers named by role.
//
// 10. One forged, well-formed kShutdown -- any program that reached a server's port could send
//     it, with the scheduler's id in the header -- made the server exit mid-job (status 0, no log
//     line), or fail its registration with an error blaming the scheduler. Now a node believes
//     control messages only from the scheduler's connection and data messages only from the
//     connections of its peers: the test sends, from a plain ZeroMQ socket, a shutdown during
//     the server's registration, then mid-job a shutdown to the server and to the worker and a
//     push in the worker's name. The server must log and count each, the worker's values must be
//     exactly what it pushed, and every process must end the job normally.
// 11. A worker whose scheduler was SIGKILLed names it "the scheduler (node 0)".
//
// The worker of the first test is this test process (the public API); the scheduler and the
// server are the `pserver` binary. Waits are on output lines and exits, with a hang guard that
// detects hangs and asserts nothing about speed.
#include <gtest/gtest.h>
#include <signal.h>
#include <zmq.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pserver/pserver.h"
#include "testing/test_util.h"
#include "tests/integration/process_expectations.h"
#include "tests/integration/subprocess.h"

namespace pserver::testing {
namespace {

using std::chrono::milliseconds;

constexpr std::chrono::seconds kHangGuard{60};
// Heartbeats as in the fault tests: the scheduler, which judges the nodes, never has to detect
// one here, so it gets kNeverMs and a live but starved node (a parallel ctest on two cores) is
// not taken for dead; the nodes judge the scheduler -- killed in one test -- with kDetectMs. The
// send timeout stays above the detecting timeout.
const std::string kHeartbeatIntervalMs = "100";
const std::string kDetectMs = "10000";
const std::string kNeverMs = "45000";
const std::string kSendTimeoutMs = "12000";

std::string ExitOf(Subprocess& p, const std::string& who) { return testing::ExitOf(p, who, kHangGuard); }

// A message as docs/wire_format.md lays it out, written by hand: the 72-byte header (version 14), the frame
// table, then every payload frame inline, padded to 8 bytes.
struct WireMessage {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint32_t sender = 0;
  uint32_t receiver = 0;
  uint32_t table = 0;
  uint8_t value_type = 0;
  uint8_t status = 0;
  uint32_t width = 0;
  uint64_t request_id = 0;
  uint32_t seq = 0;  // a data request's number on its sender's channel
  std::vector<std::string> frames;

  std::string Encode() const {
    std::string b;
    auto put = [&b](uint64_t v, int bytes) {
      for (int i = 0; i < bytes; ++i) b.push_back(static_cast<char>(v >> (8 * i)));
    };
    b += "PSRV";
    put(14, 2);  // wire version
    put(type, 1);
    put(flags, 1);
    put(sender, 4);
    put(receiver, 4);
    put(table, 4);
    put(value_type, 1);
    put(status, 1);
    put(frames.size(), 2);
    put(width, 4);
    put(0, 4);  // reserved
    put(request_id, 8);
    put(1, 8);  // epoch
    put(0, 8);  // clock
    put(0, 8);  // aux
    put(seq, 4);
    put(0, 4);  // part
    for (const std::string& f : frames) put(f.size(), 8);
    for (const std::string& f : frames) {
      b += f;
      b.append((8 - f.size() % 8) % 8, '\0');
    }
    return b;
  }
};

constexpr uint8_t kShutdown = 10;
constexpr uint8_t kPush = 32;
constexpr uint8_t kFlagError = 2;

WireMessage ForgedShutdown(uint32_t receiver) {
  WireMessage m;
  m.type = kShutdown;
  m.flags = kFlagError;
  m.sender = 0;  // the scheduler's id
  m.receiver = receiver;
  m.status = 7;  // kInternal
  m.frames = {"forged: the job is over"};
  return m;
}

template <typename T>
std::string Raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// A plain ZeroMQ DEALER connected to one node: what any program that reaches the port can do.
class Stranger {
 public:
  // `routing_id`, when not empty, is presented on the connection (a guess at a pserver identity).
  explicit Stranger(const std::string& address, const std::string& routing_id = "") {
    context_ = zmq_ctx_new();
    socket_ = zmq_socket(context_, ZMQ_DEALER);
    int linger = 5000;
    zmq_setsockopt(socket_, ZMQ_LINGER, &linger, sizeof(linger));
    if (!routing_id.empty()) zmq_setsockopt(socket_, ZMQ_ROUTING_ID, routing_id.data(), routing_id.size());
    connected_ = zmq_connect(socket_, address.c_str()) == 0;
  }
  ~Stranger() {
    zmq_close(socket_);
    zmq_ctx_term(context_);
  }
  Stranger(const Stranger&) = delete;
  Stranger& operator=(const Stranger&) = delete;

  bool Send(const WireMessage& m) {
    const std::string bytes = m.Encode();
    return connected_ && zmq_send(socket_, bytes.data(), bytes.size(), 0) == static_cast<int>(bytes.size());
  }

 private:
  void* context_ = nullptr;
  void* socket_ = nullptr;
  bool connected_ = false;
};

class ForgedControlTest : public ::testing::Test {
 protected:
  void StartScheduler(int servers, int workers) {
    auto s = Subprocess::Spawn({PserverBinary(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--num-servers",
                                std::to_string(servers), "--num-workers", std::to_string(workers),
                                "--heartbeat-interval-ms", kHeartbeatIntervalMs, "--heartbeat-timeout-ms",
                                kNeverMs, "--send-timeout-ms", kSendTimeoutMs});
    ASSERT_OK(s);
    scheduler_ = std::move(*s);
    const std::string marker = "scheduler listening at ";
    std::optional<std::string> line = scheduler_->WaitForLine(marker, kHangGuard);
    ASSERT_TRUE(line.has_value()) << scheduler_->output();
    address_ = line->substr(marker.size());
  }

  // Starts a server and returns the address it listens at (from its log, before it registers).
  void StartServer(std::string* address) {
    auto s = Subprocess::Spawn({PserverBinary(), "server", "--scheduler", address_, "--host", "127.0.0.1",
                                "--heartbeat-interval-ms", kHeartbeatIntervalMs, "--heartbeat-timeout-ms",
                                kDetectMs, "--send-timeout-ms", kSendTimeoutMs});
    ASSERT_OK(s);
    server_ = std::move(*s);
    const std::string marker = "server listening at ";
    ASSERT_TRUE(server_->WaitForOutput("; registering with the scheduler", kHangGuard)) << server_->output();
    const std::string out = server_->output();
    const size_t at = out.find(marker) + marker.size();
    *address = out.substr(at, out.find(';', at) - at);
    ASSERT_EQ(address->rfind("tcp://127.0.0.1:", 0), 0u) << *address;
  }

  std::string address_;
  std::unique_ptr<Subprocess> scheduler_;
  std::unique_ptr<Subprocess> server_;
};

TEST_F(ForgedControlTest, ForgedShutdownsAndPushesFromAStrangerAreDroppedAndTheJobEndsWell) {
  const uint64_t seed = TestSeed();  // printed; the test itself is not randomised
  (void)seed;
  ASSERT_NO_FATAL_FAILURE(StartScheduler(1, 1));
  std::string server_address;
  ASSERT_NO_FATAL_FAILURE(StartServer(&server_address));

  // During registration: the server has asked the scheduler in but has no answer yet (the
  // worker is missing). A shutdown from an anonymous connection, and one from a connection that
  // presents a made-up routing id in the form of a pserver identity.
  Stranger anonymous(server_address);
  std::string guess(21, '\x5a');
  guess[0] = 'P';
  Stranger guesser(server_address, guess);
  ASSERT_TRUE(anonymous.Send(ForgedShutdown(1)));
  ASSERT_TRUE(guesser.Send(ForgedShutdown(1)));
  ASSERT_TRUE(server_->WaitForOutput("; 2 dropped so far", kHangGuard)) << server_->output();
  EXPECT_TRUE(Contains(server_->output(), "during registration, from a connection that is not the scheduler's"));

  // The worker (this process) joins; the cluster forms.
  NodeOptions o;
  o.role = Role::kWorker;
  o.scheduler_address = address_;
  o.heartbeat_interval = milliseconds(100);
  o.heartbeat_timeout = milliseconds(3000);
  o.send_timeout = milliseconds(4000);
  Result<std::unique_ptr<Node>> started = Node::Start(o);
  ASSERT_OK(started);
  Node& worker = **started;
  TableSpec spec;
  spec.name = "w";
  Result<TableId> table = worker.DeclareTable(spec);
  ASSERT_OK(table);
  KVWorker<float> kv(worker);
  const std::vector<Key> keys = {3, 17, 99};
  Result<Timestamp> pushed = kv.Push(*table, SharedArray<Key>(std::vector<Key>(keys)), SharedArray<float>(std::vector<float>{1, 2, 3}));
  ASSERT_OK(pushed);
  ASSERT_OK(kv.Wait(*pushed));

  // Mid-job: a shutdown to the server and to the worker, and a push in the worker's name.
  ASSERT_TRUE(anonymous.Send(ForgedShutdown(1)));
  Stranger to_worker(worker.address());
  ASSERT_TRUE(to_worker.Send(ForgedShutdown(worker.id().value)));
  WireMessage push;
  push.type = kPush;
  push.sender = worker.id().value;
  push.receiver = 1;
  push.table = table->value;
  push.value_type = 1;  // float32
  push.width = 1;
  push.request_id = uint64_t{1} << 40;
  push.seq = 2;  // as the worker's next request would be numbered (refused before it is read)
  push.frames = {Raw(keys), Raw(std::vector<float>{100, 100, 100}), ""};
  ASSERT_TRUE(anonymous.Send(push));
  ASSERT_TRUE(server_->WaitForOutput("; 4 dropped so far", kHangGuard)) << server_->output();
  EXPECT_TRUE(Contains(server_->output(), "dropped shutdown error from node 0"));
  EXPECT_TRUE(Contains(server_->output(), "dropped push from node " + std::to_string(worker.id().value)));

  // The server still serves, and holds exactly what the worker pushed.
  SharedArray<float> vals;
  Result<Timestamp> pulled = kv.Pull(*table, SharedArray<Key>(std::vector<Key>(keys)), &vals);
  ASSERT_OK(pulled);
  ASSERT_OK(kv.Wait(*pulled));
  EXPECT_EQ(std::vector<float>(vals.begin(), vals.end()), (std::vector<float>{1, 2, 3}));
  EXPECT_OK(worker.health());

  EXPECT_OK(worker.Finalize());
  EXPECT_EQ(ExitOf(*server_, "server"), "exit 0") << server_->output();
  EXPECT_EQ(ExitOf(*scheduler_, "scheduler"), "exit 0") << scheduler_->output();
  // The server said why it ended, and who ended it.
  EXPECT_TRUE(Contains(server_->output(), "the scheduler (node 0) ended the job"));
}

TEST_F(ForgedControlTest, WorkerOfAKilledSchedulerNamesTheSchedulerByRole) {
  const uint64_t seed = TestSeed();
  ASSERT_NO_FATAL_FAILURE(StartScheduler(1, 1));
  std::string server_address;
  ASSERT_NO_FATAL_FAILURE(StartServer(&server_address));
  auto w = Subprocess::Spawn({CheckWorkerBinary(), "--scenario", "wait_forever", "--seed", std::to_string(seed),
                              "--heartbeat-interval-ms", kHeartbeatIntervalMs, "--send-timeout-ms", kSendTimeoutMs},
                             {{"PSERVER_SCHEDULER", address_},
                              {"PSERVER_HOST", "127.0.0.1"},
                              {"PSERVER_NUM_SERVERS", "1"},
                              {"PSERVER_NUM_WORKERS", "1"},
                              {"PSERVER_HEARTBEAT_TIMEOUT_MS", kDetectMs}});
  ASSERT_OK(w);
  Subprocess& worker = **w;
  ASSERT_TRUE(worker.WaitForOutput("pushing", kHangGuard)) << worker.output();

  scheduler_->Signal(SIGKILL);
  EXPECT_EQ(ExitOf(*scheduler_, "scheduler"), "killed by signal 9 (SIGKILL)");
  EXPECT_EQ(ExitOf(worker, "worker"), "exit 3") << worker.output();
  EXPECT_TRUE(Contains(worker.output(), "the scheduler (node 0)"));
  EXPECT_FALSE(Contains(worker.output(), "to node 0"));  // never the bare id
  EXPECT_NE(ExitOf(*server_, "server"), "exit 0");
  EXPECT_TRUE(Contains(server_->output(), "the scheduler (node 0)"));
}

}  // namespace
}  // namespace pserver::testing
