#pragma once

// The admin listener's connections, in front of cpp-httplib's request
// handling. CAF-free.
//
// httplib 0.11 gives each connection a worker thread for as long as the
// client takes: its timeout bounds each read, not the request, so clients
// that trickle a byte at a time hold every worker and probes go unanswered
// (found by an outside review). Here one I/O thread accepts, reads request
// heads of all connections at once (non-blocking, with TLS through
// convoke::tls) and closes any connection whose head is not complete by
// its deadline. A worker gets a connection only once its request is
// complete, and must answer it by the same kind of deadline. Probes
// (/healthz, /readyz) are answered by the I/O thread itself, so they never
// wait for a worker.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "convoke/tls/tls.hpp"

namespace httplib {
class Stream;
}

namespace convoke::server {

class http_front {
public:
  struct options {
    /// A listening socket (the front owns and closes it).
    int listen_fd = -1;
    /// HTTPS with this context; null: plain HTTP.
    tls::context_ptr tls;
    size_t workers = 4;
    /// Complete requests waiting for a worker; beyond: 503.
    size_t max_queued = 64;
    /// Connections reading their request head; beyond, the oldest is closed.
    size_t max_connections = 256;
    /// From accept to a complete head, and from a worker taking the request
    /// to the end of the answer.
    std::chrono::milliseconds deadline{5000};
    /// A head (request line and headers) larger than this gets 431.
    size_t max_head_bytes = 16 * 1024;
  };

  /// Serves one complete request read from `stream` (httplib's parser and
  /// handlers), on a worker thread.
  using serve_fn = std::function<void(httplib::Stream&)>;

  /// An answer the I/O thread gives at once: status and JSON body.
  struct quick_answer {
    int status = 200;
    std::string body;
  };
  /// Decides from a GET's path whether the I/O thread answers it itself
  /// (must be cheap and never block).
  using quick_fn = std::function<std::optional<quick_answer>(std::string_view path)>;

  http_front(options opts, serve_fn serve, quick_fn quick);

  /// Stops accepting, cuts the connections in progress, joins the threads.
  ~http_front();

  http_front(const http_front&) = delete;
  http_front& operator=(const http_front&) = delete;

  struct impl;

private:
  std::unique_ptr<impl> impl_;
};

} // namespace convoke::server
