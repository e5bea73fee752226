#pragma once

/// @file
/// CAF 0.17.6 workarounds shared by the server's and the SDK's actors
/// (header-only; include it from CAF translation units only).

#include <chrono>

#include "caf/all.hpp"

namespace convoke::caf_support {

/// A delayed message to `self`, sent anonymously. CAF 0.17's
/// `self->delayed_send(self, ...)` stores `self` as the message's sender: if
/// the actor quits while that message waits in its own mailbox, the message
/// holds the actor and the actor holds the message, and neither is ever
/// freed (measured: ~2 KiB per closed connection under churn). Without a
/// sender there is no cycle; the clock's reference to the receiver ends
/// when the timer fires.
template <class Self, class Rep, class Period, class... Ts>
void delayed_self_send(Self* self, std::chrono::duration<Rep, Period> delay, Ts&&... xs) {
  caf::delayed_anon_send(caf::actor_cast<caf::actor>(self), delay, std::forward<Ts>(xs)...);
}

} // namespace convoke::caf_support
