#include <gtest/gtest.h>

#include <cstdint>
#include <thread>

#include "convoke/common/text.hpp"
#include "convoke/common/units.hpp"

using namespace convoke;
using namespace std::chrono_literals;

TEST(Units, Durations) {
  EXPECT_EQ(parse_duration("250ms"), duration{250});
  EXPECT_EQ(parse_duration("5s"), duration{5000});
  EXPECT_EQ(parse_duration("2m"), duration{120000});
  EXPECT_EQ(parse_duration("1h"), duration{3600000});
  EXPECT_EQ(parse_duration("0"), duration{0});
  EXPECT_FALSE(parse_duration("5"));
  EXPECT_FALSE(parse_duration("-5s"));
  EXPECT_FALSE(parse_duration("5 parsecs"));
  EXPECT_FALSE(parse_duration(""));
  EXPECT_FALSE(parse_duration("99999999999999999999h"));
  EXPECT_EQ(format_duration(duration{5000}), "5s");
  EXPECT_EQ(format_duration(duration{250}), "250ms");
  EXPECT_EQ(format_duration(duration{120000}), "2m");
}

TEST(Units, Sizes) {
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("64KiB"), 65536u);
  EXPECT_EQ(parse_size("8MiB"), 8u << 20);
  EXPECT_EQ(parse_size("1G"), 1u << 30);
  EXPECT_EQ(parse_size("10B"), 10u);
  EXPECT_FALSE(parse_size("1TB"));
  EXPECT_FALSE(parse_size("MiB"));
  EXPECT_FALSE(parse_size("-1"));
  EXPECT_FALSE(parse_size("99999999999999999999GiB"));
  EXPECT_EQ(format_size(8u << 20), "8MiB");
  EXPECT_EQ(format_size(1000), "1000");
}

TEST(Units, HostPort) {
  auto hp = parse_host_port("example.org:99", "h", 1);
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "example.org");
  EXPECT_EQ(hp->port, 99);
  EXPECT_EQ(parse_host_port(":7000", "127.0.0.1", 1)->host, "127.0.0.1");
  EXPECT_EQ(parse_host_port("7000", "127.0.0.1", 1)->port, 7000);
  EXPECT_EQ(parse_host_port("[::1]:5", "h", 1)->host, "::1");
  EXPECT_EQ(parse_host_port("myhost", "h", 42)->port, 42);
  EXPECT_FALSE(parse_host_port("h:70000", "h", 1));
  EXPECT_FALSE(parse_host_port("h:abc", "h", 1));
}

TEST(Text, JsonStringsAreAlwaysValid) {
  EXPECT_EQ(json_string("a\"b\\c\n"), R"("a\"b\\c\n")");
  EXPECT_EQ(json_string(std::string_view{"\x01", 1}), R"("\u0001")");
  EXPECT_EQ(json_string("h\xc3\xa9llo"), "\"h\xc3\xa9llo\""); // valid UTF-8 kept
  EXPECT_EQ(json_string("\xff"), R"("\u00ff")");              // invalid byte escaped
}

TEST(Text, LogfmtValuesQuoteOnlyWhenNeeded) {
  EXPECT_EQ(logfmt_value("alice"), "alice");
  EXPECT_EQ(logfmt_value("two words"), R"("two words")");
  EXPECT_EQ(logfmt_value(""), R"("")");
  EXPECT_EQ(logfmt_value("a=b"), R"("a=b")");
}

TEST(Text, TimestampsAreRfc3339WithMicroseconds) {
  EXPECT_EQ(format_timestamp(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(format_timestamp(1'700'000'000'123'456'789), "2023-11-14T22:13:20.123456Z");
  EXPECT_EQ(to_hex("\x01\xab"), "01ab");
}

TEST(Text, TimestampsBeforeTheEpochAreFlooredEvenOnAFreshThread) {
  // Each thread caches the formatted second; a fresh thread's cache must not
  // be taken for the second before the epoch (it held 20 NUL bytes).
  std::string just_before;
  std::string sub_micro;
  std::string oldest;
  std::thread{[&] { just_before = format_timestamp(-1000); }}.join();
  std::thread{[&] { sub_micro = format_timestamp(-500); }}.join();
  std::thread{[&] { oldest = format_timestamp(INT64_MIN); }}.join();
  EXPECT_EQ(just_before, "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(sub_micro, "1969-12-31T23:59:59.999999Z") << "floor, not truncation towards 1970";
  EXPECT_EQ(oldest, "1677-09-21T00:12:43.145224Z");
}
