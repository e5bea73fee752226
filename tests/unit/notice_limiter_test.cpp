// Rate limit of per-message Notices and trace records (fake clock).
#include <gtest/gtest.h>

#include "notice_limiter.hpp"

using namespace convoke::server;
using namespace std::chrono_literals;

TEST(NoticeLimiter, BurstThenRateAndEverySuppressionIsCounted) {
  notice_limiter l;
  notice_limiter::clock::time_point t{1h};
  int sent = 0;
  int windows = 0;
  for (uint64_t id = 1; id <= 1000; ++id) {
    if (l.allow(t))
      ++sent;
    else if (l.suppress(id))
      ++windows;
  }
  EXPECT_EQ(sent, 20);
  EXPECT_EQ(windows, 1);
  auto s = l.take();
  EXPECT_EQ(s.count, 980u);
  EXPECT_EQ(s.first_id, 21u);
  EXPECT_EQ(s.last_id, 1000u);
  EXPECT_EQ(l.take().count, 0u);
  // Half a second later, 10 more are allowed; a second later, the burst.
  t += 500ms;
  sent = 0;
  for (int i = 0; i < 100; ++i)
    sent += l.allow(t);
  EXPECT_EQ(sent, 10);
  t += 10s;
  sent = 0;
  for (int i = 0; i < 100; ++i)
    sent += l.allow(t);
  EXPECT_EQ(sent, 20) << "tokens are capped at the burst";
}
