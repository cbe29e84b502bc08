// The scheduler's state in a Store (docs/durability.md, section 6): one JSON document at key
// "job/state", written by compare-and-swap over the version this scheduler last wrote or read,
// so that only one scheduler of a job ever writes it (a second one, started by mistake on the
// same store while the first lives, fails at its first write and ends its job).
//
// The document holds what a scheduler needs to go on with a running job: the members (ids,
// roles, ranks, addresses, the identities their connections present and those the scheduler
// presents back to them, their state), the current view (encoded as on the wire), the table
// registry, the counters of ids, ranks and tables, the lost workers and failovers, and the last
// release of each barrier group. Not in it: what a resumed scheduler can learn again or redo
// (heartbeat times, the servers' "replicas complete" epochs, which every heartbeat repeats; a
// barrier's arrivals, a declaration's announcements, a status or a checkpoint under way, which
// the nodes ask for again or the tool times out on). A membership change that was running is
// marked, and not resumed: the job then ends (the servers were between two placements).
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "base/logging.h"
#include "cluster/scheduler.h"

namespace pserver::cluster {

using nlohmann::json;
using transport::Message;
using transport::MessageType;

namespace {

constexpr const char* kStateKey = "job/state";
constexpr int kStateFormat = 1;

std::string Base64Of(const transport::Bytes& b) {
  return absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
}

Result<transport::Bytes> BytesOfBase64(const json& j, const char* what) {
  std::string raw;
  if (!j.is_string() || !absl::Base64Unescape(j.get<std::string>(), &raw)) {
    return Status::Corruption(fmt::format("the recorded job state has a malformed {}", what));
  }
  return transport::BytesFromString(std::move(raw));
}

json IdentityJson(const transport::ConnectionId& c) { return json::array({c.hi, c.lo}); }

transport::ConnectionId IdentityOf(const json& j) {
  transport::ConnectionId c;
  c.hi = j.at(0).get<uint64_t>();
  c.lo = j.at(1).get<uint64_t>();
  return c;
}

}  // namespace

json Scheduler::StateDocument(bool ended) const {
  json members = json::array();
  for (const Member& m : members_) {
    members.push_back({{"id", m.info.id.value},
                       {"role", m.info.role == Role::kServer ? "server" : "worker"},
                       {"rank", m.info.rank.value},
                       {"address", m.info.address},
                       {"identity", IdentityJson(m.info.identity)},
                       {"scheduler_identity", IdentityJson(m.scheduler_identity)},
                       {"finalized", m.finalized},
                       {"dead", m.dead},
                       {"joining", m.joining},
                       {"draining", m.draining},
                       {"left", m.left}});
  }
  json tables = json::array();
  for (const auto& [name, entry] : tables_) {
    tables.push_back({{"name", name}, {"id", entry.first.value}, {"declaration", Base64Of(Encode(entry.second))}});
  }
  std::sort(tables.begin(), tables.end(), [](const json& a, const json& b) { return a["id"] < b["id"]; });
  json lost = json::array();
  for (const LostWorker& w : lost_workers_) {
    lost.push_back({{"id", w.id.value}, {"description", w.description}, {"taken_over_by", w.taken_over_by.value}});
  }
  json releases = json::array();
  for (const auto& group : last_release_) {
    json calls = json::array();
    for (const auto& [node, call] : group) calls.push_back(json::array({node.value, call}));
    std::sort(calls.begin(), calls.end());
    releases.push_back(std::move(calls));
  }
  return {{"format", kStateFormat},
          {"generation", generation_},
          {"ended", ended},
          {"outcome", ended ? (outcome_.ok() ? std::string("ok") : outcome_.ToString()) : std::string()},
          {"address", address_},
          {"num_servers", options_.num_servers},
          {"num_workers", options_.num_workers},
          {"replicas", options_.replicas},
          {"next_id", next_id_},
          {"next_rank", json::array({next_rank_[0], next_rank_[1]})},
          {"next_table", next_table_},
          {"ring_epoch", ring_epoch_.value},
          {"epoch", view_.epoch.value},
          {"view", Base64Of(Encode(view_))},
          {"members", std::move(members)},
          {"tables", std::move(tables)},
          {"lost_workers", std::move(lost)},
          {"failovers", failovers_},
          {"barrier_releases", std::move(releases)},
          {"change_running", migration_.has_value()}};
}

void Scheduler::Persist(bool ended) {
  if (!store_ || !formed_ || ended_) return;
  std::string text = StateDocument(ended).dump(-1, ' ', false, json::error_handler_t::replace);
  if (persisted_ && *persisted_ == text) return;
  Result<bool> swapped = store_->CompareAndSwap(kStateKey, persisted_, text);
  Status failed;
  if (!swapped.ok()) {
    failed = swapped.status();
  } else if (!*swapped) {
    failed = Status::Aborted(fmt::format("{} holds a job state this scheduler did not write: another scheduler runs "
                                         "this job",
                                         store_->Describe()));
  }
  if (failed.ok()) {
    persisted_ = std::move(text);
    return;
  }
  // A scheduler whose state may not survive it is not what the job asked for: end the job
  // rather than go on with promises a restart could not keep.
  PSERVER_LOG_ERROR("scheduler: cannot record the job's state: {}", failed.ToString());
  store_.reset();  // nothing more is written (Abort would try to record the end)
  if (!ended) Abort(Status(failed.code(), "the scheduler cannot record the job's state: " + failed.message()));
}

Status Scheduler::OpenStore(std::optional<json>* running) {
  running->reset();
  PSERVER_ASSIGN_OR_RETURN(store_, cluster::OpenStore(options_.store));
  Result<std::string> raw = store_->Get(kStateKey);
  if (!raw.ok() && raw.status().code() == StatusCode::kNotFound) return Status::Ok();
  if (!raw.ok()) return raw.status();
  persisted_ = *raw;
  json state = json::parse(*raw, nullptr, /*allow_exceptions=*/false);
  if (state.is_discarded() || !state.is_object()) {
    return Status::Corruption(fmt::format("{}: the recorded job state at {} is not a JSON object", store_->Describe(),
                                          kStateKey));
  }
  const auto ended = state.find("ended");
  const auto outcome = state.find("outcome");
  if (ended == state.end() || !ended->is_boolean() || outcome == state.end() || !outcome->is_string()) {
    return Status::Corruption(fmt::format("{}: the recorded job state at {} lacks a boolean 'ended' or a string "
                                          "'outcome'",
                                          store_->Describe(), kStateKey));
  }
  if (ended->get<bool>()) {
    PSERVER_LOG_INFO("scheduler: the job recorded in {} ended ({}); a new job replaces it", store_->Describe(),
                     outcome->get<std::string>());
    return Status::Ok();
  }
  *running = std::move(state);
  return Status::Ok();
}

Status Scheduler::Resume(const json& state) {
  try {
    if (state.at("format").get<int>() != kStateFormat) {
      return Status::InvalidArgument(fmt::format("the recorded job state is of format {}, this scheduler reads {}",
                                                 state.at("format").get<int>(), kStateFormat));
    }
    if (state.at("change_running").get<bool>()) {
      return Status::Unavailable(
          "the job's scheduler died during a membership change (a join or a drain), which a new scheduler cannot "
          "take over: the servers were between two placements. Resume the job from its last checkpoint "
          "(docs/durability.md)");
    }
    generation_ = state.at("generation").get<uint64_t>() + 1;
    next_id_ = state.at("next_id").get<uint32_t>();
    next_rank_[0] = state.at("next_rank").at(0).get<uint32_t>();
    next_rank_[1] = state.at("next_rank").at(1).get<uint32_t>();
    next_table_ = state.at("next_table").get<uint32_t>();
    ring_epoch_ = Epoch(state.at("ring_epoch").get<uint64_t>());
    PSERVER_ASSIGN_OR_RETURN(transport::Bytes view, BytesOfBase64(state.at("view"), "view"));
    PSERVER_ASSIGN_OR_RETURN(view_, DecodeClusterView(view));
    PSERVER_ASSIGN_OR_RETURN(PartitionPlacement placement, PartitionPlacement::FromSegments(view_.ring));
    placement_ = std::move(placement);
    const auto now = std::chrono::steady_clock::now();
    for (const json& j : state.at("members")) {
      Member m;
      m.info.id = NodeId(j.at("id").get<uint32_t>());
      m.info.role = j.at("role").get<std::string>() == "server" ? Role::kServer : Role::kWorker;
      m.info.rank = Rank(j.at("rank").get<uint32_t>());
      m.info.address = j.at("address").get<std::string>();
      m.info.identity = IdentityOf(j.at("identity"));
      m.scheduler_identity = IdentityOf(j.at("scheduler_identity"));
      m.finalized = j.at("finalized").get<bool>();
      m.dead = j.at("dead").get<bool>();
      m.joining = j.at("joining").get<bool>();
      m.draining = j.at("draining").get<bool>();
      m.left = j.at("left").get<bool>();
      m.last_seen = now;  // each live member has heartbeat_timeout to be heard from
      member_index_[m.info.id] = members_.size();
      members_.push_back(std::move(m));
    }
    for (const json& j : state.at("tables")) {
      PSERVER_ASSIGN_OR_RETURN(transport::Bytes bytes, BytesOfBase64(j.at("declaration"), "table declaration"));
      PSERVER_ASSIGN_OR_RETURN(TableDeclaration declaration, DecodeTableDeclaration(bytes));
      tables_.emplace(j.at("name").get<std::string>(),
                      std::make_pair(TableId(j.at("id").get<uint32_t>()), std::move(declaration)));
    }
    for (const json& j : state.at("lost_workers")) {
      lost_workers_.push_back({NodeId(j.at("id").get<uint32_t>()), j.at("description").get<std::string>(),
                               NodeId(j.at("taken_over_by").get<uint32_t>())});
    }
    failovers_ = state.at("failovers").get<std::vector<std::string>>();
    const json& releases = state.at("barrier_releases");
    for (size_t g = 0; g < 3 && g < releases.size(); ++g) {
      for (const json& call : releases[g]) {
        last_release_[g][NodeId(call.at(0).get<uint32_t>())] = call.at(1).get<int64_t>();
      }
    }
  } catch (const json::exception& e) {
    return Status::Corruption(fmt::format("the recorded job state cannot be read: {}", e.what()));
  }
  // Back to every live member, presenting what it asked for; each is sent the current view as
  // soon as its connection is up (the first message heard from it after that).
  for (const Member& m : members_) {
    if (m.dead || m.left) continue;
    PSERVER_RETURN_IF_ERROR(transport_->Connect(m.info.id, m.info.address, m.scheduler_identity));
    transport_->Watch(m.info.id);
    transport_->NamePeer(m.info.id, Describe(m.info.id));
    Message view;
    view.header.type = MessageType::kViewChange;
    view.header.receiver = m.info.id;
    view.header.epoch = view_.epoch;
    view.frames.push_back(Encode(view_));
    outbox_[m.info.id].push_back(std::move(view));  // the connection is not up yet
  }
  // A join or drain that was waiting its turn is queued again (its admission view is in place).
  for (const Member& m : members_) {
    if (m.dead || m.left) continue;
    if (m.joining) changes_.push_back(Change{Change::kJoin, m.info.id, {}});
    if (m.draining) changes_.push_back(Change{Change::kDrain, m.info.id, {}});
  }
  formed_ = true;
  PSERVER_LOG_INFO("scheduler: resumed the job recorded in {} (scheduler generation {}, view of epoch {}: {} servers, "
                   "{} workers)",
                   store_->Describe(), generation_, view_.epoch.value, view_.num_servers, view_.num_workers);
  return Status::Ok();
}

}  // namespace pserver::cluster
