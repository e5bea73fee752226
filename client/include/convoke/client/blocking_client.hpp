#pragma once

/// @file
/// A synchronous client for one-off scripts and tools: connect, send, wait
/// for a reply, close. Every call blocks the calling thread until done, like
/// asyncio's `loop.run_until_complete()`. Internally it is a blocking CAF
/// actor (`caf::scoped_actor`) with its own actor system.
///
/// Use it from `main()` of a script, never from inside an agent (agents
/// must not block; they use `agent::request` instead).

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "convoke/client/agent.hpp"
#include "convoke/client/message.hpp"
#include "convoke/client/options.hpp"

namespace convoke {

class blocking_client {
public:
  /// `name`: the agent name to request (empty: assigned by the server).
  explicit blocking_client(client_options opts = {}, std::string name = {});

  /// Closes the session (Goodbye) if still open.
  ~blocking_client();

  blocking_client(const blocking_client&) = delete;
  blocking_client& operator=(const blocking_client&) = delete;

  /// Connects and waits for Welcome (bounded by `connect_timeout`). With
  /// several servers (`client_options::servers`) it tries each in turn,
  /// until one welcomes it or refuses it. On failure, `why` (if given)
  /// receives the reason, e.g. a refusal Notice, or each server's failure.
  std::error_code connect(std::string* why = nullptr);

  std::error_code broadcast(std::string_view payload, const send_options& opts = {});
  std::error_code publish(std::string_view route, std::string_view payload,
                          const send_options& opts = {});
  std::error_code send_to(std::string_view recipient, std::string_view payload,
                          const send_options& opts = {});

  /// Sends a request and blocks until its reply, a Notice about it (e.g.
  /// unknown recipient) or the timeout. Other messages arriving meanwhile are
  /// kept for `receive()`.
  std::optional<message> request(std::string_view recipient, std::string_view payload,
                                 duration timeout, request_error* err = nullptr,
                                 const send_options& opts = {});

  /// Blocks until a message arrives or the timeout passes.
  std::optional<message> receive(duration timeout);

  /// Says Goodbye and waits (bounded by `stop_timeout`) for the server's
  /// acknowledgement. Idempotent.
  void close();

  bool connected() const noexcept;
  const session_info& session() const noexcept;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace convoke
