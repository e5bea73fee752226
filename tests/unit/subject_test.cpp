#include <gtest/gtest.h>

#include "convoke/proto/subject.hpp"

using convoke::proto::is_pattern;
using convoke::proto::pattern_covers;
using convoke::proto::pattern_matches;

TEST(Subject, PatternsAreTokensNotCharacters) {
  EXPECT_TRUE(is_pattern("*"));
  EXPECT_TRUE(is_pattern(">"));
  EXPECT_TRUE(is_pattern("weather.*.paris"));
  EXPECT_TRUE(is_pattern("weather.>"));
  EXPECT_FALSE(is_pattern("weather.eu.paris"));
  EXPECT_FALSE(is_pattern("a*b.c>"));
  EXPECT_FALSE(is_pattern("weather/report"));
}

TEST(Subject, ExactSubjectsMatchOnlyThemselves) {
  EXPECT_TRUE(pattern_matches("weather/report", "weather/report"));
  EXPECT_TRUE(pattern_matches("a.b.c", "a.b.c"));
  EXPECT_FALSE(pattern_matches("a.b", "a.b.c"));
  EXPECT_FALSE(pattern_matches("a.b.c", "a.b"));
  EXPECT_FALSE(pattern_matches("a*b", "axb"));
}

TEST(Subject, StarMatchesExactlyOneToken) {
  EXPECT_TRUE(pattern_matches("weather.*.paris", "weather.eu.paris"));
  EXPECT_FALSE(pattern_matches("weather.*.paris", "weather.paris"));
  EXPECT_FALSE(pattern_matches("weather.*.paris", "weather.eu.fr.paris"));
  EXPECT_TRUE(pattern_matches("*", "anything"));
  EXPECT_FALSE(pattern_matches("*", "two.tokens"));
}

TEST(Subject, GreaterThanMatchesOneOrMoreTrailingTokens) {
  EXPECT_TRUE(pattern_matches("weather.>", "weather.eu"));
  EXPECT_TRUE(pattern_matches("weather.>", "weather.eu.paris"));
  EXPECT_FALSE(pattern_matches("weather.>", "weather"));
  EXPECT_TRUE(pattern_matches(">", "x"));
  EXPECT_TRUE(pattern_matches(">", "x.y.z"));
  // ">" is a wildcard only as the last token.
  EXPECT_FALSE(pattern_matches(">.a", "x.a"));
  EXPECT_TRUE(pattern_matches(">.a", ">.a"));
}

TEST(Subject, CoversComparesPatternsForRights) {
  EXPECT_TRUE(pattern_covers(">", "anything.at.all"));
  EXPECT_TRUE(pattern_covers(">", "*"));
  EXPECT_TRUE(pattern_covers("weather.>", "weather.eu.*"));
  EXPECT_TRUE(pattern_covers("weather.>", "weather.>"));
  EXPECT_TRUE(pattern_covers("weather.*", "weather.eu"));
  EXPECT_TRUE(pattern_covers("weather.*", "weather.*"));
  EXPECT_FALSE(pattern_covers("weather.*", "weather.>"));
  EXPECT_FALSE(pattern_covers("weather.eu", "weather.*"));
  EXPECT_FALSE(pattern_covers("weather.>", "weather"));
  EXPECT_FALSE(pattern_covers("weather.>", "news.>"));
  EXPECT_FALSE(pattern_covers("a.*", "a.b.c"));
  EXPECT_TRUE(pattern_covers("a.b", "a.b"));
}
