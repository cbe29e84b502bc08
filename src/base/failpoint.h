// Failpoints: named places where a process misbehaves on purpose when a test asks it to, so that
// a fault test's SIGKILL lands at a known moment (a joining server that stores no moved rows, say)
// instead of at a lucky one.
//
// A failpoint is active when its name is listed in the environment variable PSERVER_FAILPOINTS
// (comma-separated names; spaces around them are ignored), read once, at the first check. Nothing
// is active by default, and a check then costs a call and a test of an empty string. Every failpoint is named where it is
// checked and listed in docs/errors.md; a process in which one fires says so in its log.
//
// Thread safety: FailpointActive may be called from any thread.
#pragma once

#include <string_view>

namespace pserver {

// Whether `name` is listed in PSERVER_FAILPOINTS.
bool FailpointActive(std::string_view name);

// Whether `name` is one of the comma-separated names of `list` (the parsing of FailpointActive).
bool FailpointListed(std::string_view list, std::string_view name);

}  // namespace pserver
