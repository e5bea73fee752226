#include <cstdlib>
#include <mutex>
#include <stdexcept>

#include "convoke/common/logging.hpp"
#include "test_server.hpp"

namespace convoke::test {

void init_test_logging() {
  static std::once_flag once;
  std::call_once(once, [] {
    logging::options opts;
    auto lvl = std::getenv("CONVOKE_TEST_LOG_LEVEL");
    opts.level = lvl != nullptr ? lvl : "warn";
    if (auto ok = logging::configure(opts); !ok) // e.g. CONVOKE_TEST_LOG_LEVEL=verbose
      throw std::runtime_error(ok.error().message());
  });
}

} // namespace convoke::test
