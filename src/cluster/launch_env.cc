#include "pserver/launch_env.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdlib>
#include <string>

namespace pserver {
namespace {

// Reads an integer variable into *out if it is set. kInvalidArgument naming it if malformed.
Status ReadInt(const char* name, int64_t* out) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return Status::Ok();
  std::string s(v);
  int64_t parsed = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), parsed);
  if (ec != std::errc() || end != s.data() + s.size() || parsed < 0) {
    return Status::InvalidArgument(fmt::format("{}='{}' is not a non-negative integer", name, s));
  }
  *out = parsed;
  return Status::Ok();
}

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
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_NUM_SERVERS", &v));
  if (v >= 0) o.num_servers = static_cast<uint32_t>(v);
  v = -1;
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_NUM_WORKERS", &v));
  if (v >= 0) o.num_workers = static_cast<uint32_t>(v);
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_RANK_HINT", &o.rank_hint));
  v = -1;
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_HEARTBEAT_TIMEOUT_MS", &v));
  if (v > 0) o.heartbeat_timeout = std::chrono::milliseconds(v);
  v = -1;
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_REGISTER_TIMEOUT_MS", &v));
  if (v > 0) o.register_timeout = std::chrono::milliseconds(v);
  v = -1;
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_HEARTBEAT_INTERVAL_MS", &v));
  if (v > 0) o.heartbeat_interval = std::chrono::milliseconds(v);
  v = -1;
  PSERVER_RETURN_IF_ERROR(ReadInt("PSERVER_SEND_TIMEOUT_MS", &v));
  if (v > 0) o.send_timeout = std::chrono::milliseconds(v);
  return o;
}

}  // namespace pserver
