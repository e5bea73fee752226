#pragma once

// A log-linear latency histogram in the spirit of HdrHistogram: values in
// nanoseconds from 1 ns to ~18 s, 128 linear sub-buckets per power of two
// (relative error < 1%), constant memory, O(1) record.

#include <array>
#include <bit>
#include <cstdint>

namespace convoke::bench {

class histogram {
public:
  static constexpr int sub_bits = 7; // 128 sub-buckets
  static constexpr int sub_count = 1 << sub_bits;
  static constexpr int max_exp = 34; // 2^34 ns ~ 17 s

  void record(int64_t value) {
    if (value < 0)
      value = 0;
    auto v = static_cast<uint64_t>(value);
    ++counts_[index_of(v)];
    ++total_;
    if (v > max_)
      max_ = v;
  }

  uint64_t count() const noexcept {
    return total_;
  }

  uint64_t max() const noexcept {
    return max_;
  }

  /// Smallest recorded value v such that a fraction `q` of samples is <= v
  /// (reported as the upper edge of its bucket).
  uint64_t quantile(double q) const {
    if (total_ == 0)
      return 0;
    auto rank = static_cast<uint64_t>(q * static_cast<double>(total_));
    if (rank >= total_)
      rank = total_ - 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen > rank)
        return upper_edge(i);
    }
    return max_;
  }

  static size_t index_of(uint64_t v) {
    if (v < sub_count)
      return static_cast<size_t>(v);
    auto exp = std::bit_width(v) - 1; // >= sub_bits
    if (exp >= max_exp)
      return bucket_count - 1;
    auto shift = exp - sub_bits;
    auto sub = (v >> shift) & (sub_count - 1);
    return static_cast<size_t>(sub_count + (exp - sub_bits) * sub_count + sub);
  }

  static uint64_t upper_edge(size_t i) {
    if (i < sub_count)
      return i;
    auto block = (i - sub_count) / sub_count;
    auto sub = (i - sub_count) % sub_count;
    auto shift = block;
    return ((uint64_t{sub_count} + sub + 1) << shift) - 1;
  }

  static constexpr size_t bucket_count = sub_count + (max_exp - sub_bits) * sub_count + 1;

private:
  std::array<uint64_t, bucket_count> counts_{};
  uint64_t total_ = 0;
  uint64_t max_ = 0;
};

} // namespace convoke::bench
