// optimist engine: pass 0's reduction (a header of engine.cpp, one translation unit).
//
// The sum of squares of a gradient block in float64: each value is widened to double before it
// is squared (exact for float32 values, which cannot overflow there), summed in independent
// lanes so that the loop vectorizes and runs at memory speed.  A NaN or inf value makes the sum
// NaN or inf, which is how finiteness is judged (as clip_grad_norm_(error_if_nonfinite=True)
// judges it from the norm); with clipping by value the clamped values are finite, so a probe
// (a sum of v * 0) tracks finiteness instead.
#pragma once

#include <algorithm>
#include <cstdint>

namespace optimist {

constexpr int kReduceLanes = 32;

// The lanes' total in float64, added as a tree (depth 5), not in one chain of 32 dependent
// additions per block of kBlock values: `perf annotate` put that chain's two loops at 15% of
// LARS's norm pass (trust.h), which otherwise waits on memory.
template <typename C>
inline double lane_total(const C* acc) {
  static_assert(kReduceLanes == 32, "the tree below adds 4 x 8 lanes");
  constexpr int kQuarter = kReduceLanes / 4;
  double t[kQuarter];
  for (int k = 0; k < kQuarter; ++k) {
    t[k] = (static_cast<double>(acc[k]) + static_cast<double>(acc[k + kQuarter])) +
           (static_cast<double>(acc[k + 2 * kQuarter]) + static_cast<double>(acc[k + 3 * kQuarter]));
  }
  return ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]));
}

template <typename C>
inline double sum_squares(const C* __restrict__ x, int64_t n) {
  double acc[kReduceLanes] = {};
  int64_t j = 0;
  for (; j + kReduceLanes <= n; j += kReduceLanes) {
    for (int k = 0; k < kReduceLanes; ++k) {
      const double v = static_cast<double>(x[j + k]);
      acc[k] += v * v;
    }
  }
  for (; j < n; ++j) {
    const double v = static_cast<double>(x[j]);
    acc[0] += v * v;
  }
  return lane_total(acc);
}

// The same for the values clamped to [-clip, clip]; `finite` is cleared by a NaN or inf value.
template <typename C>
inline double sum_squares_clipped(const C* __restrict__ x, int64_t n, C clip, bool& finite) {
  double acc[kReduceLanes] = {};
  C probe[kReduceLanes] = {};  // sums of v * 0: NaN as soon as one v is NaN or inf
  const C lo = -clip;
  int64_t j = 0;
  for (; j + kReduceLanes <= n; j += kReduceLanes) {
    for (int k = 0; k < kReduceLanes; ++k) {
      const C v = x[j + k];
      probe[k] += v * C(0);
      const double c = static_cast<double>(std::min(std::max(v, lo), clip));
      acc[k] += c * c;
    }
  }
  for (; j < n; ++j) {
    probe[0] += x[j] * C(0);
    const double c = static_cast<double>(std::min(std::max(x[j], lo), clip));
    acc[0] += c * c;
  }
  C bad = C(0);
  for (int k = 0; k < kReduceLanes; ++k) bad += probe[k];
  finite &= bad == C(0);
  return lane_total(acc);
}

// The sums of squares of two blocks of n values (at most a few thousand each: a tensor's
// parameters and its update direction, trust.h) in float64, read together in one loop (two
// streams in flight), with the lanes in the compute precision C: float lanes for float32 values
// (a lane adds at most kBlock / kReduceLanes squares, so its relative error stays near 1e-7),
// twice as many values per vector as widening to double first; the lanes are summed in float64.
template <typename C>
inline void sum_squares_pair(const C* __restrict__ x, const C* __restrict__ y, int64_t n,
                             double* sums) {
  C ax[kReduceLanes] = {}, ay[kReduceLanes] = {};
  int64_t j = 0;
  for (; j + kReduceLanes <= n; j += kReduceLanes) {
    for (int k = 0; k < kReduceLanes; ++k) {
      ax[k] += x[j + k] * x[j + k];
      ay[k] += y[j + k] * y[j + k];
    }
  }
  for (; j < n; ++j) {
    ax[0] += x[j] * x[j];
    ay[0] += y[j] * y[j];
  }
  sums[0] = lane_total(ax);
  sums[1] = lane_total(ay);
}

}  // namespace optimist
