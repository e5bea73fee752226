// The pieces of tracing that need no server: W3C traceparent parsing, the
// relay thread's ring of binary records, the envelope scanner's view of
// the traceparent header.

#include <gtest/gtest.h>

#include <thread>

#include "convoke/common/trace_context.hpp"
#include "convoke/proto/codec.hpp"
#include "convoke/v1/wire.pb.h"
#include "envelope_scan.hpp"
#include "trace_ring.hpp"

using namespace convoke;

TEST(Traceparent, TheSpecificationsExampleParses) {
  auto tp = trace::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  ASSERT_TRUE(tp);
  EXPECT_EQ(tp->trace_id.size(), 16u);
  EXPECT_EQ(static_cast<unsigned char>(tp->trace_id[0]), 0x4bu);
  EXPECT_EQ(tp->parent_id.size(), 8u);
  EXPECT_EQ(tp->flags, 1);
  EXPECT_EQ(trace::format_traceparent(tp->trace_id, tp->parent_id, tp->flags),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  // A later version may append fields after a '-'.
  EXPECT_TRUE(
    trace::parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
}

TEST(Traceparent, WhatTheSpecificationSaysToIgnoreIsIgnored) {
  for (const char* bad : {
         "",
         "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", // version 00 is 55 chars
         "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  // upper case
         "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // version ff
         "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  // zero trace id
         "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  // zero parent id
         "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",  // misplaced '-'
         "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",  // flags not hex
         "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", // no '-' after 55
         "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
       })
    EXPECT_FALSE(trace::parse_traceparent(bad)) << bad;
}

TEST(TraceRing, RecordsComeOutWholeAndInOrderAcrossTheWrap) {
  server::trace_ring ring{4096};
  uint64_t next_in = 0;
  uint64_t next_out = 0;
  // Sizes that do not divide the capacity, so that records wrap at every
  // possible distance from the end.
  for (int round = 0; round < 2000; ++round) {
    for (int k = 0; k < 3; ++k) {
      uint32_t size = 8 + static_cast<uint32_t>((next_in * 37) % 200);
      auto p = ring.reserve(size);
      if (p == nullptr)
        break;
      std::memset(p, static_cast<int>(next_in & 0xff), size);
      std::memcpy(p, &next_in, sizeof next_in);
      ring.commit();
      ++next_in;
    }
    ring.drain([&](std::string_view r) {
      uint64_t id;
      std::memcpy(&id, r.data(), sizeof id);
      ASSERT_EQ(id, next_out);
      ASSERT_EQ(r.size(), 8 + (id * 37) % 200);
      for (size_t i = sizeof id; i < r.size(); ++i)
        ASSERT_EQ(static_cast<unsigned char>(r[i]), id & 0xff);
      ++next_out;
    });
  }
  EXPECT_EQ(next_out, next_in);
  EXPECT_GT(next_in, 5000u);
}

TEST(TraceRing, AFullRingRefusesInsteadOfOverwriting) {
  server::trace_ring ring{4096};
  size_t taken = 0;
  while (auto p = ring.reserve(100)) {
    std::memset(p, 1, 100);
    ring.commit();
    ++taken;
  }
  EXPECT_EQ(taken, 4096u / 112); // 100 bytes + 8 of length, padded to 8
  EXPECT_EQ(ring.reserve(static_cast<uint32_t>(ring.max_record() + 1)), nullptr);
  EXPECT_EQ(ring.drain([](std::string_view) {}), taken);
  EXPECT_NE(ring.reserve(100), nullptr) << "space is back once drained";
}

TEST(TraceRing, AProducerAndAConsumerThreadAgreeOnEveryRecord) {
  server::trace_ring ring{1 << 16};
  constexpr uint64_t total = 500000;
  std::atomic<bool> done{false};
  uint64_t refused = 0;
  std::thread producer{[&] {
    for (uint64_t i = 0; i < total;) {
      auto p = ring.reserve(16);
      if (p == nullptr) {
        ++refused;
        std::this_thread::yield();
        continue;
      }
      std::memcpy(p, &i, sizeof i);
      std::memcpy(p + 8, &i, sizeof i);
      ring.commit();
      ++i;
    }
    done = true;
  }};
  uint64_t expected = 0;
  bool ok = true;
  while (!done || !ring.empty())
    ring.drain([&](std::string_view r) {
      uint64_t a;
      uint64_t b;
      std::memcpy(&a, r.data(), 8);
      std::memcpy(&b, r.data() + 8, 8);
      ok = ok && a == expected && b == expected && r.size() == 16;
      ++expected;
    });
  producer.join();
  EXPECT_TRUE(ok);
  EXPECT_EQ(expected, total);
}

TEST(EnvelopeScan, TheTraceparentHeaderIsSeen) {
  v1::Frame f;
  (*f.mutable_envelope()->mutable_headers())["other"] = "x";
  (*f.mutable_envelope()->mutable_headers())["traceparent"] = "00-abc";
  auto body = f.SerializeAsString();
  server::envelope_view v;
  ASSERT_TRUE(server::scan_envelope_frame(body, v));
  EXPECT_EQ(v.traceparent, "00-abc");
}
