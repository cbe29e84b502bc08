#include "base/failpoint.h"

#include <cstdlib>
#include <string>

namespace pserver {

bool FailpointListed(std::string_view list, std::string_view name) {
  constexpr std::string_view kSpace = " \t";
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    const size_t first = item.find_first_not_of(kSpace);
    if (first == std::string_view::npos) continue;
    item = item.substr(first, item.find_last_not_of(kSpace) - first + 1);
    if (item == name) return true;
  }
  return false;
}

bool FailpointActive(std::string_view name) {
  static const std::string* const kList = [] {
    const char* v = std::getenv("PSERVER_FAILPOINTS");
    return new std::string(v == nullptr ? "" : v);
  }();
  return !kList->empty() && FailpointListed(*kList, name);
}

}  // namespace pserver
