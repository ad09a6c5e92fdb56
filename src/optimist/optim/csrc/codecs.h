// optimist engine: storage codecs (a header of engine.cpp, one translation unit).
//
// A Store is one tensor (parameter, gradient or state slot) as the engine sees it: where its
// elements are and how they are encoded.  load() decodes a block of it into the compute
// precision (or hands out its own pointer when it already holds that precision) and store()
// encodes a block back.  The same codecs in torch ops: optimist/optim/codecs.py (bit-identical,
// including the random bits of stochastic rounding); NumPy: optimist.reference.
#pragma once

#include <torch/extension.h>

#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>

#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace optimist {

constexpr int64_t kQuantBlock = 256;  // int8 codec: values per absmax scale

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

// Counter-based random bits for stochastic rounding, reproducible for a given seed and element:
// mix(index * kGolden ^ seed) (codecs.random_bits in Python).  Loops step index * kGolden by
// adding kGolden, one multiply fewer per element.
constexpr uint32_t kGolden = 0x9E3779B1u;

inline uint32_t mix(uint32_t x) {
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

// The rounded bit pattern of t in [0, 1] at M mantissa bits, raised to that of the smallest
// nonzero code (tiny values keep code 1).  Its low byte is the code, as the bias
// kMinExponent << M is a multiple of 256 for M = 4, and 128 more than one for M = 3 (the caller
// keeps the low 7 bits).  The caller maps t == 0 to code 0.
template <int M>
inline uint32_t int8_pattern(float t) {
  constexpr int kDrop = 23 - M;
  constexpr uint32_t kLowest = (static_cast<uint32_t>(kMinExponent) << M) + 1u;
  const uint32_t pattern = (float_bits(t) + (1u << (kDrop - 1))) >> kDrop;
  return pattern < kLowest ? kLowest : pattern;
}

inline float int8_value(uint32_t code, int mant_bits) {
  const int drop = 23 - mant_bits;
  const float t = bits_float((code + (static_cast<uint32_t>(kMinExponent) << mant_bits)) << drop);
  return code == 0 ? 0.0f : t;
}

// Len: int64_t, or std::integral_constant<int64_t, kQuantBlock> for a full block (the common
// case, compiled without loop tails).
template <typename Len>
inline void int8_decode_n(const uint8_t* __restrict__ u, float scale, float* __restrict__ out,
                          Len n) {
  if (scale >= 0.0f) {  // unsigned block
    for (int64_t i = 0; i < n; ++i) out[i] = int8_value(u[i], 4) * scale;
  } else {  // the sign bit of the code moves to that of the float (-0.0 for code 0x80, as -0.0f)
    const float a = -scale;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t c = u[i];
      const float mag = int8_value(c & 0x7Fu, 3) * a;
      out[i] = bits_float(float_bits(mag) | ((c & 0x80u) << 24));
    }
  }
}

// Encodes one block and returns its scale.  A block with a NaN or inf is stored as zeros with a
// NaN scale (it poisons the state as it would float state), an all-zero block as zeros with
// scale 0.  The absmax is found on the bit patterns: for |x| they order as the floats do, NaN
// and inf above every finite value, so one integer max (which vectorizes, unlike a float max)
// gives both the absmax and finiteness; a value is negative (signed mode) if its pattern exceeds
// that of -0.0.  The codes are computed in 32-bit lanes and narrowed to bytes in a loop of their
// own: computed straight into bytes, the compiler juggled 16-lane comparison masks into 64-lane
// ones, which took as long as the rest.
template <typename Len>
inline float int8_encode_n(const float* __restrict__ x, uint8_t* __restrict__ u, Len n);

// A block whose absmax is subnormal (below 2^-126, where 1 / absmax overflows to inf): its
// values times 2^24 (exact: they have at most 23 significant bits) are encoded instead, and the
// scale is divided back (exact: it is the block's own absmax).  The codes are those of
// |x| / absmax as in every other block, the quantity being scaled, not rounded.
constexpr uint32_t kMinNormalBits = 0x00800000u;  // the bit pattern of 2^-126

template <typename Len>
inline float int8_encode_subnormal(const float* __restrict__ x, uint8_t* __restrict__ u, Len n) {
  alignas(64) float scaled[kQuantBlock];
  for (int64_t j = 0; j < n; ++j) scaled[j] = x[j] * 0x1p24f;
  return int8_encode_n(scaled, u, n) * 0x1p-24f;
}

template <typename Len>
inline float int8_encode_n(const float* __restrict__ x, uint8_t* __restrict__ u, Len n) {
  uint32_t abs_max = 0, raw_max = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t b = float_bits(x[i]);
    abs_max = std::max(abs_max, b & 0x7FFFFFFFu);
    raw_max = std::max(raw_max, b);
  }
  if (abs_max == 0 || abs_max >= 0x7F800000u) {  // all zero, or a NaN/inf
    for (int64_t j = 0; j < n; ++j) u[j] = 0;
    return abs_max == 0 ? 0.0f : std::numeric_limits<float>::quiet_NaN();
  }
  if (abs_max < kMinNormalBits) return int8_encode_subnormal(x, u, n);
  const float amax = bits_float(abs_max);
  const float inv = 1.0f / amax;
  alignas(64) uint32_t code[kQuantBlock];
  const bool is_unsigned = raw_max <= 0x80000000u;  // no negative value
  // |x| * inv > 1 happens only when 1 / amax is subnormal (amax >= 2^126; checked for every
  // float32 mantissa): only such blocks pay for the clamp.
  auto quantize = [&](auto clamp) {
    auto ratio = [&](float ax) { return decltype(clamp)::value ? std::min(ax * inv, 1.0f) : ax * inv; };
    if (is_unsigned) {
      for (int64_t j = 0; j < n; ++j) {
        const float t = ratio(x[j]);
        code[j] = t == 0.0f ? 0u : int8_pattern<4>(t);
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        const float t = ratio(std::abs(x[j]));
        const uint32_t magnitude = t == 0.0f ? 0u : (int8_pattern<3>(t) & 0x7Fu);
        code[j] = magnitude | (x[j] < 0.0f ? 0x80u : 0u);
      }
    }
  };
  if (abs_max >= 0x7E800000u) {
    quantize(std::true_type{});
  } else {
    quantize(std::false_type{});
  }
  for (int64_t j = 0; j < n; ++j) u[j] = static_cast<uint8_t>(code[j]);
  return is_unsigned ? amax : -amax;
}

using FullBlock = std::integral_constant<int64_t, kQuantBlock>;

#if defined(__AVX512F__) && defined(__AVX512BW__)
// The same codec on a full block in AVX-512, 16 values per instruction, bit-identical to the
// scalar loops above (tests/engine/test_codecs.py checks it against the torch codec and the
// NumPy reference).  No per-element branch or division: one 1 / amax per block, as above.
inline __m512i load_codes16(const uint8_t* u) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u)));
}

inline void int8_decode_avx512(const uint8_t* __restrict__ u, float scale,
                               float* __restrict__ out) {
  // A zero, NaN or infinite scale takes the scalar loop: there 0 * scale may be -0.0 or NaN,
  // here code 0 is a zeroed lane.
  const bool finite = std::abs(scale) <= std::numeric_limits<float>::max();
  if (finite && scale > 0.0f) {  // unsigned block
    const __m512i bias = _mm512_set1_epi32(kMinExponent << 4);
    const __m512 a = _mm512_set1_ps(scale);
    for (int64_t j = 0; j < kQuantBlock; j += 16) {
      const __m512i c = load_codes16(u + j);
      const __m512 t = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(c, bias), 19));
      _mm512_storeu_ps(out + j, _mm512_maskz_mul_ps(_mm512_test_epi32_mask(c, c), t, a));
    }
  } else if (finite && scale < 0.0f) {  // signed block
    const __m512i bias = _mm512_set1_epi32(kMinExponent << 3);
    const __m512i low7 = _mm512_set1_epi32(0x7F);
    const __m512i sign = _mm512_set1_epi32(static_cast<int32_t>(0x80000000u));
    const __m512 a = _mm512_set1_ps(-scale);
    for (int64_t j = 0; j < kQuantBlock; j += 16) {
      const __m512i c = load_codes16(u + j);
      const __m512i m = _mm512_and_si512(c, low7);
      const __m512 t = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(m, bias), 20));
      const __m512i mag =
          _mm512_castps_si512(_mm512_maskz_mul_ps(_mm512_test_epi32_mask(m, m), t, a));
      // mag | (c << 24 & sign): bit 7 of the code becomes the sign bit (0xF8: A | (B & C))
      const __m512i value = _mm512_ternarylogic_epi32(mag, _mm512_slli_epi32(c, 24), sign, 0xF8);
      _mm512_storeu_ps(out + j, _mm512_castsi512_ps(value));
    }
  } else {
    int8_decode_n(u, scale, out, FullBlock{});
  }
}

// The codes of 16 values (in the low byte of each 32-bit lane), given inv = 1 / amax.
template <bool kClamp, bool kSigned>
inline __m512i int8_codes16(__m512 x, __m512 inv) {
  constexpr int M = kSigned ? 3 : 4;
  constexpr int kDrop = 23 - M;
  const __m512 zero = _mm512_setzero_ps();
  __m512 t = _mm512_mul_ps(kSigned ? _mm512_abs_ps(x) : x, inv);
  if constexpr (kClamp) t = _mm512_min_ps(t, _mm512_set1_ps(1.0f));
  // t == 0.0f as in the scalar loop: -0.0 is zero, a NaN (0 * inf when amax < 2^-128) is not
  const __mmask16 nonzero = _mm512_cmp_ps_mask(t, zero, _CMP_NEQ_UQ);
  const __m512i rounded =
      _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(1 << (kDrop - 1)));
  const __m512i lowest = _mm512_set1_epi32((kMinExponent << M) + 1);
  __m512i code = _mm512_maskz_max_epu32(nonzero, _mm512_srli_epi32(rounded, kDrop), lowest);
  if constexpr (kSigned) {  // x < 0.0f: a pattern above that of -0.0
    const __mmask16 negative = _mm512_cmpgt_epu32_mask(
        _mm512_castps_si512(x), _mm512_set1_epi32(static_cast<int32_t>(0x80000000u)));
    code = _mm512_mask_or_epi32(_mm512_and_si512(code, _mm512_set1_epi32(0x7F)), negative, code,
                                _mm512_set1_epi32(0x80));
  }
  return code;
}

template <bool kClamp, bool kSigned>
inline void int8_codes_avx512(const float* __restrict__ x, uint8_t* __restrict__ u, float inv) {
  const __m512 vinv = _mm512_set1_ps(inv);
  for (int64_t j = 0; j < kQuantBlock; j += 16) {
    const __m512i code = int8_codes16<kClamp, kSigned>(_mm512_loadu_ps(x + j), vinv);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(u + j), _mm512_cvtepi32_epi8(code));
  }
}

// A block's bit-pattern maxima: of |x| (the absmax, or a NaN/inf) and of x (the mode).
struct Int8Scan {
  uint32_t abs_max, raw_max;
};

inline Int8Scan int8_scan_avx512(const float* __restrict__ x) {
  // The largest pattern as signed integers is that of the largest non-negative value (or 0),
  // as unsigned ones that of the negative value of largest magnitude (if any): two max per
  // vector give the absmax, finiteness and the mode.
  __m512i smax0 = _mm512_setzero_si512(), smax1 = smax0, umax0 = smax0, umax1 = smax0;
  for (int64_t j = 0; j < kQuantBlock; j += 32) {
    const __m512i b0 = _mm512_loadu_si512(x + j), b1 = _mm512_loadu_si512(x + j + 16);
    smax0 = _mm512_max_epi32(smax0, b0);
    smax1 = _mm512_max_epi32(smax1, b1);
    umax0 = _mm512_max_epu32(umax0, b0);
    umax1 = _mm512_max_epu32(umax1, b1);
  }
  const uint32_t raw_max = _mm512_reduce_max_epu32(_mm512_max_epu32(umax0, umax1));
  const auto pos_max =
      static_cast<uint32_t>(_mm512_reduce_max_epi32(_mm512_max_epi32(smax0, smax1)));
  return {std::max(pos_max, raw_max & 0x7FFFFFFFu), raw_max};
}

// The codes of a scanned block; returns its scale.
inline float int8_codes_avx512(const float* __restrict__ x, uint8_t* __restrict__ u,
                               Int8Scan scan) {
  if (scan.abs_max == 0 || scan.abs_max >= 0x7F800000u) {  // all zero, or a NaN/inf
    std::memset(u, 0, kQuantBlock);
    return scan.abs_max == 0 ? 0.0f : std::numeric_limits<float>::quiet_NaN();
  }
  if (scan.abs_max < kMinNormalBits) return int8_encode_subnormal(x, u, FullBlock{});
  const float amax = bits_float(scan.abs_max);
  const float inv = 1.0f / amax;
  const bool is_unsigned = scan.raw_max <= 0x80000000u;
  if (scan.abs_max >= 0x7E800000u) {  // the clamp, as above
    is_unsigned ? int8_codes_avx512<true, false>(x, u, inv)
                : int8_codes_avx512<true, true>(x, u, inv);
  } else {
    is_unsigned ? int8_codes_avx512<false, false>(x, u, inv)
                : int8_codes_avx512<false, true>(x, u, inv);
  }
  return is_unsigned ? amax : -amax;
}

inline float int8_encode_avx512(const float* __restrict__ x, uint8_t* __restrict__ u) {
  return int8_codes_avx512(x, u, int8_scan_avx512(x));
}
#endif

// One block of n <= kQuantBlock values.
inline void int8_decode(const int8_t* q, float scale, float* __restrict__ out, int64_t n) {
  const uint8_t* u = reinterpret_cast<const uint8_t*>(q);
  if (n == kQuantBlock) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    int8_decode_avx512(u, scale, out);
#else
    int8_decode_n(u, scale, out, FullBlock{});
#endif
  } else {
    int8_decode_n(u, scale, out, n);
  }
}

inline float int8_encode(const float* x, int8_t* q, int64_t n) {
  uint8_t* u = reinterpret_cast<uint8_t*>(q);
  if (n != kQuantBlock) return int8_encode_n(x, u, n);
#if defined(__AVX512F__) && defined(__AVX512BW__)
  return int8_encode_avx512(x, u);
#else
  return int8_encode_n(x, u, FullBlock{});
#endif
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
      uint32_t h = static_cast<uint32_t>(begin) * kGolden;
      for (int64_t i = 0; i < n; ++i) {
        dst[i] = float_to_bf16_sr(static_cast<float>(buf[i]), mix(h ^ seed));
        h += kGolden;
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

// store() of several slots ([begin, begin + n) of each slot `which[j]`, from bufs and with seeds
// of the same index), except that the int8 slots' full float blocks are all scanned first, then
// all quantized: a block's scale is a chain of latencies (two reductions, a division) that the
// other slots' scans now overlap (int8 Adam, two slots: 8.8 -> 7.4 cycles per 16 values).
#if defined(__AVX512F__) && defined(__AVX512BW__)
template <int N>
void store_int8_slots(const Store (&slots)[N], const int* which, int count, int64_t begin,
                      float* const (&bufs)[N], const uint32_t (&seeds)[N]) {
  Int8Scan scans[N];
  for (int j = 0; j < count; ++j) {
    if (slots[which[j]].kind == kInt8) scans[j] = int8_scan_avx512(bufs[which[j]]);
  }
  for (int j = 0; j < count; ++j) {
    const int k = which[j];
    if (slots[k].kind == kInt8) {
      uint8_t* dst = static_cast<uint8_t*>(slots[k].data) + begin;
      slots[k].scale[begin / kQuantBlock] = int8_codes_avx512(bufs[k], dst, scans[j]);
    } else {
      store<float>(slots[k], begin, kQuantBlock, bufs[k], seeds[k]);
    }
  }
}
#endif

template <typename C, int N>
void store_slots(const Store (&slots)[N], const int* which, int count, int64_t begin, int64_t n,
                 C* const (&bufs)[N], const uint32_t (&seeds)[N]) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
  if constexpr (std::is_same_v<C, float>) {
    int n_int8 = 0;
    for (int j = 0; j < count; ++j) n_int8 += slots[which[j]].kind == kInt8;
    if (n == kQuantBlock && n_int8 > 1) {
      store_int8_slots(slots, which, count, begin, bufs, seeds);
      return;
    }
  }
#endif
  for (int j = 0; j < count; ++j) {
    store<C>(slots[which[j]], begin, n, bufs[which[j]], seeds[which[j]]);
  }
}

// ---------------------------------------------------------------------------------------------
// Python-facing functions.

using at::Tensor;

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

}  // namespace optimist
