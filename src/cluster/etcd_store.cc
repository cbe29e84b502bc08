// The etcd store of store.h: etcd's v3 API through its JSON gateway (POST /v3/kv/range, put,
// deleterange, txn; keys and values base64 in the JSON), with cpp-httplib from Debian (Debian
// ships no C++ etcd client). Each store key is the etcd key PREFIX + key.
#include <fmt/format.h>

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "base/mutex.h"
#include "cluster/store.h"

namespace pserver::cluster {
namespace {

using nlohmann::json;

std::string B64(std::string_view s) { return absl::Base64Escape(absl::string_view(s.data(), s.size())); }

class EtcdStore final : public Store {
 public:
  EtcdStore(std::string endpoint, std::string prefix, std::chrono::milliseconds timeout)
      : endpoint_(std::move(endpoint)), prefix_(std::move(prefix)), timeout_(timeout), client_(endpoint_) {
    const auto sec = static_cast<time_t>(timeout.count() / 1000);
    const auto usec = static_cast<time_t>(timeout.count() % 1000 * 1000);
    client_.set_connection_timeout(sec, usec);
    client_.set_read_timeout(sec, usec);
    client_.set_write_timeout(sec, usec);
    // One connection for every request: a scheduler writes its state at each barrier, and a
    // connection per request would leave thousands of sockets in TIME_WAIT.
    client_.set_keep_alive(true);
  }

  // From now on a request that fails for want of an answer is tried again (see Call).
  void RetryFor(std::chrono::milliseconds budget) { retry_for_ = budget; }

  std::string Describe() const override { return fmt::format("etcd at {} (prefix {})", endpoint_, prefix_); }

  Result<std::string> Get(std::string_view key) override {
    PSERVER_RETURN_IF_ERROR(CheckStoreKey(key));
    PSERVER_ASSIGN_OR_RETURN(json reply, Call("range", {{"key", B64(prefix_ + std::string(key))}}, key));
    PSERVER_ASSIGN_OR_RETURN(auto kvs, Pairs(reply, key));
    if (kvs.empty()) return Status::NotFound(fmt::format("{}: no value for {}", Describe(), key));
    Remember(key, kvs.front().second, RevisionOf(reply["kvs"][0], "mod_revision"));
    return std::move(kvs.front().second);
  }

  Status Put(std::string_view key, std::string_view value) override {
    PSERVER_RETURN_IF_ERROR(CheckValue(key, value));
    PSERVER_ASSIGN_OR_RETURN(json reply, Call("put", {{"key", B64(prefix_ + std::string(key))}, {"value", B64(value)}}, key));
    Remember(key, std::string(value), RevisionOf(reply.value("header", json::object()), "revision"));
    return Status::Ok();
  }

  Result<bool> CompareAndSwap(std::string_view key, const std::optional<std::string>& expected,
                              std::string_view value) override {
    PSERVER_RETURN_IF_ERROR(CheckValue(key, value));
    const std::string k = B64(prefix_ + std::string(key));
    // "The key has no value" is "its create revision is 0" in etcd. A value this store read or
    // wrote last is compared by its revision (the request then need not carry it: etcd limits a
    // request to 1.5 MiB by default), any other by its bytes.
    json compare = json{{"key", k}, {"target", "CREATE"}, {"result", "EQUAL"}, {"create_revision", "0"}};
    if (expected) {
      const int64_t revision = KnownRevision(key, *expected);
      compare = revision > 0 ? json{{"key", k}, {"target", "MOD"}, {"result", "EQUAL"}, {"mod_revision", std::to_string(revision)}}
                             : json{{"key", k}, {"target", "VALUE"}, {"result", "EQUAL"}, {"value", B64(*expected)}};
    }
    json txn = {{"compare", json::array({compare})},
                {"success", json::array({json{{"request_put", {{"key", k}, {"value", B64(value)}}}}})}};
    bool ambiguous = false;
    PSERVER_ASSIGN_OR_RETURN(json reply, Call("txn", txn, key, &ambiguous));
    // The gateway leaves out fields at their default: no "succeeded" means false.
    const auto it = reply.find("succeeded");
    const bool swapped = it != reply.end() && it->is_boolean() && it->get<bool>();
    if (swapped) {
      Remember(key, std::string(value), RevisionOf(reply.value("header", json::object()), "revision"));
      return true;
    }
    // A try that went unanswered may have been applied, and then the compare of the next one
    // fails on this very value: the swap happened if the key holds it now.
    if (ambiguous) {
      Result<std::string> now = Get(key);
      if (now.ok()) return *now == value;
      if (now.status().code() != StatusCode::kNotFound) return now.status();
    }
    return false;
  }

  Status Delete(std::string_view key) override {
    PSERVER_RETURN_IF_ERROR(CheckStoreKey(key));
    {
      MutexLock lock(&mu_);
      known_.erase(std::string(key));
    }
    return Call("deleterange", {{"key", B64(prefix_ + std::string(key))}}, key).status();
  }

  Result<std::vector<std::pair<std::string, std::string>>> List(std::string_view prefix) override {
    const std::string from = prefix_ + std::string(prefix);
    // Every key that starts with `from`: [from, from with its last byte + 1). Keys are ASCII
    // and `from` ends in a key character or '/', so the last byte is never 0xff.
    std::string end = from;
    end.back() = static_cast<char>(end.back() + 1);
    PSERVER_ASSIGN_OR_RETURN(json reply, Call("range", {{"key", B64(from)}, {"range_end", B64(end)}}, prefix));
    return Pairs(reply, prefix);
  }

 private:
  Status CheckValue(std::string_view key, std::string_view value) const {
    return CheckStoreEntry(Describe(), key, value);
  }

  // POSTs `body` to /v3/kv/<what>; the reply's JSON, or an error naming the store, the
  // operation and `key`. A try that gets no answer (a connection refused or reset, a timeout)
  // or an HTTP 5xx (etcd electing a leader, a request that timed out inside etcd) is repeated,
  // with a growing pause, until retry_for_ has passed since the first: etcd is briefly
  // unavailable in normal operation. *ambiguous (if given) is set when an unanswered try may
  // have been applied.
  Result<json> Call(const char* what, const json& body, std::string_view key, bool* ambiguous = nullptr) {
    auto fail = [&](const std::string& why) {
      return Status::Unavailable(fmt::format("{}: {} of '{}' failed: {}", Describe(), what, key, why));
    };
    const std::string path = fmt::format("/v3/kv/{}", what);
    const std::string text = body.dump();
    const auto give_up = std::chrono::steady_clock::now() + retry_for_;
    auto pause = std::chrono::milliseconds(20);
    int tries = 0;
    for (;;) {
      ++tries;
      const httplib::Result res = [&] {
        MutexLock lock(&mu_);
        return client_.Post(path.c_str(), text, "application/json");
      }();
      std::string why;
      if (!res) {
        // Connect failures were never sent; any other may have reached etcd.
        if (ambiguous && res.error() != httplib::Error::Connection) *ambiguous = true;
        why = fmt::format("{} (no answer within {} ms, or the connection failed)", httplib::to_string(res.error()),
                          timeout_.count());
      } else if (res->status >= 500) {
        if (ambiguous) *ambiguous = true;
        why = fmt::format("HTTP {}: {}", res->status, res->body.substr(0, 200));
      } else {
        return Answer(*res, fail);
      }
      if (std::chrono::steady_clock::now() + pause >= give_up) {
        return fail(tries == 1 ? why : fmt::format("{} ({} tries over {} ms)", why, tries, retry_for_.count()));
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(1000));
    }
  }

  // The JSON of an answer; `fail` makes the error of one that is not a success.
  template <typename Fail>
  static Result<json> Answer(const httplib::Response& res, Fail&& fail) {
    json reply = json::parse(res.body, nullptr, /*allow_exceptions=*/false);
    if (res.status != 200) {
      std::string message = res.body;
      if (!reply.is_discarded() && reply.is_object() && reply.contains("message") && reply["message"].is_string()) {
        message = reply["message"].get<std::string>();
      }
      return fail(fmt::format("HTTP {}: {}", res.status, message));
    }
    if (reply.is_discarded() || !reply.is_object()) return fail("the answer is not a JSON object: " + res.body.substr(0, 200));
    return reply;
  }

  // The key-value pairs of a range answer, without the prefix, in key order.
  Result<std::vector<std::pair<std::string, std::string>>> Pairs(const json& reply, std::string_view asked) const {
    std::vector<std::pair<std::string, std::string>> out;
    const auto kvs = reply.find("kvs");
    if (kvs == reply.end()) return out;  // none: the gateway leaves the empty list out
    auto malformed = [&]() {
      return Status::Unavailable(fmt::format("{}: a malformed range answer for '{}': {}", Describe(), asked,
                                             reply.dump().substr(0, 200)));
    };
    if (!kvs->is_array()) return malformed();
    for (const json& kv : *kvs) {
      std::string key, value;
      if (!kv.is_object() || !kv.contains("key") || !kv["key"].is_string() ||
          !absl::Base64Unescape(kv["key"].get<std::string>(), &key) || !key.starts_with(prefix_)) {
        return malformed();
      }
      // An empty value is left out too.
      if (kv.contains("value") && (!kv["value"].is_string() || !absl::Base64Unescape(kv["value"].get<std::string>(), &value))) {
        return malformed();
      }
      out.emplace_back(key.substr(prefix_.size()), std::move(value));
    }
    return out;
  }

  // etcd writes int64 fields as JSON strings; 0 when absent or malformed (then values compare).
  static int64_t RevisionOf(const json& j, const char* field) {
    const auto it = j.find(field);
    if (it == j.end() || !it->is_string()) return 0;
    try {
      return std::stoll(it->get<std::string>());
    } catch (const std::exception&) {
      return 0;
    }
  }
  void Remember(std::string_view key, std::string value, int64_t revision) {
    MutexLock lock(&mu_);
    if (revision > 0) {
      known_[std::string(key)] = {std::move(value), revision};
    } else {
      known_.erase(std::string(key));
    }
  }
  // The revision of `key` if this store last saw it holding `value`; 0 otherwise.
  int64_t KnownRevision(std::string_view key, const std::string& value) {
    MutexLock lock(&mu_);
    auto it = known_.find(std::string(key));
    return it != known_.end() && it->second.first == value ? it->second.second : 0;
  }

  const std::string endpoint_;
  const std::string prefix_;
  const std::chrono::milliseconds timeout_;
  std::chrono::milliseconds retry_for_{0};  // set once open: the first probe fails fast
  Mutex mu_;
  httplib::Client client_ ABSL_GUARDED_BY(mu_);
  // The value and mod revision of each key this store last read or wrote.
  absl::flat_hash_map<std::string, std::pair<std::string, int64_t>> known_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

Result<std::unique_ptr<Store>> OpenEtcdStore(const std::string& endpoint, const std::string& prefix,
                                             std::chrono::milliseconds timeout, std::chrono::milliseconds retry_for) {
  if (!endpoint.starts_with("http://") || endpoint.size() <= 7) {
    return Status::InvalidArgument(fmt::format("etcd endpoint '{}': expected http://HOST:PORT", endpoint));
  }
  if (prefix.empty() || prefix.back() != '/' || !CheckStoreKey(prefix.substr(0, prefix.size() - 1)).ok()) {
    return Status::InvalidArgument(fmt::format("etcd key prefix '{}': expected 1 or more key characters and a final '/'", prefix));
  }
  auto store = std::make_unique<EtcdStore>(endpoint, prefix, timeout);
  // Fails here, not at the first change, when etcd is not there.
  if (Result<std::string> probe = store->Get(".open"); !probe.ok() && probe.status().code() != StatusCode::kNotFound) {
    return probe.status();
  }
  store->RetryFor(retry_for);
  return std::unique_ptr<Store>(std::move(store));
}

Result<std::unique_ptr<Store>> OpenStore(const std::string& url, std::chrono::milliseconds timeout,
                                         std::chrono::milliseconds retry_for) {
  if (url.starts_with("file:")) return OpenFileStore(url.substr(5));
  if (url.starts_with("etcd:http://")) {
    const std::string rest = url.substr(5);
    const size_t path = rest.find('/', 7);
    if (path == std::string::npos || path + 1 == rest.size()) return OpenEtcdStore(rest.substr(0, path), "pserver/", timeout, retry_for);
    std::string prefix = rest.substr(path + 1);
    if (prefix.back() != '/') prefix += '/';
    return OpenEtcdStore(rest.substr(0, path), prefix, timeout, retry_for);
  }
  return Status::InvalidArgument(
      fmt::format("store '{}': expected file:DIR or etcd:http://HOST:PORT[/PREFIX]", url));
}

}  // namespace pserver::cluster
