// The output ledger: which relayed messages are still in CAF's write buffer.
#include <gtest/gtest.h>

#include "output_ledger.hpp"

using namespace convoke::server;

TEST(OutputLedger, WrittenBytesPopWholeRunsOnly) {
  output_ledger l;
  l.append(100, {2, 10, 11});
  l.append(50, {}); // a notice: no messages
  l.append(30, {1, 15, 15});
  EXPECT_EQ(l.pending(), 180u);
  l.written(99);
  EXPECT_EQ(l.pending(), 81u);
  auto left = l.take_all();
  EXPECT_EQ(left.count, 3u) << "a partly written run still counts";
  EXPECT_EQ(left.first_id, 10u);
  EXPECT_EQ(left.last_id, 15u);
  EXPECT_EQ(l.pending(), 0u);
}

TEST(OutputLedger, DroppingTheNewestRunsReportsTheirMessages) {
  output_ledger l;
  l.append(10, {1, 1, 1});
  l.append(20, {2, 2, 3});
  l.append(30, {3, 4, 6});
  EXPECT_EQ(l.newest_runs_within(55), 50u);
  EXPECT_EQ(l.newest_runs_within(29), 0u);
  auto d = l.drop_newest(50);
  EXPECT_EQ(d.count, 5u);
  EXPECT_EQ(d.first_id, 2u);
  EXPECT_EQ(d.last_id, 6u);
  EXPECT_EQ(l.pending(), 10u);
  l.written(10);
  EXPECT_EQ(l.take_all().count, 0u);
}
