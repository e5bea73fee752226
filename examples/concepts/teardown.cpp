// Concept: teardown() closes resources
// (asyncio: `async def teardown(self)`: cancel tasks, close connections).
//
// setup() opens a resource (here a journal file) and starts a periodic flush
// task; teardown() runs once when the agent stops, whatever the reason
// (stop(), SIGINT/SIGTERM, a fatal refusal), while still connected. It
// cancels the task and closes the file. After the run, main() reads the file
// back to show that nothing was lost.

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "../common/harness.hpp"

using namespace std::chrono_literals;
using example::say;
using example::sayf;

class journaling_agent : public convoke::agent {
public:
  journaling_agent(example::harness& h, std::string path)
    : agent("journal"), h_(h), path_(std::move(path)) {}

  void setup() override {
    file_ = std::fopen(path_.c_str(), "w");
    sayf(name(), "setup(): opened {}", path_);
    flusher_ = every(
      100ms, [this] { std::fflush(file_); }, "flush journal");
  }

  void on_message(const convoke::message& m) override {
    std::fprintf(file_, "%s\n", m.payload.c_str());
    ++entries_;
    sayf(name(), "journaled '{}'", m.payload);
    if (entries_ == 5)
      h_.done(); // stops every agent: teardown() runs
  }

  void teardown() override {
    flusher_.cancel();
    std::fclose(file_);
    file_ = nullptr;
    sayf(name(), "teardown(): cancelled the flush task, closed the journal ({} entries)", entries_);
  }

private:
  example::harness& h_;
  std::string path_;
  std::FILE* file_ = nullptr;
  convoke::task<void> flusher_;
  int entries_ = 0;
};

class producer : public convoke::agent {
public:
  producer() : agent("producer") {}
  void on_connect(const convoke::session_info&) override {
    ticks_ = every(50ms, [this] {
      if (n_ < 5)
        send_to("journal", "entry " + std::to_string(++n_));
    });
  }

private:
  convoke::task<void> ticks_;
  int n_ = 0;
};

int main(int argc, char** argv) {
  example::harness h{"convoke-example-teardown",
                     "teardown() cancels background tasks and closes resources", argc, argv};
  if (h.exit_now())
    return h.exit_code();
  auto path = "/tmp/convoke-journal-" + std::to_string(::getpid()) + ".log";
  int rc = 0;
  {
    journaling_agent j{h, path};
    producer p;
    h.start(j);
    h.start(p);
    rc = h.run();
  }
  std::ifstream in{path};
  int lines = 0;
  for (std::string line; std::getline(in, line);)
    ++lines;
  sayf("main", "after the run the journal holds {} lines", lines);
  std::remove(path.c_str());
  return rc;
}
