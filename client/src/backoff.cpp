#include "backoff.hpp"

#include <algorithm>
#include <cmath>

namespace convoke::detail {

duration backoff_delay(const reconnect_policy& policy, int attempt, std::mt19937_64& rng) {
  auto base = static_cast<double>(policy.initial_delay.count())
              * std::pow(std::max(1.0, policy.multiplier), std::max(0, attempt - 1));
  base = std::min(base, static_cast<double>(policy.max_delay.count()));
  auto jitter = std::clamp(policy.jitter, 0.0, 1.0);
  std::uniform_real_distribution<double> dist{1.0 - jitter, 1.0 + jitter};
  auto ms = base * dist(rng);
  return duration{static_cast<int64_t>(std::max(1.0, ms))};
}

} // namespace convoke::detail
