// The whole public API of pserver. Everything under src/ is internal and may change.
#pragma once

#include "pserver/kv_server.h"
#include "pserver/kv_worker.h"
#include "pserver/launch_env.h"
#include "pserver/logging.h"
#include "pserver/node.h"
#include "pserver/options.h"
#include "pserver/result.h"
#include "pserver/shared_array.h"
#include "pserver/status.h"
#include "pserver/table.h"
#include "pserver/types.h"
#include "pserver/updater.h"
