// optimist's optimizer engine: one single-pass CPU loop for every element-wise update rule.
//
// What is written once here, for every rule:
//   * the job list over tensors, threading (at::parallel_for) and blocking;
//   * storage codecs per tensor and per state slot: the compute precision itself (no copy),
//     float32, float16, bfloat16 rounded to nearest or stochastically, and block-wise int8
//     (an 8-bit float-like code per value and a float32 absmax per block of 256 values);
//   * the prologue before the rule: gradient scale (global-norm clipping, accumulation),
//     clipping by value, maximize, L2 penalty, decoupled weight decay (per-tensor factors, so
//     masks cost nothing);
//   * the epilogue after it: an exponential moving average of the parameters;
//   * pass 0: one read of the gradients giving each tensor's sum of squares and finiteness.
//
// What a rule adds: a functor (its element math, 10-20 lines) and one line in dispatch_rule.
// The functor sees only compute-precision pointers (float for float32/bfloat16/float16
// parameters, double for float64) to the parameter, the prepared gradient and up to four state
// slots, over a block of at most kBlock elements that fits in L1; the engine decodes what is not
// stored in that precision into block buffers before the call and encodes it after, so memory is
// still read and written once.
//
// Rounding follows torch's CPU kernels (see kernels of torch/optim/_single_tensor_*): fmadd()
// where torch fuses a multiply-add (add with alpha, addcmul, lerp), separate roundings
// elsewhere; the build uses -ffp-contract=off so the compiler does not fuse on its own.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

using at::Tensor;

constexpr int kMaxSlots = 4;          // state slots a rule may use
constexpr int kEmaSlot = kMaxSlots;   // the epilogue's EMA of parameters
constexpr int kAllSlots = kMaxSlots + 1;
constexpr int64_t kBlock = 1024;      // elements per block (buffers stay in L1)
constexpr int64_t kQuantBlock = 256;  // int8 codec: values per absmax scale
constexpr int64_t kParallelElems = 32 * 1024;

// ---------------------------------------------------------------------------------------------
// Scalar helpers shared by the rules.

template <typename C>
inline C fmadd(C a, C b, C c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// torch's lerp (ATen/native/Lerp.h): the formula depends on whether |weight| < 0.5.
template <typename C>
inline C lerp(C self, C end, C w, C one_minus_w, bool small) {
  const C diff = end - self;
  return small ? fmadd(w, diff, self) : fmadd(-diff, one_minus_w, end);
}

template <typename C>
inline C maximum(C a, C b) {
  return a < b ? b : a;
}

template <typename C>
inline C sign_of(C x) {
  return x > C(0) ? C(1) : (x < C(0) ? C(-1) : C(0));
}

inline uint32_t float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b;
}

inline float bits_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
}

// Counter-based random bits for stochastic rounding: reproducible for a given seed and element.
inline uint32_t random_bits(uint32_t seed, uint32_t index) {
  uint32_t x = index * 0x9E3779B1u ^ seed;
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return x;
}

// ---------------------------------------------------------------------------------------------
// Storage codecs.  A Store is one tensor (parameter, gradient or state slot) as the engine sees
// it: where its elements are and how they are encoded.

enum Kind : int32_t {
  kAbsent = 0,   // unused slot
  kNative = 1,   // stored in the compute precision: used in place, no copy
  kFloat = 2,    // float32 storage under float64 compute
  kBF16 = 3,     // bfloat16, round to nearest even on write
  kBF16SR = 4,   // bfloat16, stochastic rounding on write
  kHalf = 5,     // float16, round to nearest even
  kInt8 = 6,     // block-wise 8-bit code + float32 absmax per 256 values
};

struct Store {
  void* data = nullptr;
  float* scale = nullptr;  // kInt8: one per kQuantBlock values
  int32_t kind = kAbsent;
};

inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16_rne(float v) {
  const uint32_t bits = float_bits(v);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return (v != v) ? static_cast<uint16_t>(0x7FC0) : static_cast<uint16_t>(rounded);
}

inline uint16_t float_to_bf16_sr(float v, uint32_t rnd) {
  const uint32_t bits = float_bits(v);
  const uint32_t rounded = (bits + (rnd & 0xFFFFu)) >> 16;
  return (v != v) ? static_cast<uint16_t>(0x7FC0) : static_cast<uint16_t>(rounded);
}

inline void half_to_float(const c10::Half* __restrict__ src, float* __restrict__ dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(
                                  reinterpret_cast<const __m256i*>(src + i))));
  }
#elif defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                  reinterpret_cast<const __m128i*>(src + i))));
  }
#endif
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

inline void float_to_half(const float* __restrict__ src, c10::Half* __restrict__ dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
#elif defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
#endif
  for (; i < n; ++i) dst[i] = c10::Half(src[i]);
}

// The int8 code.  Within a block of 256 values with absmax a, a value x is stored as
// t = |x| / a in (0, 1] rounded to a float with 4 exponent bits (15 binades below 1) and M
// mantissa bits, written as the 8-bit code (exponent, mantissa) counted from 2^-15 (code 0 is
// exactly 0; nonzero values below 2^-15 * a keep the smallest nonzero code, so a second moment
// never becomes 0).  A block without negative values uses all 8 bits for the magnitude (M = 4,
// relative step 1/16); a block with negative values stores a sign bit and M = 3 (relative step
// 1/8).  The block's mode is the sign of its stored scale (+a unsigned, -a signed).
// Rounding: to nearest.  Reference: optimist.reference.int8_encode/int8_decode.
constexpr int32_t kMinExponent = 127 - 15;

inline uint8_t int8_code(float t, int mant_bits) {
  // t in [0, 1]; t == 0 -> 0.
  const int drop = 23 - mant_bits;
  uint32_t bits = float_bits(t) + (1u << (drop - 1));
  int32_t code = static_cast<int32_t>(bits >> drop) - (kMinExponent << mant_bits);
  const int32_t top = (15 << mant_bits);  // t == 1.0
  code = code < 1 ? 1 : (code > top ? top : code);
  return t == 0.0f ? 0 : static_cast<uint8_t>(code);
}

inline float int8_value(uint32_t code, int mant_bits) {
  const int drop = 23 - mant_bits;
  const float t = bits_float((code + (static_cast<uint32_t>(kMinExponent) << mant_bits)) << drop);
  return code == 0 ? 0.0f : t;
}

void int8_decode(const int8_t* __restrict__ q, float scale, float* __restrict__ out, int64_t n) {
  if (scale >= 0.0f) {  // unsigned block
    const uint8_t* u = reinterpret_cast<const uint8_t*>(q);
    for (int64_t i = 0; i < n; ++i) out[i] = int8_value(u[i], 4) * scale;
  } else {
    const float a = -scale;
    const uint8_t* u = reinterpret_cast<const uint8_t*>(q);
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t c = u[i];
      const float mag = int8_value(c & 0x7Fu, 3) * a;
      out[i] = (c & 0x80u) ? -mag : mag;
    }
  }
}

float int8_encode(const float* __restrict__ x, int8_t* __restrict__ q, int64_t n) {
  float amax = 0.0f;
  bool negative = false;
  for (int64_t i = 0; i < n; ++i) {
    amax = std::max(amax, std::abs(x[i]));
    negative |= x[i] < 0.0f;
  }
  uint8_t* u = reinterpret_cast<uint8_t*>(q);
  if (!(amax > 0.0f) || !std::isfinite(amax)) {
    // all zero, or a non-finite value: keep what can be kept (NaN/inf poison the block, as they
    // would poison float state) by storing the block as zeros with a non-finite scale.
    for (int64_t i = 0; i < n; ++i) u[i] = 0;
    return amax > 0.0f ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
  }
  const float inv = 1.0f / amax;
  if (!negative) {
    for (int64_t i = 0; i < n; ++i) u[i] = int8_code(std::min(x[i] * inv, 1.0f), 4);
    return amax;
  }
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t c = int8_code(std::min(std::abs(x[i]) * inv, 1.0f), 3);
    u[i] = static_cast<uint8_t>(c | (x[i] < 0.0f ? 0x80u : 0u));
  }
  return -amax;
}

// Decode elements [begin, begin + n) of a store into the compute buffer, or return the
// store's own pointer when it already holds the compute precision.
template <typename C>
C* load(const Store& s, int64_t begin, int64_t n, C* __restrict__ buf) {
  switch (s.kind) {
    case kNative:
      return static_cast<C*>(s.data) + begin;
    case kFloat: {
      const float* src = static_cast<const float*>(s.data) + begin;
      for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<C>(src[i]);
      return buf;
    }
    case kBF16:
    case kBF16SR: {
      const uint16_t* src = static_cast<const uint16_t*>(s.data) + begin;
      for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<C>(bf16_to_float(src[i]));
      return buf;
    }
    case kHalf: {
      const c10::Half* src = static_cast<const c10::Half*>(s.data) + begin;
      if constexpr (std::is_same_v<C, float>) {
        half_to_float(src, buf, n);
      } else {
        for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<C>(static_cast<float>(src[i]));
      }
      return buf;
    }
    case kInt8: {
      const int8_t* src = static_cast<const int8_t*>(s.data) + begin;
      alignas(64) float tmp[kQuantBlock];
      for (int64_t b = 0; b < n; b += kQuantBlock) {
        const int64_t len = std::min(kQuantBlock, n - b);
        const float scale = s.scale[(begin + b) / kQuantBlock];
        if constexpr (std::is_same_v<C, float>) {
          int8_decode(src + b, scale, buf + b, len);
        } else {
          int8_decode(src + b, scale, tmp, len);
          for (int64_t i = 0; i < len; ++i) buf[b + i] = static_cast<C>(tmp[i]);
        }
      }
      return buf;
    }
    default:
      return nullptr;
  }
}

// Encode the compute buffer back into elements [begin, begin + n) of a store (no-op for kNative,
// which was updated in place).
template <typename C>
void store(const Store& s, int64_t begin, int64_t n, const C* __restrict__ buf, uint32_t seed) {
  switch (s.kind) {
    case kFloat: {
      float* dst = static_cast<float*>(s.data) + begin;
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(buf[i]);
      break;
    }
    case kBF16: {
      uint16_t* dst = static_cast<uint16_t*>(s.data) + begin;
      for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16_rne(static_cast<float>(buf[i]));
      break;
    }
    case kBF16SR: {
      uint16_t* dst = static_cast<uint16_t*>(s.data) + begin;
      const uint32_t base = static_cast<uint32_t>(begin);
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t r = random_bits(seed, base + static_cast<uint32_t>(i));
        dst[i] = float_to_bf16_sr(static_cast<float>(buf[i]), r);
      }
      break;
    }
    case kHalf: {
      c10::Half* dst = static_cast<c10::Half*>(s.data) + begin;
      if constexpr (std::is_same_v<C, float>) {
        float_to_half(buf, dst, n);
      } else {
        for (int64_t i = 0; i < n; ++i) dst[i] = c10::Half(static_cast<float>(buf[i]));
      }
      break;
    }
    case kInt8: {
      int8_t* dst = static_cast<int8_t*>(s.data) + begin;
      alignas(64) float tmp[kQuantBlock];
      for (int64_t b = 0; b < n; b += kQuantBlock) {
        const int64_t len = std::min(kQuantBlock, n - b);
        const float* src;
        if constexpr (std::is_same_v<C, float>) {
          src = buf + b;
        } else {
          for (int64_t i = 0; i < len; ++i) tmp[i] = static_cast<float>(buf[b + i]);
          src = tmp;
        }
        s.scale[(begin + b) / kQuantBlock] = int8_encode(src, dst + b, len);
      }
      break;
    }
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Rules.  Each is a functor over one block: C is the compute type; h the host scalars the
// rule's Python side computed for this step (its `scalars()` tuple, in that order); p the
// parameter (after decoupled decay), g the prepared gradient, s0..s3 the state slots.

template <typename C, bool MOM, bool FRESH, bool NESTEROV>
struct Sgd {  // h: momentum, 1 - dampening, -lr
  C mom, omd, neg_lr;
  explicit Sgd(const double* h) : mom(C(h[0])), omd(C(h[1])), neg_lr(C(h[2])) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ buf,
                  C*, C*, C*) const {
    for (int64_t i = 0; i < n; ++i) {
      C gi = g[i];
      if constexpr (MOM) {
        const C b = FRESH ? gi : fmadd(omd, gi, buf[i] * mom);
        buf[i] = b;
        gi = NESTEROV ? fmadd(mom, b, gi) : b;
      }
      p[i] = fmadd(neg_lr, gi, p[i]);
    }
  }
};

template <typename C>
struct Adagrad {  // h: eps, -lr / (1 + (step - 1) * lr_decay)
  C eps, neg_clr;
  explicit Adagrad(const double* h) : eps(C(h[0])), neg_clr(C(h[1])) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ sum,
                  C*, C*, C*) const {
    for (int64_t i = 0; i < n; ++i) {
      const C s = fmadd(g[i], g[i], sum[i]);
      sum[i] = s;
      p[i] = p[i] + neg_clr * g[i] / (std::sqrt(s) + eps);
    }
  }
};

template <typename C, bool CENTERED, bool MOM>
struct Rmsprop {  // h: alpha, 1 - alpha, eps, momentum, -lr
  C alpha, oma, eps, mom, neg_lr, w1;
  bool small;
  explicit Rmsprop(const double* h)
      : alpha(C(h[0])), oma(C(h[1])), eps(C(h[2])), mom(C(h[3])), neg_lr(C(h[4])),
        w1(C(1) - C(h[1])), small(std::abs(C(h[1])) < C(0.5)) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ sq,
                  C* __restrict__ gavg, C* __restrict__ buf, C*) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C s = fmadd(oma * gi, gi, sq[i] * alpha);
      sq[i] = s;
      C avg;
      if constexpr (CENTERED) {
        const C ga = lerp(gavg[i], gi, oma, w1, small);
        gavg[i] = ga;
        avg = std::sqrt(fmadd(-ga, ga, s));
      } else {
        avg = std::sqrt(s);
      }
      avg = avg + eps;
      if constexpr (MOM) {
        const C b = buf[i] * mom + gi / avg;
        buf[i] = b;
        p[i] = fmadd(neg_lr, b, p[i]);
      } else {
        p[i] = p[i] + neg_lr * gi / avg;
      }
    }
  }
};

template <typename C>
struct Adadelta {  // h: rho, 1 - rho, eps, -lr
  C rho, omr, eps, neg_lr;
  explicit Adadelta(const double* h)
      : rho(C(h[0])), omr(C(h[1])), eps(C(h[2])), neg_lr(C(h[3])) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ sq,
                  C* __restrict__ acc, C*, C*) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C s = fmadd(omr * gi, gi, sq[i] * rho);
      sq[i] = s;
      const C a = acc[i];
      const C delta = std::sqrt(a + eps) / std::sqrt(s + eps) * gi;
      acc[i] = fmadd(omr * delta, delta, a * rho);
      p[i] = fmadd(neg_lr, delta, p[i]);
    }
  }
};

template <typename C, bool AMSGRAD>
struct Adam {  // h: 1 - beta1, beta2, 1 - beta2, sqrt(1 - beta2^t), eps, -lr / (1 - beta1^t)
  C w1, lw1, beta2, omb2, bc2s, eps, nss;
  bool small;
  explicit Adam(const double* h)
      : w1(C(h[0])), lw1(C(1) - C(h[0])), beta2(C(h[1])), omb2(C(h[2])), bc2s(C(h[3])),
        eps(C(h[4])), nss(C(h[5])), small(std::abs(C(h[0])) < C(0.5)) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
                  C* __restrict__ v, C* __restrict__ vmax, C*) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C mi = lerp(m[i], gi, w1, lw1, small);
      m[i] = mi;
      C vi = fmadd(omb2 * gi, gi, v[i] * beta2);
      v[i] = vi;
      if constexpr (AMSGRAD) {
        vi = maximum(vmax[i], vi);
        vmax[i] = vi;
      }
      p[i] = p[i] + nss * mi / (std::sqrt(vi) / bc2s + eps);
    }
  }
};

template <typename C>
struct Adamax {  // h: 1 - beta1, beta2, eps, -lr / (1 - beta1^t)
  C w1, lw1, beta2, eps, neg_clr;
  bool small;
  explicit Adamax(const double* h)
      : w1(C(h[0])), lw1(C(1) - C(h[0])), beta2(C(h[1])), eps(C(h[2])), neg_clr(C(h[3])),
        small(std::abs(C(h[0])) < C(0.5)) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
                  C* __restrict__ u, C*, C*) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C mi = lerp(m[i], gi, w1, lw1, small);
      m[i] = mi;
      const C ui = maximum(u[i] * beta2, std::abs(gi) + eps);
      u[i] = ui;
      p[i] = p[i] + neg_clr * mi / ui;
    }
  }
};

template <typename C>
struct Nadam {  // h: 1 - beta1, beta2, 1 - beta2, 1 - beta2^t, eps, c_grad, c_avg
  C w1, lw1, beta2, omb2, bc2, eps, cg, ca;
  bool small;
  explicit Nadam(const double* h)
      : w1(C(h[0])), lw1(C(1) - C(h[0])), beta2(C(h[1])), omb2(C(h[2])), bc2(C(h[3])),
        eps(C(h[4])), cg(C(h[5])), ca(C(h[6])), small(std::abs(C(h[0])) < C(0.5)) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
                  C* __restrict__ v, C*, C*) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C mi = lerp(m[i], gi, w1, lw1, small);
      m[i] = mi;
      const C vi = fmadd(omb2 * gi, gi, v[i] * beta2);
      v[i] = vi;
      const C denom = std::sqrt(vi / bc2) + eps;
      const C pi = p[i] + cg * gi / denom;  // torch: two separate addcdiv_ calls
      p[i] = pi + ca * mi / denom;
    }
  }
};

template <typename C>
struct Radam {  // h: 1 - beta1, beta2, 1 - beta2, 1 - beta1^t, lr, sqrt(1 - beta2^t), rect, eps
  C w1, lw1, beta2, omb2, bc1, lr, bc2s, rect, eps;
  bool small, rectified;
  explicit Radam(const double* h)
      : w1(C(h[0])), lw1(C(1) - C(h[0])), beta2(C(h[1])), omb2(C(h[2])), bc1(C(h[3])),
        lr(C(h[4])), bc2s(C(h[5])), rect(C(h[6])), eps(C(h[7])),
        small(std::abs(C(h[0])) < C(0.5)), rectified(h[6] > 0.0) {}
  template <bool RECT>
  void run(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
           C* __restrict__ v) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C mi = lerp(m[i], gi, w1, lw1, small);
      m[i] = mi;
      const C vi = fmadd(omb2 * gi, gi, v[i] * beta2);
      v[i] = vi;
      const C corrected = mi / bc1;
      if constexpr (RECT) {
        // torch: exp_avg / bc1 * lr * (bc2**0.5 / (sqrt(v) + eps)) * rect, with
        // `scalar / tensor` evaluated as tensor.reciprocal() * scalar.
        const C adaptive = (C(1) / (std::sqrt(vi) + eps)) * bc2s;
        p[i] = p[i] - corrected * lr * adaptive * rect;
      } else {
        p[i] = p[i] - corrected * lr;
      }
    }
  }
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
                  C* __restrict__ v, C*, C*) const {
    if (rectified) {
      run<true>(n, p, g, m, v);
    } else {
      run<false>(n, p, g, m, v);
    }
  }
};

template <typename C>
struct Lion {  // h: beta1, 1 - beta1, beta2, 1 - beta2, -lr
  C b1, omb1, b2, omb2, neg_lr;
  explicit Lion(const double* h)
      : b1(C(h[0])), omb1(C(h[1])), b2(C(h[2])), omb2(C(h[3])), neg_lr(C(h[4])) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
                  C*, C*, C*) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C c = fmadd(omb1, gi, m[i] * b1);  // interpolation, then its sign is the update
      p[i] = fmadd(neg_lr, sign_of(c), p[i]);
      m[i] = fmadd(omb2, gi, m[i] * b2);
    }
  }
};

template <typename C>
struct Adopt {  // h: first step (1/0), clip, 1 - beta1, beta2, 1 - beta2, eps, -lr
  C clip, w1, lw1, beta2, omb2, eps, neg_lr;
  bool first, small;
  explicit Adopt(const double* h)
      : clip(C(h[1])), w1(C(h[2])), lw1(C(1) - C(h[2])), beta2(C(h[3])), omb2(C(h[4])),
        eps(C(h[5])), neg_lr(C(h[6])), first(h[0] != 0.0), small(std::abs(C(h[2])) < C(0.5)) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
                  C* __restrict__ v, C*, C*) const {
    if (first) {  // v_0 = g_0^2; no update
      for (int64_t i = 0; i < n; ++i) v[i] = fmadd(g[i], g[i], v[i]);
      return;
    }
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C normed = gi / maximum(std::sqrt(v[i]), eps);  // uses v_{t-1}
      const C mi = lerp(m[i], std::min(std::max(normed, -clip), clip), w1, lw1, small);
      m[i] = mi;
      p[i] = fmadd(neg_lr, mi, p[i]);
      v[i] = fmadd(omb2 * gi, gi, v[i] * beta2);
    }
  }
};

template <typename C>
struct Ademamix {  // h: b1, 1 - b1, b2, 1 - b2, b3, 1 - b3, 1 - b1^t, sqrt(1 - b2^t), eps, alpha, -lr
  C b1, omb1, b2, omb2, b3, omb3, bc1, bc2s, eps, alpha, neg_lr;
  explicit Ademamix(const double* h)
      : b1(C(h[0])), omb1(C(h[1])), b2(C(h[2])), omb2(C(h[3])), b3(C(h[4])), omb3(C(h[5])),
        bc1(C(h[6])), bc2s(C(h[7])), eps(C(h[8])), alpha(C(h[9])), neg_lr(C(h[10])) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m1,
                  C* __restrict__ m2, C* __restrict__ v, C*) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C fast = fmadd(omb1, gi, m1[i] * b1);
      const C slow = fmadd(omb3, gi, m2[i] * b3);
      const C vi = fmadd(omb2 * gi, gi, v[i] * b2);
      m1[i] = fast;
      m2[i] = slow;
      v[i] = vi;
      const C denom = std::sqrt(vi) / bc2s + eps;
      p[i] = p[i] + neg_lr * ((fast / bc1 + alpha * slow) / denom);  // p.add_(-lr * update)
    }
  }
};

template <typename C, bool FRESH>
struct Adan {  // h: b1, 1-b1, b2, 1-b2, b3, 1-b3, sqrt(1-b3^t), eps, -lr/(1-b1^t),
               //    -lr*b2/(1-b2^t), 1 + lr*wd (proximal decay; 1 without)
  C b1, omb1, b2, omb2, b3, omb3, bc3s, eps, s1, s2, prox;
  bool proximal;
  explicit Adan(const double* h)
      : b1(C(h[0])), omb1(C(h[1])), b2(C(h[2])), omb2(C(h[3])), b3(C(h[4])), omb3(C(h[5])),
        bc3s(C(h[6])), eps(C(h[7])), s1(C(h[8])), s2(C(h[9])), prox(C(h[10])),
        proximal(h[10] != 1.0) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
                  C* __restrict__ v, C* __restrict__ d, C* __restrict__ neg_prev) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C diff = FRESH ? C(0) : gi + neg_prev[i];  // g_t - g_{t-1}; 0 on the first step
      const C mi = fmadd(omb1, gi, m[i] * b1);
      const C di = fmadd(omb2, diff, d[i] * b2);
      const C u = diff * b2 + gi;  // g_t + b2 (g_t - g_{t-1}), as mul_ then add_
      const C vi = fmadd(omb3 * u, u, v[i] * b3);
      m[i] = mi;
      d[i] = di;
      v[i] = vi;
      neg_prev[i] = -gi;
      const C denom = std::sqrt(vi) / bc3s + eps;
      C pi = p[i] + s1 * mi / denom;  // two addcdiv_ calls
      pi = pi + s2 * di / denom;
      p[i] = proximal ? pi / prox : pi;
    }
  }
};

template <typename C, bool ADAM, bool FRESH>
struct ScheduleFree {  // h: c, 1 - c, lr (beta1 (1 - c) - 1), -lr, beta2, 1 - beta2,
                       //    1 - beta2^t, eps, weight decay at y (AdamW form; 0 for SGD)
  C ckp1, omc, ylr, neg_lr, beta2, omb2, bc2, eps, wd;
  bool small;
  explicit ScheduleFree(const double* h)
      : ckp1(C(h[0])), omc(C(h[1])), ylr(C(h[2])), neg_lr(C(h[3])), beta2(C(h[4])),
        omb2(C(h[5])), bc2(C(h[6])), eps(C(h[7])), wd(C(h[8])),
        small(std::abs(C(h[0])) < C(0.5)) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ z,
                  C* __restrict__ v, C*, C*) const {
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (FRESH) z[i] = p[i];  // z starts at the parameter
      C gi = g[i];
      if constexpr (ADAM) {
        const C vi = fmadd(omb2 * gi, gi, v[i] * beta2);
        v[i] = vi;
        gi = gi / (std::sqrt(vi / bc2) + eps);
        if (wd != C(0)) gi = fmadd(wd, p[i], gi);  // decay at y, after normalisation
      }
      const C y = lerp(p[i], z[i], ckp1, omc, small);
      p[i] = fmadd(ylr, gi, y);
      z[i] = fmadd(neg_lr, gi, z[i]);
    }
  }
};

template <typename C, bool MOMENTUM>
struct Prodigy {  // h: b1, d (1 - b1), b2, d^2 (1 - b2), b3, s weight, d_new eps, -dlr,
                  //    -wd dlr (decoupled decay; 0 without), -dlr d_new (for b1 = 0)
  C b1, w1, b2, w2, b3, ws, deps, neg_dlr, neg_decay, neg_dlr_d;
  explicit Prodigy(const double* h)
      : b1(C(h[0])), w1(C(h[1])), b2(C(h[2])), w2(C(h[3])), b3(C(h[4])), ws(C(h[5])),
        deps(C(h[6])), neg_dlr(C(h[7])), neg_decay(C(h[8])), neg_dlr_d(C(h[9])) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
                  C* __restrict__ v, C* __restrict__ s, C*) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C vi = fmadd(w2 * gi, gi, v[i] * b2);
      v[i] = vi;
      s[i] = fmadd(ws, gi, s[i] * b3);  // d is known: the global pass took |s|_1 already
      const C denom = std::sqrt(vi) + deps;
      C pi = p[i];
      if (neg_decay != C(0)) pi = fmadd(neg_decay, pi, pi);  // p.add_(p, alpha=-wd dlr)
      if constexpr (MOMENTUM) {
        const C mi = fmadd(w1, gi, m[i] * b1);
        m[i] = mi;
        p[i] = pi + neg_dlr * mi / denom;
      } else {
        p[i] = pi + neg_dlr_d * gi / denom;
      }
    }
  }
};

template <typename C, bool HESSIAN>
struct SophiaG {  // h (step): b1, 1 - b1, rho bs, eps, -lr;  h (HESSIAN): b2, 1 - b2
  C b, omb, rho_bs, eps, neg_lr;
  explicit SophiaG(const double* h)
      : b(C(h[0])), omb(C(h[1])), rho_bs(HESSIAN ? C(0) : C(h[2])),
        eps(HESSIAN ? C(0) : C(h[3])), neg_lr(HESSIAN ? C(0) : C(h[4])) {}
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
                  C* __restrict__ hess, C*, C*) const {
    if constexpr (HESSIAN) {  // update_hessian(): h = b2 h + (1 - b2) g^2; p and m untouched
      for (int64_t i = 0; i < n; ++i) hess[i] = fmadd(omb * g[i], g[i], hess[i] * b);
      return;
    }
    for (int64_t i = 0; i < n; ++i) {
      const C mi = fmadd(omb, g[i], m[i] * b);
      m[i] = mi;
      const C ratio = std::min(std::abs(mi) / (rho_bs * hess[i] + eps), C(1));
      p[i] = fmadd(neg_lr * sign_of(mi), ratio, p[i]);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Jobs: one tensor's work, type-erased, over [begin, end) of its elements.

struct Prologue {
  double grad_scale = 1.0;   // multiplies the gradient first (clipping by norm, accumulation)
  double clip_value = 0.0;   // > 0: clamp the gradient to [-clip_value, clip_value]
  bool clip_first = true;    // clamp before scaling (else after)
  double sign = 1.0;         // -1 for maximize
  double l2 = 0.0;           // grad += l2 * param
  double decay = 1.0;        // param *= decay before the rule (decoupled weight decay)
  double ema_decay = 0.0;    // ema = ema_decay * ema + (1 - ema_decay) * param, after the rule
};

struct Job {
  void (*fn)(const Job&, int64_t, int64_t);
  Store param, grad;
  Store slot[kAllSlots];
  Prologue pro;
  uint32_t seed;
  int64_t n;
  double hyper[12];
};

template <typename C>
bool plain_grad(const Job& job) {
  const Prologue& pr = job.pro;
  return job.grad.kind == kNative && pr.grad_scale == 1.0 && pr.clip_value == 0.0 &&
         pr.sign == 1.0 && pr.l2 == 0.0;
}

// The prologue's gradient: clip by value, scale, maximize (one loop per case, so that each
// vectorizes), then the L2 penalty.  The operation order is torch's: clip_grad_* before the
// step, then `-grad` for maximize, then `grad.add(param, alpha=weight_decay)`.
template <typename C>
void prepare_grad(const Job& job, const C* __restrict__ p, const C* __restrict__ graw,
                  C* __restrict__ out, int64_t n) {
  const Prologue& pr = job.pro;
  const C scale = C(pr.grad_scale), sgn = C(pr.sign), l2 = C(pr.l2);
  const C hi = C(pr.clip_value), lo = -C(pr.clip_value);
  const bool clip = pr.clip_value > 0.0, first = pr.clip_first, scaled = pr.grad_scale != 1.0;
  if (clip) {
    for (int64_t i = 0; i < n; ++i) {
      C gi = graw[i];
      if (first) gi = std::min(std::max(gi, lo), hi);
      if (scaled) gi = gi * scale;
      if (!first) gi = std::min(std::max(gi, lo), hi);
      out[i] = gi * sgn;
    }
  } else if (scaled) {
    for (int64_t i = 0; i < n; ++i) out[i] = (graw[i] * scale) * sgn;
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = graw[i] * sgn;
  }
  if (pr.l2 != 0.0) {
    for (int64_t i = 0; i < n; ++i) out[i] = fmadd(l2, p[i], out[i]);
  }
}

template <typename R, typename C>
void run_job(const Job& job, int64_t begin, int64_t end) {
  const R rule(job.hyper);
  alignas(64) C pbuf[kBlock], graw[kBlock], gbuf[kBlock];
  alignas(64) C sbuf[kAllSlots][kBlock];
  const bool plain = plain_grad<C>(job);
  const Prologue& pr = job.pro;
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t len = std::min(kBlock, end - b);
    C* __restrict__ p = load<C>(job.param, b, len, pbuf);
    if (pr.decay != 1.0) {
      const C decay = C(pr.decay);
      for (int64_t i = 0; i < len; ++i) p[i] = p[i] * decay;
    }
    const C* g = load<C>(job.grad, b, len, graw);
    if (!plain) {
      prepare_grad<C>(job, p, g, gbuf, len);
      g = gbuf;
    }
    C* s[kAllSlots];
    for (int k = 0; k < kAllSlots; ++k) {
      s[k] = job.slot[k].kind == kAbsent ? nullptr : load<C>(job.slot[k], b, len, sbuf[k]);
    }
    rule(len, p, g, s[0], s[1], s[2], s[3]);
    if (C* __restrict__ e = s[kEmaSlot]) {
      const C d = C(pr.ema_decay), od = C(1) - C(pr.ema_decay);
      for (int64_t i = 0; i < len; ++i) e[i] = fmadd(od, p[i], e[i] * d);
    }
    uint32_t seed = job.seed;
    store<C>(job.param, b, len, p, seed);
    for (int k = 0; k < kAllSlots; ++k) {
      seed = seed * 0x01000193u + 0x9E3779B9u;
      if (job.slot[k].kind != kAbsent) store<C>(job.slot[k], b, len, s[k], seed);
    }
  }
}

void execute(const std::vector<Job>& jobs) {
  std::vector<const Job*> small;
  int64_t small_elems = 0;
  for (const Job& job : jobs) {
    if (job.n == 0) continue;
    if (job.n > kParallelElems) {
      const int64_t blocks = (job.n + kBlock - 1) / kBlock;
      at::parallel_for(0, blocks, kParallelElems / kBlock, [&](int64_t b0, int64_t b1) {
        job.fn(job, b0 * kBlock, std::min(job.n, b1 * kBlock));
      });
    } else {
      small.push_back(&job);
      small_elems += job.n;
    }
  }
  if (small.empty()) return;
  if (small_elems <= kParallelElems || small.size() == 1) {
    for (const Job* job : small) job->fn(*job, 0, job->n);
    return;
  }
  const int64_t count = static_cast<int64_t>(small.size());
  const int64_t mean = std::max<int64_t>(1, small_elems / count);
  const int64_t grain = std::max<int64_t>(1, kParallelElems / mean);
  at::parallel_for(0, count, grain, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) small[j]->fn(*small[j], 0, small[j]->n);
  });
}

// ---------------------------------------------------------------------------------------------
// Rule dispatch: (rule name, variant flags) -> the job function.  One line per rule.

template <typename F>
void with_flag(bool b, F&& f) {
  if (b) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

template <typename C>
void (*rule_fn(const std::string& rule, const std::vector<bool>& flags))(const Job&, int64_t,
                                                                         int64_t) {
  auto flag = [&](size_t i) { return i < flags.size() && flags[i]; };
  void (*fn)(const Job&, int64_t, int64_t) = nullptr;
  if (rule == "sgd") {
    with_flag(flag(0), [&](auto mom) {
      with_flag(flag(1), [&](auto fresh) {
        with_flag(flag(2), [&](auto nest) {
          fn = &run_job<Sgd<C, decltype(mom)::value, decltype(fresh)::value,
                            decltype(nest)::value>, C>;
        });
      });
    });
  } else if (rule == "adagrad") {
    fn = &run_job<Adagrad<C>, C>;
  } else if (rule == "rmsprop") {
    with_flag(flag(0), [&](auto cen) {
      with_flag(flag(1), [&](auto mom) {
        fn = &run_job<Rmsprop<C, decltype(cen)::value, decltype(mom)::value>, C>;
      });
    });
  } else if (rule == "adadelta") {
    fn = &run_job<Adadelta<C>, C>;
  } else if (rule == "adam") {
    with_flag(flag(0), [&](auto ams) { fn = &run_job<Adam<C, decltype(ams)::value>, C>; });
  } else if (rule == "adamax") {
    fn = &run_job<Adamax<C>, C>;
  } else if (rule == "nadam") {
    fn = &run_job<Nadam<C>, C>;
  } else if (rule == "radam") {
    fn = &run_job<Radam<C>, C>;
  } else if (rule == "lion") {
    fn = &run_job<Lion<C>, C>;
  } else if (rule == "adopt") {
    fn = &run_job<Adopt<C>, C>;
  } else if (rule == "ademamix") {
    fn = &run_job<Ademamix<C>, C>;
  } else if (rule == "schedule_free") {
    with_flag(flag(0), [&](auto adam) {
      with_flag(flag(1), [&](auto fresh) {
        fn = &run_job<ScheduleFree<C, decltype(adam)::value, decltype(fresh)::value>, C>;
      });
    });
  } else if (rule == "prodigy") {
    with_flag(flag(0), [&](auto mom) { fn = &run_job<Prodigy<C, decltype(mom)::value>, C>; });
  } else if (rule == "sophia_g") {
    with_flag(flag(0), [&](auto hess) { fn = &run_job<SophiaG<C, decltype(hess)::value>, C>; });
  } else if (rule == "adan") {
    with_flag(flag(0), [&](auto fresh) { fn = &run_job<Adan<C, decltype(fresh)::value>, C>; });
  }
  TORCH_CHECK(fn != nullptr, "optimist engine: unknown rule '", rule, "'");
  return fn;
}

// ---------------------------------------------------------------------------------------------
// Python-facing functions.

bool compute_is_double(at::ScalarType t) { return t == at::kDouble || t == at::kComplexDouble; }

// How a tensor of dtype `t` is stored relative to the compute type of a parameter of dtype `pt`.
int32_t kind_of(const Tensor& t, at::ScalarType pt, bool stochastic) {
  const bool dbl = compute_is_double(pt);
  switch (t.scalar_type()) {
    case at::kFloat:
    case at::kComplexFloat:
      return dbl ? kFloat : kNative;
    case at::kDouble:
    case at::kComplexDouble:
      TORCH_CHECK(dbl, "optimist engine: float64 state needs a float64 parameter");
      return kNative;
    case at::kBFloat16:
      return stochastic ? kBF16SR : kBF16;
    case at::kHalf:
      return kHalf;
    case at::kChar:
      return kInt8;
    default:
      TORCH_CHECK(false, "optimist engine: unsupported storage dtype ", t.scalar_type());
  }
}

int64_t real_numel(const Tensor& t) { return t.is_complex() ? 2 * t.numel() : t.numel(); }

Store make_store(const Tensor& t, at::ScalarType pt, bool stochastic, const Tensor* scale,
                 int64_t n, const char* what, size_t i) {
  Store s;
  if (!t.defined()) return s;
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.layout() == at::kStrided,
              "optimist engine: ", what, "[", i, "] must be a contiguous CPU tensor");
  TORCH_CHECK(real_numel(t) == n, "optimist engine: ", what, "[", i, "] has ", real_numel(t),
              " elements, the parameter ", n);
  s.data = t.data_ptr();
  s.kind = kind_of(t, pt, stochastic);
  if (s.kind == kInt8) {
    TORCH_CHECK(scale != nullptr && scale->defined() && scale->scalar_type() == at::kFloat &&
                    scale->is_contiguous() &&
                    scale->numel() == (n + kQuantBlock - 1) / kQuantBlock,
                "optimist engine: ", what, "[", i, "] is int8 and needs a float32 scale of ",
                (n + kQuantBlock - 1) / kQuantBlock, " blocks");
    s.scale = scale->data_ptr<float>();
  }
  return s;
}

void bump(const Tensor& t) {
  if (t.defined() && !t.is_inference()) torch::autograd::impl::bump_version(t);
}

// One optimizer step for a list of tensors sharing one rule variant and one set of host scalars.
//   slots[k][i]: state slot k of tensor i (an empty list k: slot unused); scales[k][i]: its int8
//   absmax tensor (an empty list: not int8).  fresh[i]: state created this step (rules with a
//   FRESH variant, e.g. SGD's first momentum buffer).  l2/decay: per-tensor factors (empty: use
//   the scalar for all).  ema: EMA slot per tensor (empty: none).
void step(const std::string& rule, const std::vector<bool>& flags, int64_t fresh_flag,
          const std::vector<double>& hyper, const std::vector<Tensor>& params,
          const std::vector<Tensor>& grads, const std::vector<std::vector<Tensor>>& slots,
          const std::vector<std::vector<Tensor>>& scales, const std::vector<bool>& fresh,
          double grad_scale, double clip_value, bool clip_first, bool maximize,
          const std::vector<double>& l2, const std::vector<double>& decay, double l2_all,
          double decay_all, const std::vector<Tensor>& ema, const std::vector<Tensor>& ema_scales,
          double ema_decay, bool state_stochastic, bool param_stochastic, int64_t seed) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n, "optimist engine: ", n, " params but ", grads.size(), " grads");
  TORCH_CHECK(slots.size() <= kMaxSlots, "optimist engine: at most ", kMaxSlots, " state slots");
  TORCH_CHECK(hyper.size() <= 12, "optimist engine: at most 12 host scalars");
  for (size_t k = 0; k < slots.size(); ++k) {
    TORCH_CHECK(slots[k].empty() || slots[k].size() == n, "optimist engine: slot ", k, " has ",
                slots[k].size(), " tensors, expected ", n);
  }
  TORCH_CHECK(l2.empty() || l2.size() == n, "optimist engine: l2 needs one factor per tensor");
  TORCH_CHECK(decay.empty() || decay.size() == n, "optimist engine: decay: one per tensor");
  TORCH_CHECK(ema.empty() || ema.size() == n, "optimist engine: ema needs one per tensor");
  // the job function per (compute type, freshness), looked up once per call
  using JobFn = void (*)(const Job&, int64_t, int64_t);
  JobFn fns[2][2] = {{nullptr, nullptr}, {nullptr, nullptr}};
  auto job_fn = [&](bool dbl, bool is_fresh) {
    JobFn& fn = fns[dbl][is_fresh];
    if (fn == nullptr) {
      std::vector<bool> variant = flags;
      if (fresh_flag >= 0) {
        if (variant.size() <= static_cast<size_t>(fresh_flag)) variant.resize(fresh_flag + 1);
        variant[fresh_flag] = is_fresh;
      }
      fn = dbl ? rule_fn<double>(rule, variant) : rule_fn<float>(rule, variant);
    }
    return fn;
  };
  std::vector<Job> jobs(n);
  for (size_t i = 0; i < n; ++i) {
    const Tensor& p = params[i];
    TORCH_CHECK(p.defined() && p.device().is_cpu() && p.is_contiguous(),
                "optimist engine: params[", i, "] must be a contiguous CPU tensor");
    TORCH_CHECK(grads[i].scalar_type() == p.scalar_type(), "optimist engine: grads[", i,
                "] has dtype ", grads[i].scalar_type(), ", the parameter ", p.scalar_type());
    TORCH_CHECK(grads[i].sizes() == p.sizes(), "optimist engine: grads[", i, "] has shape ",
                grads[i].sizes(), ", the parameter ", p.sizes());
    const at::ScalarType pt = p.scalar_type();
    const int64_t numel = real_numel(p);
    Job& job = jobs[i];
    job.n = numel;
    job.param = make_store(p, pt, param_stochastic, nullptr, numel, "params", i);
    job.grad = make_store(grads[i], pt, false, nullptr, numel, "grads", i);
    for (size_t k = 0; k < slots.size(); ++k) {
      if (slots[k].empty()) continue;
      const Tensor* sc = scales.size() > k && !scales[k].empty() ? &scales[k][i] : nullptr;
      job.slot[k] = make_store(slots[k][i], pt, state_stochastic, sc, numel, "state", i);
      TORCH_CHECK(slots[k][i].scalar_type() == at::kChar || slots[k][i].sizes() == p.sizes(),
                  "optimist engine: state[", i, "] has shape ", slots[k][i].sizes(),
                  ", the parameter ", p.sizes());
    }
    if (!ema.empty()) {
      const Tensor* sc = ema_scales.empty() ? nullptr : &ema_scales[i];
      job.slot[kEmaSlot] = make_store(ema[i], pt, state_stochastic, sc, numel, "ema", i);
    }
    job.pro.grad_scale = grad_scale;
    job.pro.clip_value = clip_value;
    job.pro.clip_first = clip_first;
    job.pro.sign = maximize ? -1.0 : 1.0;
    job.pro.l2 = l2.empty() ? l2_all : l2[i];
    job.pro.decay = decay.empty() ? decay_all : decay[i];
    job.pro.ema_decay = ema_decay;
    job.seed = static_cast<uint32_t>(seed) * 0x9E3779B1u + static_cast<uint32_t>(i) * 0x85EBCA6Bu;
    std::copy(hyper.begin(), hyper.end(), job.hyper);
    job.fn = job_fn(compute_is_double(pt), i < fresh.size() && fresh[i]);
  }
  {
    pybind11::gil_scoped_release release;
    execute(jobs);
  }
  for (size_t i = 0; i < n; ++i) {
    bump(params[i]);
    for (const auto& slot : slots) {
      if (!slot.empty()) bump(slot[i]);
    }
    if (!ema.empty()) bump(ema[i]);
  }
}

bool engine_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf ||
         t == at::kComplexFloat || t == at::kComplexDouble;
}

bool usable(const Tensor& t, const Tensor& p) {
  return t.defined() && t.has_storage() && t.device().is_cpu() && t.layout() == at::kStrided &&
         t.is_contiguous() && t.sizes() == p.sizes() && !t.is_conj() && !t.is_neg();
}

// ---------------------------------------------------------------------------------------------
// Aliasing among the params of one call.  The kernels update small tensors in parallel and
// large ones first, so params whose memory overlaps (two views of one storage, a param listed
// twice) must instead go through the per-tensor path in the caller's order, as torch does.
// The byte ranges of a param set are compared with the last few sets seen (one pass, no
// sort), so the O(n log n) overlap test runs once per param set, not once per step.

using Range = std::pair<uintptr_t, uintptr_t>;  // [first byte, one past the last byte)

// The byte range a CPU strided tensor can touch (empty for non-CPU or empty tensors).
Range byte_range(const Tensor& t) {
  if (!t.defined() || !t.device().is_cpu() || t.layout() != at::kStrided) return {0, 0};
  const int64_t n = t.numel();
  if (n == 0) return {0, 0};
  int64_t span = n;  // elements from the first to one past the last
  if (!t.is_contiguous()) {
    const auto sizes = t.sizes();
    const auto strides = t.strides();
    span = 1;
    for (size_t d = 0; d < sizes.size(); ++d) span += (sizes[d] - 1) * std::abs(strides[d]);
  }
  const auto lo = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  return {lo, lo + static_cast<uintptr_t>(span * t.itemsize())};
}

bool any_overlap(std::vector<Range> ranges) {
  ranges.erase(std::remove_if(ranges.begin(), ranges.end(),
                              [](const Range& r) { return r.first == r.second; }),
               ranges.end());
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return true;
  }
  return false;
}

bool params_overlap(const std::vector<Tensor>& params) {
  struct Entry {
    std::vector<Range> ranges;
    bool overlap;
  };
  static std::mutex mutex;
  static std::vector<Entry> cache;  // most recent first
  constexpr size_t kCacheSize = 16;

  std::vector<Range> ranges;
  ranges.reserve(params.size());
  for (const Tensor& p : params) ranges.push_back(byte_range(p));
  std::lock_guard<std::mutex> guard(mutex);
  for (size_t k = 0; k < cache.size(); ++k) {
    if (cache[k].ranges == ranges) {
      const bool overlap = cache[k].overlap;
      if (k != 0) std::rotate(cache.begin(), cache.begin() + k, cache.begin() + k + 1);
      return overlap;
    }
  }
  const bool overlap = any_overlap(ranges);
  if (cache.size() == kCacheSize) cache.pop_back();
  cache.insert(cache.begin(), Entry{std::move(ranges), overlap});
  return overlap;
}

// Indices i at which the engine cannot take the tensors of lists[*][i] (lists[0]: params,
// lists[1]: grads, then state slots; an empty list is skipped): another device, no storage of
// its own (a tensor subclass such as DTensor), non-contiguous, another shape, a lazy conj/neg
// bit, a grad of another dtype.  One C++ call per group, ~0.1 us per tensor.
std::vector<int64_t> unsupported_indices(const std::vector<std::vector<Tensor>>& lists) {
  std::vector<int64_t> out;
  if (lists.empty()) return out;
  const auto& params = lists[0];
  const size_t n = params.size();
  for (size_t k = 1; k < lists.size(); ++k) {
    TORCH_CHECK(lists[k].empty() || lists[k].size() == n, "optimist engine: list ", k, " has ",
                lists[k].size(), " tensors, expected ", n, " (or none)");
  }
  // Tensor subclasses that dispatch to Python (DTensor, ...) have no storage of their own to
  // hand to C++: checked first, before anything else touches them.
  auto python_tensor = [](const Tensor& t) {
    return t.defined() && t.key_set().has(c10::DispatchKey::Python);
  };
  std::vector<bool> python(n, false);
  bool any_python = false;
  for (size_t i = 0; i < n; ++i) {
    for (size_t k = 0; k < lists.size() && !python[i]; ++k) {
      if (!lists[k].empty()) python[i] = python_tensor(lists[k][i]);
    }
    any_python |= python[i];
  }
  if (any_python) {
    for (size_t i = 0; i < n; ++i) {
      if (python[i]) out.push_back(static_cast<int64_t>(i));
    }
    if (out.size() == n) return out;
    std::vector<std::vector<Tensor>> rest(lists.size());
    std::vector<int64_t> where;
    for (size_t i = 0; i < n; ++i) {
      if (python[i]) continue;
      where.push_back(static_cast<int64_t>(i));
      for (size_t k = 0; k < lists.size(); ++k) {
        if (!lists[k].empty()) rest[k].push_back(lists[k][i]);
      }
    }
    for (int64_t j : unsupported_indices(rest)) out.push_back(where[j]);
    std::sort(out.begin(), out.end());
    return out;
  }
  if (n > 1 && params_overlap(params)) {  // aliased params: all in order, one by one
    for (size_t i = 0; i < n; ++i) out.push_back(static_cast<int64_t>(i));
    return out;
  }
  for (size_t i = 0; i < n; ++i) {
    const Tensor& p = params[i];
    bool ok = p.defined() && engine_dtype(p.scalar_type()) && usable(p, p) &&
              !p.is_inference();
    if (ok && lists.size() > 1 && !lists[1].empty()) {
      ok = usable(lists[1][i], p) && lists[1][i].scalar_type() == p.scalar_type();
    }
    for (size_t k = 2; ok && k < lists.size(); ++k) {
      if (!lists[k].empty() && lists[k][i].defined()) ok = usable(lists[k][i], p);
    }
    if (!ok) out.push_back(static_cast<int64_t>(i));
  }
  return out;
}

// Pass 0: per tensor, the sum of squares of the gradient (after clamping to +-clip_value when
// > 0) in float64, and whether every element is finite; one read of each gradient.  Large
// tensors are split into chunks so that both threads read.
std::tuple<Tensor, bool> grad_stats(const std::vector<Tensor>& grads, double clip_value) {
  const size_t n = grads.size();
  struct Chunk {
    size_t tensor;
    int64_t begin, end;
  };
  std::vector<Store> stores(n);
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < n; ++i) {
    const Tensor& g = grads[i];
    const int64_t numel = real_numel(g);
    stores[i] = make_store(g, g.scalar_type(), false, nullptr, numel, "grads", i);
    for (int64_t b = 0; b < numel; b += kParallelElems) {
      chunks.push_back({i, b, std::min(numel, b + kParallelElems)});
    }
  }
  std::vector<double> partial(chunks.size(), 0.0);
  std::vector<uint8_t> finite(chunks.size(), 1);
  auto one = [&](size_t c) {
    const Chunk& ch = chunks[c];
    const Store& s = stores[ch.tensor];
    double total = 0.0;
    bool ok = true;
    auto body = [&](auto zero) {
      using C = decltype(zero);
      constexpr int kLanes = 16;  // independent partial sums, so the loop vectorizes
      alignas(64) C buf[kBlock];
      for (int64_t b = ch.begin; b < ch.end; b += kBlock) {
        const int64_t len = std::min(kBlock, ch.end - b);
        const C* __restrict__ x = load<C>(s, b, len, buf);
        C acc[kLanes] = {};
        C probe[kLanes] = {};  // sums of v * 0: NaN as soon as one v is NaN or inf
        int64_t j = 0;
        if (clip_value > 0) {
          const C hi = C(clip_value), lo = -C(clip_value);
          for (; j + kLanes <= len; j += kLanes) {
            for (int k = 0; k < kLanes; ++k) {
              const C v = x[j + k];
              probe[k] += v * C(0);
              const C c = std::min(std::max(v, lo), hi);
              acc[k] += c * c;
            }
          }
          for (; j < len; ++j) {
            probe[0] += x[j] * C(0);
            const C c = std::min(std::max(x[j], lo), hi);
            acc[0] += c * c;
          }
        } else {
          for (; j + kLanes <= len; j += kLanes) {
            for (int k = 0; k < kLanes; ++k) {
              const C v = x[j + k];
              probe[k] += v * C(0);
              acc[k] += v * v;
            }
          }
          for (; j < len; ++j) {
            probe[0] += x[j] * C(0);
            acc[0] += x[j] * x[j];
          }
        }
        C bad = 0;
        for (int k = 0; k < kLanes; ++k) {
          total += static_cast<double>(acc[k]);
          bad += probe[k];
        }
        ok &= bad == C(0);
      }
    };
    if (compute_is_double(grads[ch.tensor].scalar_type())) {
      body(0.0);
    } else {
      body(0.0f);
    }
    partial[c] = total;
    finite[c] = ok;
  };
  {
    pybind11::gil_scoped_release release;
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t a, int64_t b) {
      for (int64_t c = a; c < b; ++c) one(static_cast<size_t>(c));
    });
  }
  Tensor sums = torch::zeros({static_cast<int64_t>(n)}, torch::kFloat64);
  double* out = sums.data_ptr<double>();
  bool all = true;
  for (size_t c = 0; c < chunks.size(); ++c) {
    out[chunks[c].tensor] += partial[c];
    all &= finite[c] != 0;
  }
  return {sums, all};
}

// step += 1 for each (one-element float32/float64) step tensor, in its own precision; returns
// the new value if all are equal, else NaN.
double advance_steps(const std::vector<Tensor>& steps) {
  double common = std::numeric_limits<double>::quiet_NaN();
  bool same = true;
  for (size_t i = 0; i < steps.size(); ++i) {
    const Tensor& s = steps[i];
    TORCH_CHECK(s.defined() && s.device().is_cpu() && s.numel() == 1 &&
                    (s.scalar_type() == at::kFloat || s.scalar_type() == at::kDouble),
                "optimist engine: steps[", i, "] must be a one-element float CPU tensor");
    double v;
    if (s.scalar_type() == at::kFloat) {
      float* ptr = s.data_ptr<float>();
      *ptr = *ptr + 1.0f;
      v = *ptr;
    } else {
      double* ptr = s.data_ptr<double>();
      *ptr = *ptr + 1.0;
      v = *ptr;
    }
    if (i == 0) {
      common = v;
    } else if (v != common) {
      same = false;
    }
  }
  return same ? common : std::numeric_limits<double>::quiet_NaN();
}

// x *= factor for one-element float tensors (in their precision, the factor cast first, as
// torch's `tensor *= python_float`); returns the new common value or NaN.
double scale_scalars(const std::vector<Tensor>& xs, double factor) {
  double common = std::numeric_limits<double>::quiet_NaN();
  bool same = true;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& s = xs[i];
    double v;
    if (s.scalar_type() == at::kFloat) {
      float* ptr = s.data_ptr<float>();
      *ptr = *ptr * static_cast<float>(factor);
      v = *ptr;
    } else {
      TORCH_CHECK(s.scalar_type() == at::kDouble, "optimist engine: scalar state must be float");
      double* ptr = s.data_ptr<double>();
      *ptr = *ptr * factor;
      v = *ptr;
    }
    if (i == 0) {
      common = v;
    } else if (v != common) {
      same = false;
    }
  }
  return same ? common : std::numeric_limits<double>::quiet_NaN();
}

// The int8 codec on its own (tests compare it with a NumPy implementation of the same scheme).
std::tuple<Tensor, Tensor> quantize(const Tensor& x) {
  Tensor src = x.contiguous().to(torch::kFloat32);
  const int64_t n = src.numel();
  Tensor q = torch::empty({n}, torch::kInt8);
  Tensor scale = torch::empty({(n + kQuantBlock - 1) / kQuantBlock}, torch::kFloat32);
  const float* s = src.data_ptr<float>();
  int8_t* out = q.data_ptr<int8_t>();
  float* sc = scale.data_ptr<float>();
  for (int64_t b = 0; b < n; b += kQuantBlock) {
    sc[b / kQuantBlock] = int8_encode(s + b, out + b, std::min(kQuantBlock, n - b));
  }
  return {q.view(x.sizes()), scale};
}

Tensor dequantize(const Tensor& q, const Tensor& scale) {
  Tensor src = q.contiguous();
  const int64_t n = src.numel();
  TORCH_CHECK(src.scalar_type() == at::kChar && scale.scalar_type() == at::kFloat &&
                  scale.numel() == (n + kQuantBlock - 1) / kQuantBlock,
              "optimist engine: dequantize needs int8 codes and one float32 scale per ",
              kQuantBlock, " values");
  Tensor out = torch::empty({n}, torch::kFloat32);
  const int8_t* s = src.data_ptr<int8_t>();
  Tensor sc = scale.contiguous();
  const float* scp = sc.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t b = 0; b < n; b += kQuantBlock) {
    int8_decode(s + b, scp[b / kQuantBlock], o + b, std::min(kQuantBlock, n - b));
  }
  return out.view(q.sizes());
}

}  // namespace

// Prodigy's global pass: per tensor, <g', x0 - x> and |beta3 s + weight g'|_1 in float64, where
// g' is the gradient after the prologue the rule will apply (clip, scale, maximize, L2) and s is
// read through its codec.  One read of g, x, x0 and s; chunks and lanes as in grad_stats, so the
// sums do not depend on the number of threads.
Tensor prodigy_stats(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                     const std::vector<Tensor>& p0s, const std::vector<Tensor>& ss,
                     const std::vector<Tensor>& s_scales, double beta3, double weight,
                     double grad_scale, double clip_value, bool clip_first, bool maximize,
                     const std::vector<double>& l2) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && p0s.size() == n && ss.size() == n && l2.size() == n,
              "optimist engine: prodigy_stats needs one grad, p0, s and l2 per param");
  struct Chunk {
    size_t tensor;
    int64_t begin, end;
  };
  std::vector<Job> jobs(n);  // only the stores and the prologue are used
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < n; ++i) {
    const at::ScalarType pt = params[i].scalar_type();
    const int64_t numel = real_numel(params[i]);
    Job& job = jobs[i];
    job.param = make_store(params[i], pt, false, nullptr, numel, "params", i);
    job.grad = make_store(grads[i], pt, false, nullptr, numel, "grads", i);
    job.slot[0] = make_store(p0s[i], pt, false, nullptr, numel, "p0", i);
    const Tensor* sc = s_scales.empty() ? nullptr : &s_scales[i];
    job.slot[1] = make_store(ss[i], pt, false, sc, numel, "s", i);
    job.pro.grad_scale = grad_scale;
    job.pro.clip_value = clip_value;
    job.pro.clip_first = clip_first;
    job.pro.sign = maximize ? -1.0 : 1.0;
    job.pro.l2 = l2[i];
    job.n = numel;
    for (int64_t b = 0; b < numel; b += kParallelElems) {
      chunks.push_back({i, b, std::min(numel, b + kParallelElems)});
    }
  }
  std::vector<double> dots(chunks.size(), 0.0), norms(chunks.size(), 0.0);
  auto one = [&](size_t c) {
    const Chunk& ch = chunks[c];
    const Job& job = jobs[ch.tensor];
    auto body = [&](auto zero) {
      using C = decltype(zero);
      constexpr int kLanes = 16;  // independent partial sums, so the loop vectorizes
      alignas(64) C pbuf[kBlock], gbuf[kBlock], graw[kBlock], x0buf[kBlock], sbuf[kBlock];
      const C b3 = C(beta3), w = C(weight);
      const bool plain = plain_grad<C>(job);
      for (int64_t b = ch.begin; b < ch.end; b += kBlock) {
        const int64_t len = std::min(kBlock, ch.end - b);
        const C* __restrict__ x = load<C>(job.param, b, len, pbuf);
        const C* __restrict__ g = load<C>(job.grad, b, len, graw);
        if (!plain) {
          prepare_grad<C>(job, x, g, gbuf, len);
          g = gbuf;
        }
        const C* __restrict__ x0 = load<C>(job.slot[0], b, len, x0buf);
        const C* __restrict__ sv = load<C>(job.slot[1], b, len, sbuf);
        C dot[kLanes] = {}, l1[kLanes] = {};
        int64_t j = 0;
        for (; j + kLanes <= len; j += kLanes) {
          for (int k = 0; k < kLanes; ++k) {
            dot[k] += g[j + k] * (x0[j + k] - x[j + k]);
            l1[k] += std::abs(fmadd(w, g[j + k], sv[j + k] * b3));  // the s the rule will store
          }
        }
        for (; j < len; ++j) {
          dot[0] += g[j] * (x0[j] - x[j]);
          l1[0] += std::abs(fmadd(w, g[j], sv[j] * b3));
        }
        for (int k = 0; k < kLanes; ++k) {
          dots[c] += static_cast<double>(dot[k]);
          norms[c] += static_cast<double>(l1[k]);
        }
      }
    };
    if (compute_is_double(params[ch.tensor].scalar_type())) {
      body(0.0);
    } else {
      body(0.0f);
    }
  };
  {
    pybind11::gil_scoped_release release;
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t a, int64_t b) {
      for (int64_t c = a; c < b; ++c) one(static_cast<size_t>(c));
    });
  }
  Tensor out = torch::zeros({static_cast<int64_t>(n), 2}, torch::kFloat64);
  double* o = out.data_ptr<double>();
  for (size_t c = 0; c < chunks.size(); ++c) {
    o[2 * chunks[c].tensor] += dots[c];
    o[2 * chunks[c].tensor + 1] += norms[c];
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.doc() = "optimist: the optimizer engine (one single-pass loop for every element-wise rule)";
  m.attr("MAX_SLOTS") = kMaxSlots;
  m.attr("QUANT_BLOCK") = kQuantBlock;
  m.def("step", &step, py::arg("rule"), py::arg("flags"), py::arg("fresh_flag"),
        py::arg("hyper"), py::arg("params"), py::arg("grads"), py::arg("slots"),
        py::arg("scales"), py::arg("fresh"), py::arg("grad_scale"), py::arg("clip_value"),
        py::arg("clip_first"), py::arg("maximize"), py::arg("l2"), py::arg("decay"),
        py::arg("l2_all"), py::arg("decay_all"), py::arg("ema"), py::arg("ema_scales"), py::arg("ema_decay"),
        py::arg("state_stochastic"), py::arg("param_stochastic"), py::arg("seed"));
  m.def("unsupported_indices", &unsupported_indices, py::arg("lists"));
  m.def("grad_stats", &grad_stats, py::arg("grads"), py::arg("clip_value") = 0.0);
  m.def("prodigy_stats", &prodigy_stats, py::arg("params"), py::arg("grads"), py::arg("p0s"),
        py::arg("ss"), py::arg("s_scales"), py::arg("beta3"), py::arg("weight"),
        py::arg("grad_scale"), py::arg("clip_value"), py::arg("clip_first"), py::arg("maximize"),
        py::arg("l2"));
  m.def("advance_steps", &advance_steps, py::arg("steps"));
  m.def("scale_scalars", &scale_scalars, py::arg("xs"), py::arg("factor"));
  m.def("quantize", &quantize, py::arg("x"));
  m.def("dequantize", &dequantize, py::arg("q"), py::arg("scale"));
}
