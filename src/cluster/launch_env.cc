#include "pserver/launch_env.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdlib>
#include <string>

namespace pserver {
namespace {

// Reads an integer variable into *out if it is set (and not empty). kInvalidArgument naming
// the variable, its value and the accepted range if it is not an integer in [min, max].
Status ReadInt(const char* name, int64_t min, int64_t max, int64_t* out) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return Status::Ok();
  std::string s(v);
  int64_t parsed = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), parsed);
  if (ec != std::errc() || end != s.data() + s.size() || parsed < min || parsed > max) {
    return Status::InvalidArgument(fmt::format("{}='{}' is not an integer in [{}, {}]", name, s, min, max));
  }
  *out = parsed;
  return Status::Ok();
}

// Bounds of the variables: node counts and ranks fit the cluster's 32-bit fields many times
// over; a timeout or interval of more than a day is a typo, not a setting.
constexpr int64_t kMaxNodes = 1 << 20;
constexpr int64_t kMaxMillis = int64_t{24} * 3600 * 1000;

}  // namespace

Result<NodeOptions> NodeOptionsFromEnvironment() {
  NodeOptions o;
  const char* role = std::getenv("PSERVER_ROLE");
  std::string r = role ? role : "worker";
  if (r == "worker") {
    o.role = Role::kWorker;
  } else if (r == "server") {
    o.role = Role::kServer;
  } else {
    return Status::InvalidArgument(fmt::format("PSERVER_ROLE='{}': expected server or worker", r));
  }
  const char* sched = std::getenv("PSERVER_SCHEDULER");
  if (sched == nullptr || *sched == '\0') {
    return Status::InvalidArgument("PSERVER_SCHEDULER is not set (start the program under `pserver launch`, "
                                   "or set it to the scheduler's tcp://host:port)");
  }
  o.scheduler_address = sched;
  if (const char* host = std::getenv("PSERVER_HOST"); host && *host) o.host = host;
  int64_t v = -1;
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_NUM_SERVERS", 1, kMaxNodes, &v));
  if (v >= 0) o.num_servers = static_cast<uint32_t>(v);
  v = -1;
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_NUM_WORKERS", 1, kMaxNodes, &v));
  if (v >= 0) o.num_workers = static_cast<uint32_t>(v);
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_RANK_HINT", 0, kMaxNodes - 1, &o.rank_hint));
  v = -1;
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_HEARTBEAT_TIMEOUT_MS", 1, kMaxMillis, &v));
  if (v > 0) o.heartbeat_timeout = std::chrono::milliseconds(v);
  v = -1;
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_REGISTER_TIMEOUT_MS", 1, kMaxMillis, &v));
  if (v > 0) o.register_timeout = std::chrono::milliseconds(v);
  v = -1;
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_HEARTBEAT_INTERVAL_MS", 1, kMaxMillis, &v));
  if (v > 0) o.heartbeat_interval = std::chrono::milliseconds(v);
  v = -1;
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_SEND_TIMEOUT_MS", 1, kMaxMillis, &v));
  if (v > 0) o.send_timeout = std::chrono::milliseconds(v);
  v = -1;
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_METRICS_PORT", -1, 65535, &v));
  o.metrics_port = static_cast<int32_t>(v);
  return o;
}

}  // namespace pserver
