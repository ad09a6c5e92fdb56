// optimist engine: the rules' functors (a header of engine.cpp, one translation unit).
//
// A rule is a functor over one block of elements (L1-resident, or a whole in-place range):
//   * C is the compute type (float for float32/bfloat16/float16 parameters, double for float64);
//   * the constructor takes h, the host scalars the rule's Python side computed for this step
//     (its `scalars()` tuple, in that order), in double;
//   * operator()(n, p, g, s0, s1, s2, s3): p the parameter (after decoupled decay), g the
//     prepared gradient (after the prologue), s0..s3 the state slots (nullptr where unused), all
//     compute-precision pointers that the functor reads and updates in place;
//   * optionally (kFusesPrologue, as Adam below), a template <typename Pre> operator() with a
//     trailing `pre` that takes the raw parameter and gradient: the rule reads the parameter
//     as pre.param(p[i]) and its gradient as pre.grad(g[i], that parameter), so that the
//     engine runs the prologue (decoupled decay, gradient scale, maximize, L2) inside the
//     rule's loop instead of in a pass of its own.  Raw (the default) changes nothing.
// Adding a rule: its functor here, and one line in rule_fn() in engine.cpp.
//
// Rounding follows torch's CPU kernels (see torch/optim/_single_tensor_*): fmadd() where torch
// fuses a multiply-add (add with alpha, addcmul, lerp), separate roundings elsewhere; the build
// uses -ffp-contract=off so that the compiler does not fuse on its own.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace optimist {

// ---------------------------------------------------------------------------------------------
// Scalar helpers shared by the rules.  Always inlined: a helper left as a call (which GCC may
// choose once a job function grows) keeps the rule's loop from vectorizing (RAdam took 4x).

#define OPTIMIST_INLINE inline __attribute__((always_inline))

template <typename C>
OPTIMIST_INLINE C fmadd(C a, C b, C c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// torch's lerp (ATen/native/Lerp.h): the formula depends on whether |weight| < 0.5.
template <typename C>
OPTIMIST_INLINE C lerp(C self, C end, C w, C one_minus_w, bool small) {
  const C diff = end - self;
  return small ? fmadd(w, diff, self) : fmadd(-diff, one_minus_w, end);
}

template <typename C>
OPTIMIST_INLINE C maximum(C a, C b) {
  return a < b ? b : a;
}

template <typename C>
OPTIMIST_INLINE C sign_of(C x) {
  return x > C(0) ? C(1) : (x < C(0) ? C(-1) : C(0));
}

// The identity prologue of a kFusesPrologue rule: the parameter and gradient as stored.
template <typename C>
struct Raw {
  OPTIMIST_INLINE C param(C p) const { return p; }
  OPTIMIST_INLINE C grad(C g, C) const { return g; }
};

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
      const C gi = g[i];
      const C s = fmadd(gi, gi, sum[i]);
      sum[i] = s;
      p[i] = p[i] + neg_clr * gi / (std::sqrt(s) + eps);
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
  static constexpr bool kFusesPrologue = true;
  template <typename Pre = Raw<C>>
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
                  C* __restrict__ v, C* __restrict__ vmax, C*, Pre pre = {}) const {
    for (int64_t i = 0; i < n; ++i) {
      const C pi = pre.param(p[i]);
      const C gi = pre.grad(g[i], pi);
      const C mi = lerp(m[i], gi, w1, lw1, small);
      m[i] = mi;
      C vi = fmadd(omb2 * gi, gi, v[i] * beta2);
      v[i] = vi;
      if constexpr (AMSGRAD) {
        vi = maximum(vmax[i], vi);
        vmax[i] = vi;
      }
      p[i] = pi + nss * mi / (std::sqrt(vi) / bc2s + eps);
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
  static constexpr bool kFusesPrologue = true;
  template <typename Pre = Raw<C>>
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
                  C* __restrict__ v, C*, C*, Pre pre = {}) const {
    for (int64_t i = 0; i < n; ++i) {
      const C p0 = pre.param(p[i]);
      const C gi = pre.grad(g[i], p0);
      const C mi = lerp(m[i], gi, w1, lw1, small);
      m[i] = mi;
      const C vi = fmadd(omb2 * gi, gi, v[i] * beta2);
      v[i] = vi;
      const C denom = std::sqrt(vi / bc2) + eps;
      const C pi = p0 + cg * gi / denom;  // torch: two separate addcdiv_ calls
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
  template <bool RECT, typename Pre>
  void run(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
           C* __restrict__ v, Pre pre) const {
    for (int64_t i = 0; i < n; ++i) {
      const C pi = pre.param(p[i]);
      const C gi = pre.grad(g[i], pi);
      const C mi = lerp(m[i], gi, w1, lw1, small);
      m[i] = mi;
      const C vi = fmadd(omb2 * gi, gi, v[i] * beta2);
      v[i] = vi;
      const C corrected = mi / bc1;
      if constexpr (RECT) {
        // torch: exp_avg / bc1 * lr * (bc2**0.5 / (sqrt(v) + eps)) * rect, with
        // `scalar / tensor` evaluated as tensor.reciprocal() * scalar.
        const C adaptive = (C(1) / (std::sqrt(vi) + eps)) * bc2s;
        p[i] = pi - corrected * lr * adaptive * rect;
      } else {
        p[i] = pi - corrected * lr;
      }
    }
  }
  static constexpr bool kFusesPrologue = true;
  template <typename Pre = Raw<C>>
  void operator()(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
                  C* __restrict__ v, C*, C*, Pre pre = {}) const {
    if (rectified) {
      run<true>(n, p, g, m, v, pre);
    } else {
      run<false>(n, p, g, m, v, pre);
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
                  C* __restrict__ v, C*, C*) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C vi = fmadd(w2 * gi, gi, v[i] * b2);
      v[i] = vi;  // s: updated by the global pass (prodigy_stats), which took |s|_1
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

// MAX_EPS (eps_form="max", the paper's Algorithm 3): max(rho bs h, eps) as the denominator;
// else (the authors' code) rho bs h + eps.
template <typename C, bool HESSIAN, bool MAX_EPS>
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
      const C scaled = rho_bs * hess[i];
      const C denom = MAX_EPS ? maximum(scaled, eps) : scaled + eps;
      const C ratio = std::min(std::abs(mi) / denom, C(1));
      p[i] = fmadd(neg_lr * sign_of(mi), ratio, p[i]);
    }
  }
};

// FTRL-Proximal: the weights recomputed from z and n each step.  n^-lr_power as torch computes
// it: lr_power = -0.5, sqrt; 0, exactly 1; else std::pow in double, as torch's scalar pow loop
// (ftrl.py's _pow), about 20 ns an element.
template <typename C>
struct Ftrl {  // h: -lr_power, lr, 2 l2_shrinkage, l1, 2 (l2 + beta / (2 lr))
  enum Power { kRoot, kOne, kPow };
  double power;
  C lr, shrinkage, l1, l2;
  Power kind;
  explicit Ftrl(const double* h)
      : power(h[0]), lr(C(h[1])), shrinkage(C(h[2])), l1(C(h[3])), l2(C(h[4])),
        kind(h[0] == 0.5 ? kRoot : (h[0] == 0.0 ? kOne : kPow)) {}
  template <Power K>
  OPTIMIST_INLINE C pow_(C x) const {
    if constexpr (K == kRoot) {
      return std::sqrt(x);
    } else if constexpr (K == kOne) {
      return C(1);
    } else {
      return C(std::pow(double(x), power));
    }
  }
  template <Power K>
  void run(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ acc,
           C* __restrict__ z) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i], pi = p[i], old = acc[i];
      const C fresh = old + gi * gi;
      const C rate = pow_<K>(fresh);
      const C sigma = (rate - pow_<K>(old)) / lr;
      const C zi = z[i] + ((gi + shrinkage * pi) - sigma * pi);
      z[i] = zi;
      acc[i] = fresh;
      p[i] = (std::min(std::max(zi, -l1), l1) - zi) / (rate / lr + l2);
    }
  }
  void operator()(int64_t n, C* p, const C* g, C* acc, C* z, C*, C*) const {
    if (kind == kRoot) {
      run<kRoot>(n, p, g, acc, z);
    } else if (kind == kOne) {
      run<kOne>(n, p, g, acc, z);
    } else {
      run<kPow>(n, p, g, acc, z);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Rules with a per-tensor norm pass (trust ratios).  Two phases over each tensor:
//   * phase A, norms(n, p, g, s0..s3, u) (trust.h's run_norms): the state updates that do
//     not need the norms, and the update direction u: written to the buffer `u` and returned,
//     or, where it is an input as it stands (LARS without decay: g), that input returned; the
//     engine sums p^2 and u^2 per tensor in float64;
//   * phase B, operator() (an ordinary step): h carries the tensor's own scalar, computed from
//     the two norms (trust.h's trust_scalar), after the shared ones.
// Rounding as the eager path in trust_ratio.py (torch ops per tensor).

template <typename C>
struct Lamb {  // h: 1 - b1, b2, 1 - b2, 1 / (1 - b1^t), 1 / (1 - b2^t), eps, wd;
               //    phase B: -lr * ratio
  C w1, lw1, b2, omb2, ibc1, ibc2, eps, wd, alpha;
  bool small;
  explicit Lamb(const double* h)
      : w1(C(h[0])), lw1(C(1) - C(h[0])), b2(C(h[1])), omb2(C(h[2])), ibc1(C(h[3])),
        ibc2(C(h[4])), eps(C(h[5])), wd(C(h[6])), alpha(C(h[7])),
        small(std::abs(C(h[0])) < C(0.5)) {}
  template <bool WD>
  C direction(C mi, C vi, C pi) const {  // m / bc1 / (sqrt(v / bc2) + eps) + wd p
    const C u = (mi * ibc1) / (std::sqrt(vi * ibc2) + eps);
    return WD ? fmadd(wd, pi, u) : u;
  }
  template <bool WD>
  void norms_(int64_t n, const C* __restrict__ p, const C* __restrict__ g, C* __restrict__ m,
              C* __restrict__ v, C* __restrict__ u) const {
    for (int64_t i = 0; i < n; ++i) {
      const C gi = g[i];
      const C mi = lerp(m[i], gi, w1, lw1, small);
      m[i] = mi;
      const C vi = fmadd(omb2 * gi, gi, v[i] * b2);
      v[i] = vi;
      u[i] = direction<WD>(mi, vi, p[i]);
    }
  }
  const C* norms(int64_t n, const C* p, const C* g, C* m, C* v, C*, C*, C* u) const {
    wd != C(0) ? norms_<true>(n, p, g, m, v, u) : norms_<false>(n, p, g, m, v, u);
    return u;
  }
  template <bool WD>
  void step_(int64_t n, C* __restrict__ p, const C* __restrict__ m,
             const C* __restrict__ v) const {
    for (int64_t i = 0; i < n; ++i) p[i] = fmadd(alpha, direction<WD>(m[i], v[i], p[i]), p[i]);
  }
  void operator()(int64_t n, C* p, const C*, C* m, C* v, C*, C*) const {
    wd != C(0) ? step_<true>(n, p, m, v) : step_<false>(n, p, m, v);  // the moments: phase A's
  }
};

template <typename C, bool NESTEROV>
struct Lars {  // h: wd, momentum, -lr outside the momentum (-1: lr inside), wd in the norm
               //    (0: the norm of g, as the paper); phase B: its ratio
  C wd, mu, neg_lr, wd_norm, scale;
  explicit Lars(const double* h)
      : wd(C(h[0])), mu(C(h[1])), neg_lr(C(h[2])), wd_norm(C(h[3])), scale(C(h[4])) {}
  const C* norms(int64_t n, const C* __restrict__ p, const C* g, C*, C*, C*, C*,
                 C* __restrict__ u) const {
    if (wd_norm == C(0)) return g;  // the norm of g: no copy
    for (int64_t i = 0; i < n; ++i) u[i] = fmadd(wd_norm, p[i], g[i]);
    return u;
  }
  template <bool WD>
  void step_(int64_t n, C* __restrict__ p, const C* __restrict__ g, C* __restrict__ buf) const {
    for (int64_t i = 0; i < n; ++i) {
      const C ui = (WD ? fmadd(wd, p[i], g[i]) : g[i]) * scale;
      const C b = buf[i] * mu + ui;
      buf[i] = b;
      p[i] = fmadd(neg_lr, NESTEROV ? fmadd(mu, b, ui) : b, p[i]);  // (-1: p - b, exact)
    }
  }
  void operator()(int64_t n, C* p, const C* g, C* buf, C*, C*, C*) const {
    wd != C(0) ? step_<true>(n, p, g, buf) : step_<false>(n, p, g, buf);
  }
};

}  // namespace optimist
