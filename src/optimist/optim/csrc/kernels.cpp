// optimist: single-pass fused CPU kernels for the torch.optim-compatible optimizers.
//
// Each kernel reproduces, element by element, what torch's `_single_tensor_<name>`
// (torch/optim/<name>.py, non-capturable, non-differentiable) does with a chain of
// in-place tensor ops, but reads param, grad and state once and writes param and state
// once.  The operation order and the scalar types of torch's ops are mirrored:
//
//   * float32 / float64 tensors compute in their own precision, with every
//     hyper-parameter that depends only on the step (bias corrections, ...) computed
//     once per tensor in double, exactly as torch's Python code does, then cast to the
//     tensor's precision the way torch casts a Python scalar;
//   * bfloat16 / float16 tensors are computed in float32 and rounded once when stored
//     (torch computes each intermediate op in the low precision and rounds after every
//     op, so these kernels are more accurate than torch there, not bit-identical).
//
// Rounding follows torch's CPU kernels: where torch fuses a multiply-add (add/sub with
// `alpha`, addcmul, lerp) these kernels call fmadd(), elsewhere (mul_ then add, addcdiv)
// they round each op separately (the build uses -ffp-contract=off so the compiler does
// not fuse on its own).  Results then agree with torch's to an ulp or so per step; they
// are not always bit-identical because torch's float sqrt (MKL VML) is not correctly
// rounded, while this code's is.
//
// Performance: the inner loops are plain loops over `__restrict__` pointers that the
// compiler vectorizes at -O3 -march=native -fno-math-errno; tensors are split over
// threads with at::parallel_for in blocks aligned to 1024 elements; small tensors are
// not split but processed several at a time, one per thread; and the loop over tensors
// runs in C++, so one optimizer step costs one Python -> C++ call.
//
// Aliasing: param, grad and the state tensors of one parameter must not overlap in
// memory (they never do in torch.optim), since the pointers are declared __restrict__.
// Params that overlap each other are reported by unsupported_indices (see params_overlap),
// so that the optimizers update them one by one, in order, like torch.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

using at::Tensor;

// ---------------------------------------------------------------------------------------
// Element load / store for the compute loops.  bfloat16 is converted inline with integer
// arithmetic that the compiler vectorizes (round to nearest even, NaN -> canonical quiet
// NaN, as c10::BFloat16 does); float16 is converted in small blocks around the float
// kernel with the CPU's conversion instructions (see run_range), which is faster than
// per-element conversion the compiler cannot vectorize.

inline float ld(float x) { return x; }
inline double ld(double x) { return x; }
inline float ld(c10::BFloat16 x) {
  const uint32_t bits = static_cast<uint32_t>(x.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline void st(float& dst, float v) { dst = v; }
inline void st(double& dst, double v) { dst = v; }
inline void st(c10::BFloat16& dst, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  dst.x = (v != v) ? static_cast<uint16_t>(0x7FC0) : static_cast<uint16_t>(rounded);
}

// float16 <-> float with the CPU's conversion instructions where present (round to nearest
// even), else c10::Half's portable conversion.
inline void to_float(const c10::Half* __restrict__ src, float* __restrict__ dst, int64_t n) {
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

inline void from_float(const float* __restrict__ src, c10::Half* __restrict__ dst, int64_t n) {
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

// a * b + c with one rounding where the CPU has FMA (as torch's vectorized kernels do).
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

// ---------------------------------------------------------------------------------------
// Hyper-parameters, in double, as torch's Python code computes them once per tensor.

struct SgdH {
  double sgn, wd, momentum, one_minus_damp, neg_lr;
};
struct AdagradH {
  double sgn, wd, eps, neg_clr;
};
struct RmspropH {
  double sgn, wd, alpha, one_minus_alpha, eps, momentum, neg_lr;
};
struct AdadeltaH {
  double sgn, wd, rho, one_minus_rho, eps, neg_lr;
};
struct AdamH {
  double sgn, wd, decay, w1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size;
};
struct AdamaxH {
  double sgn, wd, w1, beta2, eps, neg_clr;
};
struct NadamH {
  double sgn, wd, decay, w1, beta2, one_minus_beta2, bc2, eps, c_grad, c_avg;
};
struct RadamH {
  double sgn, wd, decay, w1, beta2, one_minus_beta2, bc1, lr, bc2_sqrt, rect, eps;
};

// Weight-decay modes.
constexpr int kNoWd = 0;
constexpr int kL2 = 1;          // grad += wd * param
constexpr int kDecoupled = 2;   // param *= 1 - lr * wd

// ---------------------------------------------------------------------------------------
// Kernels.  C: compute type (float or double).  operator() runs over n elements of
// storage type T (float, double or c10::BFloat16; float16 goes through float buffers).
// p: param, g: grad, s0..s2: state tensors (unused ones are null and never touched).

template <typename C, bool WD, bool MOM, bool NEW_BUF, bool NESTEROV>
struct SgdK {
  C sgn, wd, momentum, one_minus_damp, neg_lr;
  explicit SgdK(const SgdH& h)
      : sgn(C(h.sgn)), wd(C(h.wd)), momentum(C(h.momentum)),
        one_minus_damp(C(h.one_minus_damp)), neg_lr(C(h.neg_lr)) {}

  template <typename T>
  void operator()(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf,
                  T* __restrict__, T* __restrict__) const {
    const C sgn = this->sgn, wd = this->wd, mom = this->momentum;
    const C omd = this->one_minus_damp, neg_lr = this->neg_lr;
    for (int64_t i = 0; i < n; ++i) {
      const C pi = ld(p[i]);
      C gi = ld(g[i]) * sgn;
      if constexpr (WD) gi = fmadd(wd, pi, gi);
      if constexpr (MOM) {
        C b;
        if constexpr (NEW_BUF) {
          b = gi;
        } else {
          b = fmadd(omd, gi, ld(buf[i]) * mom);
        }
        st(buf[i], b);
        if constexpr (NESTEROV) {
          gi = fmadd(mom, b, gi);
        } else {
          gi = b;
        }
      }
      st(p[i], fmadd(neg_lr, gi, pi));
    }
  }
};

template <typename C, bool WD>
struct AdagradK {
  C sgn, wd, eps, neg_clr;
  explicit AdagradK(const AdagradH& h)
      : sgn(C(h.sgn)), wd(C(h.wd)), eps(C(h.eps)), neg_clr(C(h.neg_clr)) {}

  template <typename T>
  void operator()(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ sum,
                  T* __restrict__, T* __restrict__) const {
    const C sgn = this->sgn, wd = this->wd, eps = this->eps, neg_clr = this->neg_clr;
    for (int64_t i = 0; i < n; ++i) {
      const C pi = ld(p[i]);
      C gi = ld(g[i]) * sgn;
      if constexpr (WD) gi = fmadd(wd, pi, gi);
      const C s = fmadd(gi, gi, ld(sum[i]));
      st(sum[i], s);
      const C std_ = std::sqrt(s) + eps;
      st(p[i], pi + neg_clr * gi / std_);
    }
  }
};

template <typename C, bool WD, bool CENTERED, bool MOM>
struct RmspropK {
  C sgn, wd, alpha, one_minus_alpha, eps, momentum, neg_lr, lerp_w1;
  bool lerp_small;
  explicit RmspropK(const RmspropH& h)
      : sgn(C(h.sgn)), wd(C(h.wd)), alpha(C(h.alpha)), one_minus_alpha(C(h.one_minus_alpha)),
        eps(C(h.eps)), momentum(C(h.momentum)), neg_lr(C(h.neg_lr)),
        lerp_w1(C(1) - C(h.one_minus_alpha)),
        lerp_small(std::abs(C(h.one_minus_alpha)) < C(0.5)) {}

  template <typename T>
  void operator()(int64_t n, T* __restrict__ p, const T* __restrict__ g,
                  T* __restrict__ square_avg, T* __restrict__ grad_avg,
                  T* __restrict__ buf) const {
    const C sgn = this->sgn, wd = this->wd, alpha = this->alpha, oma = this->one_minus_alpha;
    const C eps = this->eps, mom = this->momentum, neg_lr = this->neg_lr, w1 = this->lerp_w1;
    const bool small = this->lerp_small;
    for (int64_t i = 0; i < n; ++i) {
      const C pi = ld(p[i]);
      C gi = ld(g[i]) * sgn;
      if constexpr (WD) gi = fmadd(wd, pi, gi);
      const C sq = fmadd(oma * gi, gi, ld(square_avg[i]) * alpha);
      st(square_avg[i], sq);
      C avg;
      if constexpr (CENTERED) {
        const C ga = lerp(ld(grad_avg[i]), gi, oma, w1, small);
        st(grad_avg[i], ga);
        avg = std::sqrt(fmadd(-ga, ga, sq));
      } else {
        avg = std::sqrt(sq);
      }
      avg = avg + eps;
      if constexpr (MOM) {
        const C b = ld(buf[i]) * mom + gi / avg;
        st(buf[i], b);
        st(p[i], fmadd(neg_lr, b, pi));
      } else {
        st(p[i], pi + neg_lr * gi / avg);
      }
    }
  }
};

template <typename C, bool WD>
struct AdadeltaK {
  C sgn, wd, rho, one_minus_rho, eps, neg_lr;
  explicit AdadeltaK(const AdadeltaH& h)
      : sgn(C(h.sgn)), wd(C(h.wd)), rho(C(h.rho)), one_minus_rho(C(h.one_minus_rho)),
        eps(C(h.eps)), neg_lr(C(h.neg_lr)) {}

  template <typename T>
  void operator()(int64_t n, T* __restrict__ p, const T* __restrict__ g,
                  T* __restrict__ square_avg, T* __restrict__ acc_delta, T* __restrict__) const {
    const C sgn = this->sgn, wd = this->wd, rho = this->rho, omr = this->one_minus_rho;
    const C eps = this->eps, neg_lr = this->neg_lr;
    for (int64_t i = 0; i < n; ++i) {
      const C pi = ld(p[i]);
      C gi = ld(g[i]) * sgn;
      if constexpr (WD) gi = fmadd(wd, pi, gi);
      const C sq = fmadd(omr * gi, gi, ld(square_avg[i]) * rho);
      st(square_avg[i], sq);
      const C std_ = std::sqrt(sq + eps);
      const C acc = ld(acc_delta[i]);
      const C delta = std::sqrt(acc + eps) / std_ * gi;
      st(acc_delta[i], fmadd(omr * delta, delta, acc * rho));
      st(p[i], fmadd(neg_lr, delta, pi));
    }
  }
};

template <typename C, int WDM, bool AMSGRAD>
struct AdamK {
  C sgn, wd, decay, w1, lerp_w1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size;
  bool lerp_small;
  explicit AdamK(const AdamH& h)
      : sgn(C(h.sgn)), wd(C(h.wd)), decay(C(h.decay)), w1(C(h.w1)), lerp_w1(C(1) - C(h.w1)),
        beta2(C(h.beta2)), one_minus_beta2(C(h.one_minus_beta2)), bc2_sqrt(C(h.bc2_sqrt)),
        eps(C(h.eps)), neg_step_size(C(h.neg_step_size)), lerp_small(std::abs(C(h.w1)) < C(0.5)) {}

  template <typename T>
  void operator()(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                  T* __restrict__ v, T* __restrict__ vmax) const {
    const C sgn = this->sgn, wd = this->wd, decay = this->decay, w1 = this->w1;
    const C lw1 = this->lerp_w1, beta2 = this->beta2, omb2 = this->one_minus_beta2;
    const C bc2s = this->bc2_sqrt, eps = this->eps, nss = this->neg_step_size;
    const bool small = this->lerp_small;
    for (int64_t i = 0; i < n; ++i) {
      C pi = ld(p[i]);
      if constexpr (WDM == kDecoupled) pi = pi * decay;
      C gi = ld(g[i]) * sgn;
      if constexpr (WDM == kL2) gi = fmadd(wd, pi, gi);
      const C mi = lerp(ld(m[i]), gi, w1, lw1, small);
      st(m[i], mi);
      C vi = fmadd(omb2 * gi, gi, ld(v[i]) * beta2);
      st(v[i], vi);
      if constexpr (AMSGRAD) {
        vi = maximum(ld(vmax[i]), vi);
        st(vmax[i], vi);
      }
      const C denom = std::sqrt(vi) / bc2s + eps;
      st(p[i], pi + nss * mi / denom);
    }
  }
};

template <typename C, bool WD>
struct AdamaxK {
  C sgn, wd, w1, lerp_w1, beta2, eps, neg_clr;
  bool lerp_small;
  explicit AdamaxK(const AdamaxH& h)
      : sgn(C(h.sgn)), wd(C(h.wd)), w1(C(h.w1)), lerp_w1(C(1) - C(h.w1)), beta2(C(h.beta2)),
        eps(C(h.eps)), neg_clr(C(h.neg_clr)), lerp_small(std::abs(C(h.w1)) < C(0.5)) {}

  template <typename T>
  void operator()(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                  T* __restrict__ u, T* __restrict__) const {
    const C sgn = this->sgn, wd = this->wd, w1 = this->w1, lw1 = this->lerp_w1;
    const C beta2 = this->beta2, eps = this->eps, neg_clr = this->neg_clr;
    const bool small = this->lerp_small;
    for (int64_t i = 0; i < n; ++i) {
      const C pi = ld(p[i]);
      C gi = ld(g[i]) * sgn;
      if constexpr (WD) gi = fmadd(wd, pi, gi);
      const C mi = lerp(ld(m[i]), gi, w1, lw1, small);
      st(m[i], mi);
      const C ui = maximum(ld(u[i]) * beta2, std::abs(gi) + eps);
      st(u[i], ui);
      st(p[i], pi + neg_clr * mi / ui);
    }
  }
};

template <typename C, int WDM>
struct NadamK {
  C sgn, wd, decay, w1, lerp_w1, beta2, one_minus_beta2, bc2, eps, c_grad, c_avg;
  bool lerp_small;
  explicit NadamK(const NadamH& h)
      : sgn(C(h.sgn)), wd(C(h.wd)), decay(C(h.decay)), w1(C(h.w1)), lerp_w1(C(1) - C(h.w1)),
        beta2(C(h.beta2)), one_minus_beta2(C(h.one_minus_beta2)), bc2(C(h.bc2)),
        eps(C(h.eps)), c_grad(C(h.c_grad)), c_avg(C(h.c_avg)),
        lerp_small(std::abs(C(h.w1)) < C(0.5)) {}

  template <typename T>
  void operator()(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                  T* __restrict__ v, T* __restrict__) const {
    const C sgn = this->sgn, wd = this->wd, decay = this->decay, w1 = this->w1;
    const C lw1 = this->lerp_w1, beta2 = this->beta2, omb2 = this->one_minus_beta2;
    const C bc2 = this->bc2, eps = this->eps, cg = this->c_grad, ca = this->c_avg;
    const bool small = this->lerp_small;
    for (int64_t i = 0; i < n; ++i) {
      C pi = ld(p[i]);
      if constexpr (WDM == kDecoupled) pi = pi * decay;
      C gi = ld(g[i]) * sgn;
      if constexpr (WDM == kL2) gi = fmadd(wd, pi, gi);
      const C mi = lerp(ld(m[i]), gi, w1, lw1, small);
      st(m[i], mi);
      const C vi = fmadd(omb2 * gi, gi, ld(v[i]) * beta2);
      st(v[i], vi);
      const C denom = std::sqrt(vi / bc2) + eps;
      pi = pi + cg * gi / denom;  // torch: two separate addcdiv_ calls
      pi = pi + ca * mi / denom;
      st(p[i], pi);
    }
  }
};

template <typename C, int WDM, bool RECT>
struct RadamK {
  C sgn, wd, decay, w1, lerp_w1, beta2, one_minus_beta2, bc1, lr, bc2_sqrt, rect, eps;
  bool lerp_small;
  explicit RadamK(const RadamH& h)
      : sgn(C(h.sgn)), wd(C(h.wd)), decay(C(h.decay)), w1(C(h.w1)), lerp_w1(C(1) - C(h.w1)),
        beta2(C(h.beta2)), one_minus_beta2(C(h.one_minus_beta2)), bc1(C(h.bc1)), lr(C(h.lr)),
        bc2_sqrt(C(h.bc2_sqrt)), rect(C(h.rect)), eps(C(h.eps)),
        lerp_small(std::abs(C(h.w1)) < C(0.5)) {}

  template <typename T>
  void operator()(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                  T* __restrict__ v, T* __restrict__) const {
    const C sgn = this->sgn, wd = this->wd, decay = this->decay, w1 = this->w1;
    const C lw1 = this->lerp_w1, beta2 = this->beta2, omb2 = this->one_minus_beta2;
    const C bc1 = this->bc1, lr = this->lr, bc2s = this->bc2_sqrt, rect = this->rect;
    const C eps = this->eps;
    const bool small = this->lerp_small;
    for (int64_t i = 0; i < n; ++i) {
      C pi = ld(p[i]);
      if constexpr (WDM == kDecoupled) pi = pi * decay;
      C gi = ld(g[i]) * sgn;
      if constexpr (WDM == kL2) gi = fmadd(wd, pi, gi);
      const C mi = lerp(ld(m[i]), gi, w1, lw1, small);
      st(m[i], mi);
      const C vi = fmadd(omb2 * gi, gi, ld(v[i]) * beta2);
      st(v[i], vi);
      const C corrected = mi / bc1;
      if constexpr (RECT) {
        // torch: exp_avg / bc1 * lr * (bc2**0.5 / (sqrt(v) + eps)) * rect, where
        // `scalar / tensor` is evaluated as tensor.reciprocal() * scalar.
        const C adaptive = (C(1) / (std::sqrt(vi) + eps)) * bc2s;
        st(p[i], pi - corrected * lr * adaptive * rect);
      } else {
        st(p[i], pi - corrected * lr);
      }
    }
  }
};

// ---------------------------------------------------------------------------------------
// Running a kernel over a range of one tensor.

template <typename T>
inline T* offset(void* ptr, int64_t i) {
  return ptr == nullptr ? nullptr : static_cast<T*>(ptr) + i;
}

template <typename K, typename T>
inline void run_range(const K& k, void* p, const void* g, void* const* s, int64_t begin,
                      int64_t end) {
  if constexpr (!std::is_same_v<T, c10::Half>) {
    k(end - begin, static_cast<T*>(p) + begin, static_cast<const T*>(g) + begin,
      offset<T>(s[0], begin), offset<T>(s[1], begin), offset<T>(s[2], begin));
  } else {
    // float16: convert a block to float buffers (in L1), run the float kernel, convert
    // back; memory is still read and written once.
    constexpr int64_t B = 512;
    alignas(64) float fp[B], fg[B], f0[B], f1[B], f2[B];
    float* fs[3] = {f0, f1, f2};
    T* tp = static_cast<T*>(p);
    const T* tg = static_cast<const T*>(g);
    for (int64_t b = begin; b < end; b += B) {
      const int64_t len = std::min(B, end - b);
      to_float(tp + b, fp, len);
      to_float(tg + b, fg, len);
      for (int j = 0; j < 3; ++j) {
        if (s[j] != nullptr) to_float(static_cast<const T*>(s[j]) + b, fs[j], len);
      }
      k(len, fp, fg, s[0] ? f0 : nullptr, s[1] ? f1 : nullptr, s[2] ? f2 : nullptr);
      from_float(fp, tp + b, len);
      for (int j = 0; j < 3; ++j) {
        if (s[j] != nullptr) from_float(fs[j], static_cast<T*>(s[j]) + b, len);
      }
    }
  }
}

// One tensor's work: a type-erased kernel call over [begin, end) of its elements.
struct Job {
  void (*fn)(const Job&, int64_t, int64_t);
  void* p;
  const void* g;
  void* s[3];
  int64_t n;
  alignas(8) unsigned char hyper[128];
};

template <typename K, typename T, typename H>
void job_fn(const Job& job, int64_t begin, int64_t end) {
  H h;
  std::memcpy(&h, job.hyper, sizeof(H));
  const K k(h);
  run_range<K, T>(k, job.p, job.g, job.s, begin, end);
}

template <typename K, typename T, typename H>
Job make_job(const H& h, const Tensor& p, const Tensor& g, const Tensor* s0, const Tensor* s1,
             const Tensor* s2) {
  static_assert(sizeof(H) <= sizeof(Job::hyper), "hyper-parameters too large");
  static_assert(std::is_trivially_copyable_v<H>);
  Job job;
  job.fn = &job_fn<K, T, H>;
  job.p = p.data_ptr();
  job.g = g.data_ptr();
  job.s[0] = s0 ? s0->data_ptr() : nullptr;
  job.s[1] = s1 ? s1->data_ptr() : nullptr;
  job.s[2] = s2 ? s2->data_ptr() : nullptr;
  job.n = p.is_complex() ? 2 * p.numel() : p.numel();
  std::memcpy(job.hyper, &h, sizeof(H));
  return job;
}

// Tensors with more elements than this are split over threads (in blocks of kBlock);
// smaller ones are processed whole, several tensors in parallel.
constexpr int64_t kBlock = 1024;
constexpr int64_t kParallelElems = 32 * 1024;

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

// ---------------------------------------------------------------------------------------
// Dispatch helpers: runtime dtype / flags -> template arguments.

template <typename T, typename C>
struct Types {
  using storage = T;
  using compute = C;
};

template <typename F>
void dispatch_dtype(at::ScalarType st, F&& f) {
  switch (st) {
    case at::kFloat:
      f(Types<float, float>{});
      break;
    case at::kDouble:
      f(Types<double, double>{});
      break;
    case at::kBFloat16:
      f(Types<c10::BFloat16, float>{});
      break;
    case at::kHalf:
      f(Types<c10::Half, float>{});
      break;
    // Complex tensors: every rule is elementwise over real and imaginary parts (torch
    // applies it to torch.view_as_real views), so they run as real tensors of 2n elements.
    case at::kComplexFloat:
      f(Types<float, float>{});
      break;
    case at::kComplexDouble:
      f(Types<double, double>{});
      break;
    default:
      TORCH_CHECK(false, "optimist fused kernels: unsupported dtype ", st);
  }
}

template <typename F>
void dispatch_bool(bool b, F&& f) {
  if (b) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

template <typename F>
void dispatch_wd(int mode, F&& f) {
  switch (mode) {
    case kL2:
      f(std::integral_constant<int, kL2>{});
      break;
    case kDecoupled:
      f(std::integral_constant<int, kDecoupled>{});
      break;
    default:
      f(std::integral_constant<int, kNoWd>{});
  }
}

// ---------------------------------------------------------------------------------------
// Argument checks (all done before anything is modified).

void check_list(const char* opt, const char* what, const std::vector<Tensor>& list, size_t n) {
  TORCH_CHECK(list.size() == n, "optimist.", opt, ": expected ", n, " tensors in ", what,
              ", got ", list.size());
}

void check_tensor(const char* opt, const char* what, size_t i, const Tensor& t,
                  const Tensor& param) {
  TORCH_CHECK(t.defined(), "optimist.", opt, ": ", what, "[", i, "] is undefined");
  TORCH_CHECK(t.device().is_cpu(), "optimist.", opt, ": ", what, "[", i, "] is not on the CPU");
  TORCH_CHECK(t.layout() == at::kStrided && t.is_contiguous(), "optimist.", opt, ": ", what,
              "[", i, "] must be a dense contiguous tensor");
  TORCH_CHECK(t.scalar_type() == param.scalar_type(), "optimist.", opt, ": ", what, "[", i,
              "] has dtype ", t.scalar_type(), " but the parameter has ", param.scalar_type());
  TORCH_CHECK(t.sizes() == param.sizes(), "optimist.", opt, ": ", what, "[", i,
              "] has shape ", t.sizes(), " but the parameter has shape ", param.sizes());
  TORCH_CHECK(!t.is_inference(), "optimist.", opt, ": ", what, "[", i,
              "] is an inference tensor, which torch does not update in place");
  TORCH_CHECK(!t.is_conj() && !t.is_neg(), "optimist.", opt, ": ", what, "[", i,
              "] has a lazy conjugate/negative bit set (call .resolve_conj()/.resolve_neg())");
}

void check_step(const char* opt, size_t i, const Tensor& step) {
  TORCH_CHECK(step.defined() && step.device().is_cpu() && step.numel() == 1 &&
                  (step.scalar_type() == at::kFloat || step.scalar_type() == at::kDouble),
              "optimist.", opt, ": steps[", i,
              "] must be a one-element float32 or float64 CPU tensor");
}

bool supported_dtype(at::ScalarType st) {
  return st == at::kFloat || st == at::kDouble || st == at::kBFloat16 || st == at::kHalf ||
         st == at::kComplexFloat || st == at::kComplexDouble;
}

void check_param(const char* opt, size_t i, const Tensor& param) {
  TORCH_CHECK(param.defined(), "optimist.", opt, ": params[", i, "] is undefined");
  check_tensor(opt, "params", i, param, param);
  TORCH_CHECK(supported_dtype(param.scalar_type()), "optimist.", opt, ": params[", i,
              "] has unsupported dtype ", param.scalar_type());
}

// Whether tensor t (at one index of a state or grad list) can go to the kernels together
// with its parameter.
bool usable(const Tensor& t, const Tensor& param) {
  return t.defined() && t.device().is_cpu() && t.layout() == at::kStrided &&
         t.is_contiguous() && t.scalar_type() == param.scalar_type() &&
         t.sizes() == param.sizes() && !t.is_conj() && !t.is_neg() && !t.is_inference();
}

// ---------------------------------------------------------------------------------------
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

// Indices i at which some tensor of the (non-empty) lists cannot go to the kernels; lists[0]
// holds the params.  Lets a caller check a whole param group in one C++ call.
std::vector<int64_t> unsupported_indices(const std::vector<std::vector<Tensor>>& lists) {
  std::vector<int64_t> out;
  if (lists.empty()) return out;
  const auto& params = lists[0];
  const size_t n = params.size();
  for (size_t k = 1; k < lists.size(); ++k) {
    TORCH_CHECK(lists[k].empty() || lists[k].size() == n, "optimist.unsupported_indices: list ",
                k, " has ", lists[k].size(), " tensors, expected ", n, " (or none)");
  }
  if (n > 1 && params_overlap(params)) {
    for (size_t i = 0; i < n; ++i) out.push_back(static_cast<int64_t>(i));
    return out;
  }
  for (size_t i = 0; i < n; ++i) {
    const Tensor& p = params[i];
    bool ok = p.defined() && supported_dtype(p.scalar_type()) && usable(p, p);
    for (size_t k = 1; ok && k < lists.size(); ++k) {
      if (!lists[k].empty()) ok = usable(lists[k][i], p);
    }
    if (!ok) out.push_back(static_cast<int64_t>(i));
  }
  return out;
}

// step_t += 1 in the step tensor's own precision; returns the new value as a Python float.
double increment_step(const Tensor& step) {
  if (step.scalar_type() == at::kFloat) {
    float* s = step.data_ptr<float>();
    *s = *s + 1.0f;
    return static_cast<double>(*s);
  }
  double* s = step.data_ptr<double>();
  *s = *s + 1.0;
  return *s;
}

// Record the in-place update for autograd, as torch's in-place ops do.
void bump(const Tensor& t) {
  if (t.defined() && !t.is_inference()) torch::autograd::impl::bump_version(t);
}

double sign(bool maximize) { return maximize ? -1.0 : 1.0; }

// ---------------------------------------------------------------------------------------
// Entry points.

void sgd(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
         const std::vector<Tensor>& momentum_buffers, const std::vector<bool>& is_new_buffer,
         double lr, double weight_decay, double momentum, double dampening, bool nesterov,
         bool maximize) {
  const char* opt = "sgd";
  const size_t n = params.size();
  const bool use_mom = momentum != 0.0;
  check_list(opt, "grads", grads, n);
  if (use_mom) {
    check_list(opt, "momentum_buffers", momentum_buffers, n);
    TORCH_CHECK(is_new_buffer.size() == n, "optimist.sgd: expected ", n,
                " entries in is_new_buffer, got ", is_new_buffer.size());
  }
  for (size_t i = 0; i < n; ++i) {
    check_param(opt, i, params[i]);
    check_tensor(opt, "grads", i, grads[i], params[i]);
    if (use_mom) check_tensor(opt, "momentum_buffers", i, momentum_buffers[i], params[i]);
  }
  const SgdH h{sign(maximize), weight_decay, momentum, 1.0 - dampening, -lr};
  std::vector<Job> jobs;
  jobs.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const Tensor* buf = use_mom ? &momentum_buffers[i] : nullptr;
    const bool is_new = use_mom && is_new_buffer[i];
    dispatch_dtype(params[i].scalar_type(), [&](auto types) {
      using Ty = decltype(types);
      using T = typename Ty::storage;
      using C = typename Ty::compute;
      dispatch_bool(weight_decay != 0.0, [&](auto wd) {
        if (!use_mom) {
          jobs.push_back(make_job<SgdK<C, decltype(wd)::value, false, false, false>, T>(
              h, params[i], grads[i], nullptr, nullptr, nullptr));
          return;
        }
        dispatch_bool(is_new, [&](auto nb) {
          dispatch_bool(nesterov, [&](auto nest) {
            jobs.push_back(make_job<SgdK<C, decltype(wd)::value, true, decltype(nb)::value, decltype(nest)::value>, T>(
                h, params[i], grads[i], buf, nullptr, nullptr));
          });
        });
      });
    });
  }
  execute(jobs);
  for (size_t i = 0; i < n; ++i) {
    bump(params[i]);
    if (use_mom) bump(momentum_buffers[i]);
  }
}

void adagrad(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
             const std::vector<Tensor>& state_sums, const std::vector<Tensor>& steps, double lr,
             double weight_decay, double lr_decay, double eps, bool maximize) {
  const char* opt = "adagrad";
  const size_t n = params.size();
  check_list(opt, "grads", grads, n);
  check_list(opt, "state_sums", state_sums, n);
  check_list(opt, "steps", steps, n);
  for (size_t i = 0; i < n; ++i) {
    check_param(opt, i, params[i]);
    check_tensor(opt, "grads", i, grads[i], params[i]);
    check_tensor(opt, "state_sums", i, state_sums[i], params[i]);
    check_step(opt, i, steps[i]);
  }
  std::vector<Job> jobs;
  jobs.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const double step = increment_step(steps[i]);
    const double clr = lr / (1 + (step - 1) * lr_decay);
    const AdagradH h{sign(maximize), weight_decay, eps, -clr};
    dispatch_dtype(params[i].scalar_type(), [&](auto types) {
      using Ty = decltype(types);
      dispatch_bool(weight_decay != 0.0, [&](auto wd) {
        jobs.push_back(make_job<AdagradK<typename Ty::compute, decltype(wd)::value>, typename Ty::storage>(
            h, params[i], grads[i], &state_sums[i], nullptr, nullptr));
      });
    });
  }
  execute(jobs);
  for (size_t i = 0; i < n; ++i) {
    bump(params[i]);
    bump(state_sums[i]);
  }
}

void rmsprop(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
             const std::vector<Tensor>& square_avgs, const std::vector<Tensor>& grad_avgs,
             const std::vector<Tensor>& momentum_buffers, const std::vector<Tensor>& steps,
             double lr, double alpha, double eps, double weight_decay, double momentum,
             bool centered, bool maximize) {
  const char* opt = "rmsprop";
  const size_t n = params.size();
  const bool use_mom = momentum > 0.0;
  check_list(opt, "grads", grads, n);
  check_list(opt, "square_avgs", square_avgs, n);
  if (centered) check_list(opt, "grad_avgs", grad_avgs, n);
  if (use_mom) check_list(opt, "momentum_buffers", momentum_buffers, n);
  check_list(opt, "steps", steps, n);
  for (size_t i = 0; i < n; ++i) {
    check_param(opt, i, params[i]);
    check_tensor(opt, "grads", i, grads[i], params[i]);
    check_tensor(opt, "square_avgs", i, square_avgs[i], params[i]);
    if (centered) check_tensor(opt, "grad_avgs", i, grad_avgs[i], params[i]);
    if (use_mom) check_tensor(opt, "momentum_buffers", i, momentum_buffers[i], params[i]);
    check_step(opt, i, steps[i]);
  }
  const RmspropH h{sign(maximize), weight_decay, alpha, 1.0 - alpha, eps, momentum, -lr};
  std::vector<Job> jobs;
  jobs.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    increment_step(steps[i]);
    const Tensor* ga = centered ? &grad_avgs[i] : nullptr;
    const Tensor* buf = use_mom ? &momentum_buffers[i] : nullptr;
    dispatch_dtype(params[i].scalar_type(), [&](auto types) {
      using Ty = decltype(types);
      dispatch_bool(weight_decay != 0.0, [&](auto wd) {
        dispatch_bool(centered, [&](auto cen) {
          dispatch_bool(use_mom, [&](auto mom) {
            using K = RmspropK<typename Ty::compute, decltype(wd)::value, decltype(cen)::value, decltype(mom)::value>;
            jobs.push_back(make_job<K, typename Ty::storage>(h, params[i], grads[i],
                                                             &square_avgs[i], ga, buf));
          });
        });
      });
    });
  }
  execute(jobs);
  for (size_t i = 0; i < n; ++i) {
    bump(params[i]);
    bump(square_avgs[i]);
    if (centered) bump(grad_avgs[i]);
    if (use_mom) bump(momentum_buffers[i]);
  }
}

void adadelta(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
              const std::vector<Tensor>& square_avgs, const std::vector<Tensor>& acc_deltas,
              const std::vector<Tensor>& steps, double lr, double rho, double eps,
              double weight_decay, bool maximize) {
  const char* opt = "adadelta";
  const size_t n = params.size();
  check_list(opt, "grads", grads, n);
  check_list(opt, "square_avgs", square_avgs, n);
  check_list(opt, "acc_deltas", acc_deltas, n);
  check_list(opt, "steps", steps, n);
  for (size_t i = 0; i < n; ++i) {
    check_param(opt, i, params[i]);
    check_tensor(opt, "grads", i, grads[i], params[i]);
    check_tensor(opt, "square_avgs", i, square_avgs[i], params[i]);
    check_tensor(opt, "acc_deltas", i, acc_deltas[i], params[i]);
    check_step(opt, i, steps[i]);
  }
  const AdadeltaH h{sign(maximize), weight_decay, rho, 1.0 - rho, eps, -lr};
  std::vector<Job> jobs;
  jobs.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    increment_step(steps[i]);
    dispatch_dtype(params[i].scalar_type(), [&](auto types) {
      using Ty = decltype(types);
      dispatch_bool(weight_decay != 0.0, [&](auto wd) {
        jobs.push_back(
            make_job<AdadeltaK<typename Ty::compute, decltype(wd)::value>, typename Ty::storage>(
                h, params[i], grads[i], &square_avgs[i], &acc_deltas[i], nullptr));
      });
    });
  }
  execute(jobs);
  for (size_t i = 0; i < n; ++i) {
    bump(params[i]);
    bump(square_avgs[i]);
    bump(acc_deltas[i]);
  }
}

int wd_mode(double weight_decay, bool decoupled) {
  if (weight_decay == 0.0) return kNoWd;
  return decoupled ? kDecoupled : kL2;
}

void adam(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
          const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
          const std::vector<Tensor>& max_exp_avg_sqs, const std::vector<Tensor>& steps, double lr,
          double beta1, double beta2, double eps, double weight_decay, bool amsgrad,
          bool maximize, bool decoupled_weight_decay) {
  const char* opt = "adam";
  const size_t n = params.size();
  check_list(opt, "grads", grads, n);
  check_list(opt, "exp_avgs", exp_avgs, n);
  check_list(opt, "exp_avg_sqs", exp_avg_sqs, n);
  if (amsgrad) check_list(opt, "max_exp_avg_sqs", max_exp_avg_sqs, n);
  check_list(opt, "steps", steps, n);
  for (size_t i = 0; i < n; ++i) {
    check_param(opt, i, params[i]);
    check_tensor(opt, "grads", i, grads[i], params[i]);
    check_tensor(opt, "exp_avgs", i, exp_avgs[i], params[i]);
    check_tensor(opt, "exp_avg_sqs", i, exp_avg_sqs[i], params[i]);
    if (amsgrad) check_tensor(opt, "max_exp_avg_sqs", i, max_exp_avg_sqs[i], params[i]);
    check_step(opt, i, steps[i]);
  }
  const int wdm = wd_mode(weight_decay, decoupled_weight_decay);
  std::vector<Job> jobs;
  jobs.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const double step = increment_step(steps[i]);
    const double bc1 = 1 - std::pow(beta1, step);
    const double bc2 = 1 - std::pow(beta2, step);
    const double step_size = lr / bc1;
    const double bc2_sqrt = std::pow(bc2, 0.5);
    const AdamH h{sign(maximize), weight_decay, 1 - lr * weight_decay, 1 - beta1, beta2,
                  1 - beta2, bc2_sqrt, eps, -step_size};
    const Tensor* vmax = amsgrad ? &max_exp_avg_sqs[i] : nullptr;
    dispatch_dtype(params[i].scalar_type(), [&](auto types) {
      using Ty = decltype(types);
      dispatch_wd(wdm, [&](auto wd) {
        dispatch_bool(amsgrad, [&](auto ams) {
          using K = AdamK<typename Ty::compute, decltype(wd)::value, decltype(ams)::value>;
          jobs.push_back(make_job<K, typename Ty::storage>(h, params[i], grads[i], &exp_avgs[i],
                                                           &exp_avg_sqs[i], vmax));
        });
      });
    });
  }
  execute(jobs);
  for (size_t i = 0; i < n; ++i) {
    bump(params[i]);
    bump(exp_avgs[i]);
    bump(exp_avg_sqs[i]);
    if (amsgrad) bump(max_exp_avg_sqs[i]);
  }
}

void adamax(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
            const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_infs,
            const std::vector<Tensor>& steps, double lr, double beta1, double beta2, double eps,
            double weight_decay, bool maximize) {
  const char* opt = "adamax";
  const size_t n = params.size();
  check_list(opt, "grads", grads, n);
  check_list(opt, "exp_avgs", exp_avgs, n);
  check_list(opt, "exp_infs", exp_infs, n);
  check_list(opt, "steps", steps, n);
  for (size_t i = 0; i < n; ++i) {
    check_param(opt, i, params[i]);
    check_tensor(opt, "grads", i, grads[i], params[i]);
    check_tensor(opt, "exp_avgs", i, exp_avgs[i], params[i]);
    check_tensor(opt, "exp_infs", i, exp_infs[i], params[i]);
    check_step(opt, i, steps[i]);
  }
  std::vector<Job> jobs;
  jobs.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const double step = increment_step(steps[i]);
    const double clr = lr / (1 - std::pow(beta1, step));
    const AdamaxH h{sign(maximize), weight_decay, 1 - beta1, beta2, eps, -clr};
    dispatch_dtype(params[i].scalar_type(), [&](auto types) {
      using Ty = decltype(types);
      dispatch_bool(weight_decay != 0.0, [&](auto wd) {
        jobs.push_back(make_job<AdamaxK<typename Ty::compute, decltype(wd)::value>, typename Ty::storage>(
            h, params[i], grads[i], &exp_avgs[i], &exp_infs[i], nullptr));
      });
    });
  }
  execute(jobs);
  for (size_t i = 0; i < n; ++i) {
    bump(params[i]);
    bump(exp_avgs[i]);
    bump(exp_infs[i]);
  }
}

void nadam(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
           const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
           const std::vector<Tensor>& mu_products, const std::vector<Tensor>& steps, double lr,
           double beta1, double beta2, double eps, double weight_decay, double momentum_decay,
           bool decoupled_weight_decay, bool maximize) {
  const char* opt = "nadam";
  const size_t n = params.size();
  check_list(opt, "grads", grads, n);
  check_list(opt, "exp_avgs", exp_avgs, n);
  check_list(opt, "exp_avg_sqs", exp_avg_sqs, n);
  check_list(opt, "mu_products", mu_products, n);
  check_list(opt, "steps", steps, n);
  for (size_t i = 0; i < n; ++i) {
    check_param(opt, i, params[i]);
    check_tensor(opt, "grads", i, grads[i], params[i]);
    check_tensor(opt, "exp_avgs", i, exp_avgs[i], params[i]);
    check_tensor(opt, "exp_avg_sqs", i, exp_avg_sqs[i], params[i]);
    check_step(opt, i, steps[i]);
    const Tensor& mp = mu_products[i];
    TORCH_CHECK(mp.defined() && mp.device().is_cpu() && mp.numel() == 1 &&
                    (mp.scalar_type() == at::kFloat || mp.scalar_type() == at::kDouble),
                "optimist.nadam: mu_products[", i,
                "] must be a one-element float32 or float64 CPU tensor");
  }
  const int wdm = wd_mode(weight_decay, decoupled_weight_decay);
  std::vector<Job> jobs;
  jobs.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const double step = increment_step(steps[i]);
    const double bc2 = 1 - std::pow(beta2, step);
    const double mu = beta1 * (1.0 - 0.5 * std::pow(0.96, step * momentum_decay));
    const double mu_next = beta1 * (1.0 - 0.5 * std::pow(0.96, (step + 1) * momentum_decay));
    // mu_product *= mu, in the tensor's precision (the Python scalar is cast first).
    double mu_product;
    const Tensor& mp = mu_products[i];
    if (mp.scalar_type() == at::kFloat) {
      float* ptr = mp.data_ptr<float>();
      *ptr = *ptr * static_cast<float>(mu);
      mu_product = static_cast<double>(*ptr);
    } else {
      double* ptr = mp.data_ptr<double>();
      *ptr = *ptr * mu;
      mu_product = *ptr;
    }
    const double mu_product_next = mu_product * mu_next;
    const double c_grad = -lr * (1.0 - mu) / (1.0 - mu_product);
    const double c_avg = (-lr * mu_next) / (1.0 - mu_product_next);
    const NadamH h{sign(maximize), weight_decay, 1 - lr * weight_decay, 1 - beta1, beta2,
                   1 - beta2, bc2, eps, c_grad, c_avg};
    dispatch_dtype(params[i].scalar_type(), [&](auto types) {
      using Ty = decltype(types);
      dispatch_wd(wdm, [&](auto wd) {
        jobs.push_back(make_job<NadamK<typename Ty::compute, decltype(wd)::value>, typename Ty::storage>(
            h, params[i], grads[i], &exp_avgs[i], &exp_avg_sqs[i], nullptr));
      });
    });
  }
  execute(jobs);
  for (size_t i = 0; i < n; ++i) {
    bump(params[i]);
    bump(exp_avgs[i]);
    bump(exp_avg_sqs[i]);
    bump(mu_products[i]);
  }
}

void radam(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
           const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
           const std::vector<Tensor>& steps, double lr, double beta1, double beta2, double eps,
           double weight_decay, bool decoupled_weight_decay, bool maximize) {
  const char* opt = "radam";
  const size_t n = params.size();
  check_list(opt, "grads", grads, n);
  check_list(opt, "exp_avgs", exp_avgs, n);
  check_list(opt, "exp_avg_sqs", exp_avg_sqs, n);
  check_list(opt, "steps", steps, n);
  for (size_t i = 0; i < n; ++i) {
    check_param(opt, i, params[i]);
    check_tensor(opt, "grads", i, grads[i], params[i]);
    check_tensor(opt, "exp_avgs", i, exp_avgs[i], params[i]);
    check_tensor(opt, "exp_avg_sqs", i, exp_avg_sqs[i], params[i]);
    check_step(opt, i, steps[i]);
  }
  const int wdm = wd_mode(weight_decay, decoupled_weight_decay);
  std::vector<Job> jobs;
  jobs.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const double step = increment_step(steps[i]);
    const double bc1 = 1 - std::pow(beta1, step);
    const double bc2 = 1 - std::pow(beta2, step);
    const double rho_inf = 2 / (1 - beta2) - 1;
    const double rho_t = rho_inf - 2 * step * std::pow(beta2, step) / bc2;
    const bool use_rect = rho_t > 5.0;
    double rect = 0.0;
    if (use_rect) {
      rect = std::pow((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t),
                      0.5);
    }
    const RadamH h{sign(maximize), weight_decay, 1 - lr * weight_decay, 1 - beta1, beta2,
                   1 - beta2, bc1, lr, std::pow(bc2, 0.5), rect, eps};
    dispatch_dtype(params[i].scalar_type(), [&](auto types) {
      using Ty = decltype(types);
      dispatch_wd(wdm, [&](auto wd) {
        dispatch_bool(use_rect, [&](auto r) {
          using K = RadamK<typename Ty::compute, decltype(wd)::value, decltype(r)::value>;
          jobs.push_back(make_job<K, typename Ty::storage>(h, params[i], grads[i], &exp_avgs[i],
                                                           &exp_avg_sqs[i], nullptr));
        });
      });
    });
  }
  execute(jobs);
  for (size_t i = 0; i < n; ++i) {
    bump(params[i]);
    bump(exp_avgs[i]);
    bump(exp_avg_sqs[i]);
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.doc() = "optimist: single-pass fused CPU optimizer kernels";
  m.def("unsupported_indices", &unsupported_indices, py::arg("lists"));
  using Release = py::call_guard<py::gil_scoped_release>;
  m.def("sgd", &sgd, Release(), py::arg("params"), py::arg("grads"),
        py::arg("momentum_buffers"), py::arg("is_new_buffer"), py::arg("lr"),
        py::arg("weight_decay"), py::arg("momentum"), py::arg("dampening"),
        py::arg("nesterov"), py::arg("maximize"));
  m.def("adagrad", &adagrad, Release(), py::arg("params"), py::arg("grads"),
        py::arg("state_sums"), py::arg("steps"), py::arg("lr"), py::arg("weight_decay"),
        py::arg("lr_decay"), py::arg("eps"), py::arg("maximize"));
  m.def("rmsprop", &rmsprop, Release(), py::arg("params"), py::arg("grads"),
        py::arg("square_avgs"), py::arg("grad_avgs"), py::arg("momentum_buffers"),
        py::arg("steps"), py::arg("lr"), py::arg("alpha"), py::arg("eps"),
        py::arg("weight_decay"), py::arg("momentum"), py::arg("centered"), py::arg("maximize"));
  m.def("adadelta", &adadelta, Release(), py::arg("params"), py::arg("grads"),
        py::arg("square_avgs"), py::arg("acc_deltas"), py::arg("steps"), py::arg("lr"),
        py::arg("rho"), py::arg("eps"), py::arg("weight_decay"), py::arg("maximize"));
  m.def("adam", &adam, Release(), py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
        py::arg("exp_avg_sqs"), py::arg("max_exp_avg_sqs"), py::arg("steps"), py::arg("lr"),
        py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
        py::arg("amsgrad"), py::arg("maximize"), py::arg("decoupled_weight_decay"));
  m.def("adamax", &adamax, Release(), py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
        py::arg("exp_infs"), py::arg("steps"), py::arg("lr"), py::arg("beta1"),
        py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("maximize"));
  m.def("nadam", &nadam, Release(), py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
        py::arg("exp_avg_sqs"), py::arg("mu_products"), py::arg("steps"), py::arg("lr"),
        py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
        py::arg("momentum_decay"), py::arg("decoupled_weight_decay"), py::arg("maximize"));
  m.def("radam", &radam, Release(), py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
        py::arg("exp_avg_sqs"), py::arg("steps"), py::arg("lr"), py::arg("beta1"),
        py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
        py::arg("decoupled_weight_decay"), py::arg("maximize"));
}
