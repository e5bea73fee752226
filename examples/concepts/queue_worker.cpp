// Concept: the three places for async work together, and a queue worker
// (Summoner guide §6: setup() starts a queue processor, on_connect() starts
// per-session work, teardown() cancels).
//
// An actor's mailbox already is a queue: each message is handled when the
// agent gets to it, and nothing polls. The worker below reacts to events
// only: a job arrives (a message) -> it is queued and, if a worker slot is
// free, started as a blocking job; a job finishes (its task's continuation)
// -> its result goes back and the next queued job starts. At most two jobs
// run at a time.
//
//   setup()       creates the queue (the processor is the event handlers);
//   on_connect()  starts a per-session status task; tasks started here
//                 belong to the session and are cancelled when it ends, so
//                 a reconnect does not start a second one;
//   teardown()    cancels the jobs still running and reports what is left.
//
// Scenario: a client submits 8 jobs as direct messages once the worker is
// there (it asks; if the worker is not connected yet, it waits for the
// worker's "ready" broadcast); the worker replies with each result; the
// client stops the scenario when all 8 results are back.

#include <deque>
#include <thread>

#include "../common/harness.hpp"

using namespace std::chrono_literals;
using example::sayf;

class queue_worker : public convoke::agent {
public:
  queue_worker() : agent("queue-worker") {}

  void setup() override {
    sayf(name(), "setup(): queue created; jobs run as they arrive, at most {} at a time",
         max_running);
  }

  void on_connect(const convoke::session_info& s) override {
    status_ = every(
      120ms,
      [this] {
        if (!queue_.empty() || !running_.empty())
          sayf(name(), "status: {} jobs waiting, {} running", queue_.size(), running_.size());
      },
      "session status");
    sayf(name(), "on_connect(): session {} - per-session status task {} started", s.session_id,
         status_.id());
    broadcast("ready"); // for clients that came first
  }

  void on_message(const convoke::message& m) override {
    if (m.is_request()) { // "are you there?"
      reply(m, "here");
      return;
    }
    if (m.payload == "ready")
      return;
    queue_.push_back(m);
    start_next();
  }

  void teardown() override {
    for (auto& [id, job] : running_)
      job.cancel();
    sayf(name(), "teardown(): {} running jobs cancelled, {} jobs left, {} done", running_.size(),
         queue_.size(), done_);
  }

private:
  static constexpr size_t max_running = 2;

  void start_next() {
    while (running_.size() < max_running && !queue_.empty()) {
      auto job = std::move(queue_.front());
      queue_.pop_front();
      auto n = std::stoi(job.payload);
      // The work itself: blocking (think: a model call), so on its own thread.
      auto t = run_blocking(
        [n] {
          std::this_thread::sleep_for(20ms);
          return n * n;
        },
        "square " + job.payload);
      t.then([this, id = t.id(), n, sender = job.sender](convoke::expected<int> r) {
        running_.erase(id);
        if (r) {
          sayf(name(), "processed job {} -> {}", n, *r);
          send_to(sender, std::to_string(n) + "^2=" + std::to_string(*r));
          ++done_;
        } else {
          sayf(name(), "job {} failed: {}", n, r.error().message());
        }
        start_next(); // a slot is free: the next job, if any
      });
      running_.emplace(t.id(), std::move(t));
    }
  }

  std::deque<convoke::message> queue_;
  std::map<convoke::task_id, convoke::task<int>> running_;
  convoke::task<void> status_;
  int done_ = 0;
};

class submitter : public convoke::agent {
public:
  explicit submitter(example::harness& h) : agent("submitter"), h_(h) {}

  void on_connect(const convoke::session_info&) override {
    // Is the worker there? If not, its "ready" broadcast will tell us.
    request("queue-worker", "are you there?", 2s)
      .then([this](convoke::expected<convoke::message> r) {
        if (r)
          submit();
      });
  }

  void on_message(const convoke::message& m) override {
    if (m.sender == "queue-worker" && m.payload == "ready") {
      submit();
      return;
    }
    sayf(name(), "result {}", m.payload);
    if (++results_ == 8)
      h_.done();
  }

private:
  void submit() {
    if (submitted_)
      return;
    submitted_ = true;
    for (int i = 1; i <= 8; ++i)
      send_to("queue-worker", std::to_string(i));
    sayf(name(), "submitted 8 jobs");
  }

  example::harness& h_;
  int results_ = 0;
  bool submitted_ = false;
};

int main(int argc, char** argv) {
  example::harness h{"convoke-example-queue-worker",
                     "setup() starts a queue processor, on_connect() per-session work, "
                     "teardown() cancels",
                     argc, argv};
  if (h.exit_now())
    return h.exit_code();
  queue_worker w;
  submitter s{h};
  h.start(w);
  h.start(s);
  return h.run();
}
