// Logging facade over spdlog. Messages go to stderr with a timestamp and level; every node
// passes its own name ("server 1") as the first argument so that several nodes in one process
// stay distinguishable. Thread-safe.
#pragma once

#include <spdlog/spdlog.h>

#include "pserver/logging.h"

#define PSERVER_LOG_DEBUG(...) SPDLOG_DEBUG(__VA_ARGS__)  // compiled out unless SPDLOG_ACTIVE_LEVEL allows it
// Debug messages shown with `--log-level debug` in any build: control-plane events only (a
// barrier's arrival), never the data path (the arguments are evaluated either way).
#define PSERVER_LOG_VERBOSE(...) ::spdlog::debug(__VA_ARGS__)
#define PSERVER_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define PSERVER_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define PSERVER_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
