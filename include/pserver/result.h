// Result<T>: either a value of type T or a non-OK Status.
//
// Thread-compatible value type. Accessing value() of an error Result is a bug of the caller
// (checked by assert in debug builds).
#pragma once

#include <cassert>
#include <type_traits>
#include <utility>
#include <variant>

#include "pserver/status.h"

namespace pserver {

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok() && "Result built from an OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }

  T& value() & { assert(ok()); return std::get<T>(v_); }
  const T& value() const& { assert(ok()); return std::get<T>(v_); }
  T&& value() && { assert(ok()); return std::get<T>(std::move(v_)); }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace pserver

#define PSERVER_CONCAT_INNER_(a, b) a##b
#define PSERVER_CONCAT_(a, b) PSERVER_CONCAT_INNER_(a, b)
#define PSERVER_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return tmp.status();                  \
  lhs = std::move(tmp).value()
// `lhs = value of expr` or return its error Status from the enclosing function.
#define PSERVER_ASSIGN_OR_RETURN(lhs, expr) \
  PSERVER_ASSIGN_OR_RETURN_IMPL_(PSERVER_CONCAT_(pserver_result_, __LINE__), lhs, expr)
