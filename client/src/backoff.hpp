#pragma once

// Reconnect delays: exponential backoff with jitter (CAF-free, unit-tested).

#include <random>

#include "convoke/client/agent.hpp"
#include "convoke/client/options.hpp"

namespace convoke::detail {

/// Delay before attempt number `attempt` (1 = first retry):
/// min(max_delay, initial_delay * multiplier^(attempt-1)) * (1 +/- jitter).
duration backoff_delay(const reconnect_policy& policy, int attempt, std::mt19937_64& rng);

} // namespace convoke::detail
