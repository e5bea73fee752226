#pragma once

/// @file
/// Opt-in access to the CAF actor behind an agent, for code that wants actor
/// idioms directly: spawning and monitoring child actors, request/then and
/// request/await, per-state handlers with become(). Including this header
/// pulls in CAF (and its compile time); the rest of the SDK does not need it.
///
/// All functions must be called on the agent's actor, i.e. from its hooks,
/// handlers or tasks.

#include <functional>

#include "caf/all.hpp"

#include "convoke/client/agent.hpp"

namespace convoke::interop {

/// The actor running `a`. Use it to spawn children, monitor them, send and
/// request. Valid while the agent runs.
caf::event_based_actor* self(agent& a);

/// The actor system hosting `a` (its runtime's).
caf::actor_system& system(agent& a);

/// Installs `handlers` for custom messages next to the SDK's own handlers
/// (which always come first), replacing handlers installed earlier. Calling
/// it again from a handler is CAF's become(): per-state behavior.
void become(agent& a, caf::message_handler handlers);

/// Called with every down message (actors `a` monitors that terminated).
void on_down(agent& a, std::function<void(const caf::down_msg&)> handler);

} // namespace convoke::interop
