// Status: the outcome of an operation, the only error channel of the public API.
//
// A Status is either OK or carries a code and a message saying what was wrong and where.
// The codes are few and each tells the caller what to do next (see docs/errors.md).
// Status is a small value type: copyable, movable, thread-compatible.
#pragma once

#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace pserver {

enum class StatusCode : unsigned char {
  kOk = 0,
  kInvalidArgument = 1,   // the caller passed something wrong; nothing was done
  kNotFound = 2,          // a named thing (table, node, file) does not exist
  kDeadlineExceeded = 3,  // a wait ran out of time; the message names what was awaited
  kUnavailable = 4,       // a peer is gone or unreachable
  kCorruption = 5,        // bytes from the network or a file are malformed
  kAborted = 6,           // the job or node was shut down while the call was pending
  kInternal = 7,          // a broken invariant of our own
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) { return {StatusCode::kInvalidArgument, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status DeadlineExceeded(std::string msg) { return {StatusCode::kDeadlineExceeded, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {StatusCode::kCorruption, std::move(msg)}; }
  static Status Aborted(std::string msg) { return {StatusCode::kAborted, std::move(msg)}; }
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>"; OK stays OK.
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline std::ostream& operator<<(std::ostream& os, const Status& s) { return os << s.ToString(); }

}  // namespace pserver

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define PSERVER_RETURN_IF_ERROR(expr)              \
  do {                                             \
    ::pserver::Status pserver_status_ = (expr);    \
    if (!pserver_status_.ok()) return pserver_status_; \
  } while (0)
