#include "pserver/types.h"

namespace pserver {

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kScheduler: return "scheduler";
    case Role::kServer: return "server";
    case Role::kWorker: return "worker";
  }
  return "unknown-role";
}

std::string_view ValueTypeName(ValueType type) {
  switch (type) {
    case ValueType::kFloat32: return "float32";
    case ValueType::kFloat64: return "float64";
    case ValueType::kInt32: return "int32";
    case ValueType::kInt64: return "int64";
  }
  return "unknown-type";
}

size_t ValueTypeSize(ValueType type) {
  switch (type) {
    case ValueType::kFloat32: return 4;
    case ValueType::kFloat64: return 8;
    case ValueType::kInt32: return 4;
    case ValueType::kInt64: return 8;
  }
  return 0;
}

}  // namespace pserver
