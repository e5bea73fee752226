// REVIEW (outside review of the admin listener, branch review-admin):
// defects of admin_views.cpp found in review; each test failed before the
// fix in the same branch.
#include <gtest/gtest.h>

#include "admin_views.hpp"
#include "convoke/server/config.hpp"

using namespace convoke::server;
using namespace convoke::server::admin;

namespace {

std::vector<std::string> names(const nlohmann::json& j) {
  std::vector<std::string> out;
  for (auto& c : j["connections"])
    out.push_back(c["name"]);
  return out;
}

} // namespace

// FIXED. /connz?sort=idle computed "now - last activity" in uint64: an agent
// whose input arrived after the request read the clock (the relay keeps
// writing while /connz sorts) had a negative idle time that wrapped to
// 2^64 - n, and sorted as the MOST idle agent (first with order=desc).
TEST(AdminViewsReview, AnAgentActiveAfterTheRequestReadTheClockIsNotTheMostIdle) {
  auto now = now_t::read();
  auto sleepy = std::make_shared<session_info>();
  sleepy->session = 1;
  sleepy->name = "sleepy";
  sleepy->touch(now.steady - std::chrono::seconds{60});
  auto busy = std::make_shared<session_info>();
  busy->session = 2;
  busy->name = "busy";
  busy->touch(now.steady + std::chrono::milliseconds{1}); // a frame read during the sort
  connz_query q;
  q.sort = connz_query::key::idle;
  q.descending = true;
  EXPECT_EQ(names(connz({busy, sleepy}, q, now)), (std::vector<std::string>{"sleepy", "busy"}));
  q.descending = false;
  EXPECT_EQ(names(connz({busy, sleepy}, q, now)), (std::vector<std::string>{"busy", "sleepy"}));
}

// FIXED. server.name goes into every Welcome (a proto3 string that clients
// parse strictly), the /metrics info label and /varz; it must be UTF-8.
TEST(AdminViewsReview, ValidateRefusesAServerNameThatIsNotUtf8) {
  server_config cfg;
  cfg.name = "caf\xe9";
  auto errs = validate(cfg);
  ASSERT_FALSE(errs.empty());
  EXPECT_NE(errs.front().text.find("server.name"), std::string::npos) << errs.front().text;
  cfg.name = "caf\xc3\xa9";
  EXPECT_TRUE(validate(cfg).empty());
}
