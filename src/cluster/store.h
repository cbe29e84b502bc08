// Store: the small durable key-value store that holds the scheduler's state (docs/durability.md,
// section 6), so that the state outlives the scheduler's process.
//
// Two implementations, chosen by OpenStore's URL:
//   file:DIR                       one file per key in directory DIR (created if missing), each
//                                  written atomically (base/atomic_file) with an XXH64 checksum;
//                                  for a scheduler on one machine. Several processes may share
//                                  DIR: every change holds an flock(2) on DIR/.lock.
//   etcd:http://HOST:PORT[/PREFIX] an etcd v3 cluster (Debian's etcd-server), through its JSON
//                                  gateway over HTTP; keys live under PREFIX/ (default "pserver/")
//
// Keys: 1 to kMaxStoreKey bytes of [A-Za-z0-9._/-] (names like "job/state"). Values: any bytes,
// at most kMaxStoreValue. Every operation is durable when it returns OK (the file is synced; etcd
// committed it to a quorum). List returns keys in byte order.
//
// Errors say which store and key: kNotFound (Get of an absent key), kInvalidArgument (a bad key
// or value, a malformed URL), kCorruption (a file store file that is torn or altered, naming
// it), kUnavailable (I/O errors; an etcd that cannot be reached, does not answer within the
// timeout or refuses, naming it).
//
// Thread safety: every Store is thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pserver/result.h"
#include "pserver/status.h"

namespace pserver::cluster {

inline constexpr size_t kMaxStoreKey = 80;
inline constexpr size_t kMaxStoreValue = size_t{1} << 20;

class Store {
 public:
  virtual ~Store() = default;

  // For messages: "file store /var/lib/job" or "etcd at http://127.0.0.1:2379 (prefix pserver/)".
  virtual std::string Describe() const = 0;

  // The value of `key`; kNotFound if it has none.
  virtual Result<std::string> Get(std::string_view key) = 0;
  // Sets `key` to `value`.
  virtual Status Put(std::string_view key, std::string_view value) = 0;
  // Sets `key` to `value` only if its value now is `expected` (nullopt: only if it has none).
  // True if it was set; false if the value was another (then nothing changed).
  virtual Result<bool> CompareAndSwap(std::string_view key, const std::optional<std::string>& expected,
                                      std::string_view value) = 0;
  // Removes `key` (OK if it had no value).
  virtual Status Delete(std::string_view key) = 0;
  // Every key that starts with `prefix` (may be empty: every key), with its value, in key order.
  virtual Result<std::vector<std::pair<std::string, std::string>>> List(std::string_view prefix) = 0;
};

// Opens the store `url` names (above). `timeout` bounds each etcd request. kInvalidArgument for
// a URL of another form; a file store's directory that cannot be created or written, or an
// etcd that does not answer, fails here at once. Once open, an etcd request that gets no answer
// or an HTTP 5xx is tried again, with growing pauses, for up to `retry_for` (a leader election
// or a slow disk stalls etcd for seconds); a compare-and-swap whose unanswered try was applied
// after all reports the swap.
Result<std::unique_ptr<Store>> OpenStore(const std::string& url,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(5),
                                         std::chrono::milliseconds retry_for = std::chrono::seconds(30));

// The two stores, as OpenStore opens them: a file store in `dir`, and the keys under `prefix`
// (ending in '/') of the etcd cluster at `endpoint` ("http://HOST:PORT").
Result<std::unique_ptr<Store>> OpenFileStore(const std::string& dir);
Result<std::unique_ptr<Store>> OpenEtcdStore(const std::string& endpoint, const std::string& prefix,
                                             std::chrono::milliseconds timeout, std::chrono::milliseconds retry_for);

// OK for a valid key (above), else kInvalidArgument naming it.
Status CheckStoreKey(std::string_view key);
// OK for a valid key and a value of at most kMaxStoreValue bytes, else kInvalidArgument naming
// `store` (its Describe()) and the key.
Status CheckStoreEntry(const std::string& store, std::string_view key, std::string_view value);

}  // namespace pserver::cluster
