// Concept: the three places for async work together
// (Summoner guide §6: setup() starts a queue processor, on_connect() starts
// per-session work, teardown() cancels).
//
//   setup()         creates the work queue and starts the processor task,
//                   which lives as long as the agent;
//   on_connect()    starts a per-session status task (sessions come and go);
//   on_disconnect() cancels the per-session task;
//   teardown()      cancels the processor and reports what is left.
//
// Scenario: a client submits 8 jobs as direct messages; the worker queues
// them, processes two per tick, and replies with each result; the client
// stops the scenario when all 8 results are back.

#include <deque>

#include "../common/harness.hpp"

using namespace std::chrono_literals;
using example::sayf;

class queue_worker : public convoke::agent {
public:
  queue_worker() : agent("queue-worker") {}

  void setup() override {
    processor_ = every(
      50ms, [this] { process(); }, "queue processor");
    sayf(name(), "setup(): queue created, processor task {} started", processor_);
  }

  void on_connect(const convoke::session_info& s) override {
    status_ = every(
      120ms,
      [this] {
        if (!queue_.empty())
          sayf(name(), "status: {} jobs waiting", queue_.size());
      },
      "session status");
    sayf(name(), "on_connect(): session {} - per-session status task {} started", s.session_id,
         status_);
  }

  void on_disconnect(const convoke::disconnect_info& d) override {
    cancel(status_);
    sayf(name(), "on_disconnect({}): per-session task cancelled", d.code);
  }

  void on_message(const convoke::message& m) override {
    queue_.push_back(m); // handlers only enqueue; the processor does the work
  }

  void teardown() override {
    cancel(processor_);
    cancel(status_);
    sayf(name(), "teardown(): processor and status tasks cancelled, {} jobs left, {} done",
         queue_.size(), done_);
  }

private:
  void process() {
    for (int i = 0; i < 2 && !queue_.empty(); ++i) {
      auto job = std::move(queue_.front());
      queue_.pop_front();
      auto n = std::stoi(job.payload);
      sayf(name(), "processed job {} -> {}", n, n * n);
      send_to(job.sender, std::to_string(n) + "^2=" + std::to_string(n * n));
      ++done_;
    }
  }

  std::deque<convoke::message> queue_;
  convoke::task_id processor_ = 0;
  convoke::task_id status_ = 0;
  int done_ = 0;
};

class submitter : public convoke::agent {
public:
  explicit submitter(example::harness& h) : agent("submitter"), h_(h) {}
  void on_connect(const convoke::session_info&) override {
    after(100ms, [this] {
      for (int i = 1; i <= 8; ++i)
        send_to("queue-worker", std::to_string(i));
      sayf(name(), "submitted 8 jobs");
    });
  }
  void on_message(const convoke::message& m) override {
    sayf(name(), "result {}", m.payload);
    if (++results_ == 8)
      h_.done();
  }

private:
  example::harness& h_;
  int results_ = 0;
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
