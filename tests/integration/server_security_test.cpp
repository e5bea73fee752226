// Attacks an outside audit ran against the server, as regression tests: each
// one succeeded before its fix.

#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <set>

#include "convoke/proto/codec.hpp"
#include "raw_client.hpp"
#include "test_server.hpp"

using namespace convoke;
using namespace convoke::test;

namespace {

// -- std::mt19937_64 state recovery --------------------------------------------
// The tempering of mt19937_64 is invertible, so 312 consecutive outputs give
// the generator's state and with it every later output. Tokens made from it
// are therefore predictable to anyone who can collect enough of them.

uint64_t undo_right(uint64_t y, int shift, uint64_t mask) {
  uint64_t x = y;
  for (int i = 0; i < 64 / shift + 1; ++i)
    x = y ^ ((x >> shift) & mask);
  return x;
}

uint64_t undo_left(uint64_t y, int shift, uint64_t mask) {
  uint64_t x = y;
  for (int i = 0; i < 64 / shift + 1; ++i)
    x = y ^ ((x << shift) & mask);
  return x;
}

uint64_t untemper(uint64_t y) {
  y = undo_right(y, 43, ~uint64_t{0});
  y = undo_left(y, 37, 0xFFF7EEE000000000ull);
  y = undo_left(y, 17, 0x71D67FFFEDA60000ull);
  y = undo_right(y, 29, 0x5555555555555555ull);
  return y;
}

uint64_t temper(uint64_t y) {
  y ^= (y >> 29) & 0x5555555555555555ull;
  y ^= (y << 17) & 0x71D67FFFEDA60000ull;
  y ^= (y << 37) & 0xFFF7EEE000000000ull;
  y ^= y >> 43;
  return y;
}

/// Predicts the outputs of an mt19937_64 that produced `window` (>= 312
/// consecutive outputs, oldest first).
class mt_predictor {
public:
  explicit mt_predictor(const std::vector<uint64_t>& outputs) {
    for (auto y : outputs)
      push(untemper(y));
  }
  uint64_t next() {
    constexpr uint64_t upper = 0xFFFFFFFF80000000ull;
    constexpr uint64_t lower = 0x7FFFFFFFull;
    auto x0 = state_[0];
    auto x1 = state_[1];
    auto xm = state_[156];
    auto y = (x0 & upper) | (x1 & lower);
    auto x = xm ^ (y >> 1) ^ ((x1 & 1) != 0 ? 0xB5026F5AA96619E9ull : 0);
    push(x);
    return temper(x);
  }

private:
  void push(uint64_t x) {
    state_.push_back(x);
    if (state_.size() > 312)
      state_.pop_front();
  }
  std::deque<uint64_t> state_;
};

std::vector<uint64_t> words_of(const std::string& hex_token) {
  std::string raw;
  for (size_t i = 0; i + 1 < hex_token.size(); i += 2)
    raw.push_back(static_cast<char>(std::stoi(hex_token.substr(i, 2), nullptr, 16)));
  std::vector<uint64_t> out(raw.size() / 8);
  std::memcpy(out.data(), raw.data(), out.size() * 8);
  return out;
}

std::string token_of(const std::vector<uint64_t>& words) {
  static const char* digits = "0123456789abcdef";
  std::string raw(words.size() * 8, '\0');
  std::memcpy(raw.data(), words.data(), raw.size());
  std::string hex;
  for (unsigned char c : raw) {
    hex.push_back(digits[c >> 4]);
    hex.push_back(digits[c & 15]);
  }
  return hex;
}

} // namespace

TEST(ServerSecurity, ResumeTokensCannotBePredictedFromEarlierOnes) {
  // The audit's session hijack: collect tokens from ~160 Welcomes, rebuild
  // the generator, predict the victim's token and take over its name.
  test_server srv;
  std::vector<uint64_t> outputs;
  std::set<std::string> tokens;
  size_t words_per_token = 0;
  for (int i = 0; outputs.size() < 312; ++i) {
    raw_client probe{srv.port()};
    auto w = probe.hello("probe-" + std::to_string(i));
    ASSERT_TRUE(w.has_welcome()) << w.ShortDebugString();
    auto& token = w.welcome().resume_token();
    EXPECT_GE(token.size(), 64u) << "a resume token carries at least 256 bits";
    EXPECT_TRUE(tokens.insert(token).second) << "tokens repeat";
    auto words = words_of(token);
    words_per_token = words.size();
    ASSERT_GT(words_per_token, 0u);
    outputs.insert(outputs.end(), words.begin(), words.end());
  }
  mt_predictor predictor{outputs};
  std::vector<uint64_t> predicted(words_per_token);
  for (auto& w : predicted)
    w = predictor.next();
  auto guess = token_of(predicted);

  raw_client victim{srv.port()};
  auto vw = victim.hello("victim");
  ASSERT_TRUE(vw.has_welcome());
  EXPECT_NE(vw.welcome().resume_token(), guess) << "the victim's token was predicted";

  raw_client attacker{srv.port()};
  auto r = attacker.hello("victim", {}, guess);
  ASSERT_TRUE(r.has_notice()) << "the attacker took over the victim's name: "
                              << r.ShortDebugString();
  EXPECT_EQ(r.notice().code(), "name_taken");
  // The victim is still connected and reachable.
  auto other = raw_client{srv.port()};
  ASSERT_TRUE(other.hello("bystander").has_welcome());
  ASSERT_TRUE(other.send_envelope("victim", "still yours"));
  auto e = victim.read_envelope();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->payload(), "still yours");
}

TEST(ServerSecurity, ATokenOfTheRightLengthButWrongContentDoesNotTakeOver) {
  test_server srv;
  raw_client alice{srv.port()};
  auto w = alice.hello("alice");
  ASSERT_TRUE(w.has_welcome());
  auto token = w.welcome().resume_token();
  for (size_t pos : {size_t{0}, token.size() / 2, token.size() - 1}) {
    auto wrong = token;
    wrong[pos] = wrong[pos] == '0' ? '1' : '0';
    raw_client thief{srv.port()};
    auto r = thief.hello("alice", {}, wrong);
    ASSERT_TRUE(r.has_notice()) << r.ShortDebugString();
    EXPECT_EQ(r.notice().code(), "name_taken");
    EXPECT_EQ(r.notice().text().find("session"), std::string::npos)
      << "the refusal must not reveal the holder's session: " << r.notice().text();
  }
  raw_client thief{srv.port()};
  EXPECT_TRUE(thief.hello("alice", {}, token + "00").has_notice()) << "prefix match";
  EXPECT_TRUE(thief.wait_closed(2s));
}
