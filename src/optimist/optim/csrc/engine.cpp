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
// What a rule adds: a functor (its element math, 10-20 lines) in rules.h and one line in
// rule_fn() below.  The codecs are in codecs.h and the checks of which tensors the engine takes
// in checks.h (headers of this one translation unit).  The functor sees only compute-precision
// pointers (float for float32/bfloat16/float16 parameters, double for float64) to the
// parameter, the prepared gradient and up to four state slots, over one block of at most kBlock
// elements (or over a job's whole range when every tensor is used in place and nothing runs
// around the rule: a functor must not assume n <= kBlock); the engine decodes what is not
// stored in that precision into L1-resident block buffers before the call, runs the prologue
// on the block, and encodes after, so that memory is still read and written once.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "codecs.h"
#include "reduce.h"
#include "rules.h"

namespace optimist {

using at::Tensor;

constexpr int kMaxSlots = 4;          // state slots a rule may use
constexpr int kEmaSlot = kMaxSlots;   // the epilogue's EMA of parameters
constexpr int kAllSlots = kMaxSlots + 1;
// Elements per block: kBlock when the rule works on every tensor in place (nothing to decode,
// prepare or encode), else kSmallBlock (a multiple of the int8 codec's kQuantBlock), so that
// the passes over a block (decode, prologue, rule, encode) stay within a few KiB and every
// memory stream advances together.  Buffers are kBlock long and stay in L1/L2.
constexpr int64_t kBlock = 1024;
constexpr int64_t kSmallBlock = 256;
constexpr int64_t kParallelElems = 32 * 1024;

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

template <typename F>
void with_flag(bool b, F&& f) {
  if (b) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

struct Job {
  void (*fn)(const Job&, int64_t, int64_t);
  Store param, grad;
  Store slot[kAllSlots];
  Prologue pro;
  uint32_t seed;
  int64_t n;
  double hyper[12];
};

// The gradient prologue of a step (decay and EMA stay at their defaults).
Prologue make_prologue(double grad_scale, double clip_value, bool clip_first, bool maximize,
                       double l2) {
  Prologue pro;
  pro.grad_scale = grad_scale;
  pro.clip_value = clip_value;
  pro.clip_first = clip_first;
  pro.sign = maximize ? -1.0 : 1.0;
  pro.l2 = l2;
  return pro;
}

// Tensor i's seed for the codecs' stochastic rounding in a step seeded `seed`, and the seeds of
// its slots derived from it (as the torch codec's slot_seed does).
uint32_t job_seed(int64_t seed, size_t i) {
  return static_cast<uint32_t>(seed) * 0x9E3779B1u + static_cast<uint32_t>(i) * 0x85EBCA6Bu;
}

void slot_seeds(uint32_t seed, uint32_t (&seeds)[kAllSlots]) {
  for (int k = 0; k < kAllSlots; ++k) {
    seed = seed * 0x01000193u + 0x9E3779B9u;
    seeds[k] = seed;
  }
}

// A range [begin, end) of one tensor's elements: the unit of work of the reduction passes.
struct Chunk {
  size_t tensor;
  int64_t begin, end;
};

void add_chunks(std::vector<Chunk>& chunks, size_t tensor, int64_t numel, int64_t size) {
  for (int64_t b = 0; b < numel; b += size) {
    chunks.push_back({tensor, b, std::min(numel, b + size)});
  }
}

// The prologue on one block, in place and in L1 (the block was just loaded, so this costs no
// memory traffic of its own): decoupled decay of the parameter, then the gradient the rule sees,
// written to `out` unless nothing changes it.  The operation order is torch's: clip_grad_*
// before the step, then `-grad` for maximize, then `grad.add(param, alpha=weight_decay)`.
// One loop per combination of the steps that run (chosen once per job), so that every step is
// one more operation on a value in a register, not one more pass over the block.
template <typename C>
using PrologueFn = const C* (*)(const Prologue&, C* __restrict__, const C* __restrict__,
                                C* __restrict__, int64_t);

template <typename C, bool DECAY, bool GRAD, bool CLIP, bool FIRST, bool SCALED, bool L2>
const C* prologue_block(const Prologue& pr, C* __restrict__ p, const C* __restrict__ graw,
                        C* __restrict__ out, int64_t n) {
  const C decay = C(pr.decay), scale = C(pr.grad_scale), sgn = C(pr.sign), l2 = C(pr.l2);
  const C hi = C(pr.clip_value), lo = -C(pr.clip_value);
  for (int64_t i = 0; i < n; ++i) {
    C pi = p[i];
    if constexpr (DECAY) {
      pi = pi * decay;
      p[i] = pi;
    }
    if constexpr (GRAD) {
      C gi = graw[i];
      if constexpr (CLIP && FIRST) gi = std::min(std::max(gi, lo), hi);
      if constexpr (SCALED) gi = gi * scale;
      if constexpr (CLIP && !FIRST) gi = std::min(std::max(gi, lo), hi);
      gi = gi * sgn;
      if constexpr (L2) gi = fmadd(l2, pi, gi);
      out[i] = gi;
    }
  }
  return GRAD ? out : graw;
}

template <typename C>
const C* no_prologue(const Prologue&, C* __restrict__, const C* __restrict__ graw,
                     C* __restrict__, int64_t) {
  return graw;
}

// Whether the prologue changes the gradient (else it decays the parameter, or does nothing).
inline bool prepares_grad(const Prologue& pr) {
  return pr.grad_scale != 1.0 || pr.clip_value != 0.0 || pr.sign != 1.0 || pr.l2 != 0.0;
}

// The prologue function of a job (no_prologue when nothing runs).
template <typename C>
PrologueFn<C> select_prologue(const Prologue& pr) {
  const bool grad = prepares_grad(pr);
  PrologueFn<C> fn = &no_prologue<C>;
  if (!grad) {
    if (pr.decay != 1.0) fn = &prologue_block<C, true, false, false, false, false, false>;
    return fn;
  }
  with_flag(pr.decay != 1.0, [&](auto decay) {
    with_flag(pr.clip_value > 0.0, [&](auto clip) {
      with_flag(pr.clip_first, [&](auto first) {
        with_flag(pr.grad_scale != 1.0, [&](auto scaled) {
          with_flag(pr.l2 != 0.0, [&](auto l2) {
            fn = &prologue_block<C, decltype(decay)::value, true, decltype(clip)::value,
                                 decltype(first)::value, decltype(scaled)::value,
                                 decltype(l2)::value>;
          });
        });
      });
    });
  });
  return fn;
}

// One job over elements [begin, end), block by block: decode (load), prologue, rule, epilogue,
// encode (store).  Blocks with any pass besides the rule's are small (kSmallBlock), so that the
// memory streams the step reads and writes advance together: with 4 KiB blocks, a pass over one
// stream at a time (the prologue over the gradient, the decode of one state slot) left the
// memory system idle on the others (maximize-only Adam took 1.2-1.3x the plain step).
template <typename R, typename C>
void run_job(const Job& job, int64_t begin, int64_t end) {
  const R rule(job.hyper);
  alignas(64) C pbuf[kBlock], graw[kBlock], gbuf[kBlock];
  alignas(64) C sbuf[kAllSlots][kBlock];
  const Prologue& pr = job.pro;
  const PrologueFn<C> prologue = select_prologue<C>(pr);
  int used[kAllSlots];  // the slots present, in order
  int n_used = 0;
  for (int k = 0; k < kAllSlots; ++k) {
    if (job.slot[k].kind != kAbsent) used[n_used++] = k;
  }
  uint32_t seeds[kAllSlots];
  slot_seeds(job.seed, seeds);
  bool native = job.param.kind == kNative && job.grad.kind == kNative;
  for (int j = 0; j < n_used; ++j) native &= job.slot[used[j]].kind == kNative;
  const bool in_place = native && prologue == &no_prologue<C>;
  if (in_place && job.slot[kEmaSlot].kind == kAbsent) {
    // every stream is used in place and nothing runs around the rule: one call over the whole
    // range, as the per-optimizer kernels did (per 4 KiB block, the calls and the codec
    // switches cost 1-3% of a 10M step)
    C* s[kAllSlots] = {nullptr, nullptr, nullptr, nullptr, nullptr};
    for (int j = 0; j < n_used; ++j) s[used[j]] = static_cast<C*>(job.slot[used[j]].data) + begin;
    rule(end - begin, static_cast<C*>(job.param.data) + begin,
         static_cast<const C*>(job.grad.data) + begin, s[0], s[1], s[2], s[3]);
    return;
  }
  // a decay alone (AdamW) reads no stream of its own: large blocks (fewer calls) are as good
  const int64_t block = native && !prepares_grad(pr) ? kBlock : kSmallBlock;
  for (int64_t b = begin; b < end; b += block) {
    const int64_t len = std::min(block, end - b);
    C* __restrict__ p = load<C>(job.param, b, len, pbuf);
    const C* g = prologue(pr, p, load<C>(job.grad, b, len, graw), gbuf, len);
    C* s[kAllSlots] = {nullptr, nullptr, nullptr, nullptr, nullptr};
    for (int j = 0; j < n_used; ++j) {
      const int k = used[j];
      s[k] = load<C>(job.slot[k], b, len, sbuf[k]);
    }
    rule(len, p, g, s[0], s[1], s[2], s[3]);
    if (C* __restrict__ e = s[kEmaSlot]) {
      const C d = C(pr.ema_decay), od = C(1) - C(pr.ema_decay);
      for (int64_t i = 0; i < len; ++i) e[i] = fmadd(od, p[i], e[i] * d);
    }
    store<C>(job.param, b, len, p, job.seed);
    for (int j = 0; j < n_used; ++j) {
      const int k = used[j];
      store<C>(job.slot[k], b, len, s[k], seeds[k]);
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
  } else if (rule == "lamb") {
    fn = &run_job<Lamb<C>, C>;
  } else if (rule == "lars") {
    with_flag(flag(0), [&](auto nest) { fn = &run_job<Lars<C, decltype(nest)::value>, C>; });
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
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.layout() == at::kStrided &&
                  !t.key_set().has(c10::DispatchKey::Python),
              "optimist engine: ", what, "[", i, "] must be a contiguous CPU tensor (not a ",
              "tensor subclass such as DTensor)");
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

// One optimizer step in two calls, so that every tensor is looked at once per step although the
// host scalars depend on the step count the tensors hold:
//   plan(lists, ...): the tensors of one call, checked and turned into jobs; the step counters
//     read (their next value); the version counters bumped.  lists = [params, grads, slot 0,
//     ..., slot k-1, ema] (an empty list: slot unused, no EMA); scales[k][i]: the int8 absmax
//     tensor of slot k (an empty list: not int8).  With `check`, indices the engine does not take
//     (unsupported_indices) are returned in `unsupported` and nothing else is done.
//   run(plan, rule, ...): the host scalars, prologue and rule variant set, the step counters
//     advanced, the jobs executed (touching only the jobs and the tensors' data).
// fresh[i]: state created this step (rules with a FRESH variant, e.g. SGD's first momentum
// buffer).  l2/decay: per-tensor factors (empty: use the scalar for all).
struct Plan {
  std::vector<std::vector<Tensor>> lists;  // kept alive while the plan is
  std::vector<Job> jobs;
  std::vector<uint8_t> dbl;  // per job: computes in double
  std::vector<void*> steps;  // the step counters' data (float or double, steps_dbl)
  std::vector<uint8_t> steps_dbl;
  double next_step = std::numeric_limits<double>::quiet_NaN();
  std::vector<int64_t> unsupported;
  bool ran = false;
};

// step + 1 in the counter's own precision (as torch's `state["step"] += 1`)
inline double next_count(void* data, bool dbl) {
  if (dbl) return *static_cast<double*>(data) + 1.0;
  return static_cast<double>(*static_cast<float*>(data) + 1.0f);
}

inline void store_count(void* data, bool dbl, double v) {
  if (dbl) {
    *static_cast<double*>(data) = v;
  } else {
    *static_cast<float*>(data) = static_cast<float>(v);
  }
}

// Step counter i's data, checked: a one-element float32/float64 CPU tensor.
void* step_data(const Tensor& s, size_t i) {
  TORCH_CHECK(s.defined() && s.device().is_cpu() && s.numel() == 1 &&
                  (s.scalar_type() == at::kFloat || s.scalar_type() == at::kDouble),
              "optimist engine: steps[", i, "] must be a one-element float CPU tensor");
  return s.data_ptr();
}

// The value every one of a list of scalars has, or NaN where they differ (or there are none).
struct CommonValue {
  double value = std::numeric_limits<double>::quiet_NaN();
  bool same = true, first = true;
  void add(double v) {
    if (first) {
      value = v;
      first = false;
    } else if (v != value) {
      same = false;
    }
  }
  double get() const { return same ? value : std::numeric_limits<double>::quiet_NaN(); }
};

Plan plan(std::vector<std::vector<Tensor>> lists, const std::vector<std::vector<Tensor>>& scales,
          const std::vector<Tensor>& ema_scales, const std::vector<Tensor>& steps,
          bool state_stochastic, bool param_stochastic, bool check) {
  TORCH_CHECK(lists.size() >= 3 && lists.size() <= kMaxSlots + 3,
              "optimist engine: plan needs [params, grads, slots..., ema] with at most ",
              kMaxSlots, " slots");
  Plan out;
  const size_t n = lists[0].size();
  const size_t n_slots = lists.size() - 3;
  if (check) {
    out.unsupported = unsupported_indices(lists);
    if (!out.unsupported.empty()) return out;
  }
  const std::vector<Tensor>& params = lists[0];
  const std::vector<Tensor>& grads = lists[1];
  const std::vector<Tensor>& ema = lists.back();
  TORCH_CHECK(grads.size() == n, "optimist engine: ", n, " params but ", grads.size(), " grads");
  for (size_t k = 0; k < n_slots; ++k) {
    TORCH_CHECK(lists[2 + k].empty() || lists[2 + k].size() == n, "optimist engine: slot ", k,
                " has ", lists[2 + k].size(), " tensors, expected ", n);
  }
  TORCH_CHECK(ema.empty() || ema.size() == n, "optimist engine: ema needs one per tensor");
  TORCH_CHECK(steps.empty() || steps.size() == n, "optimist engine: steps: one per tensor");
  out.jobs.resize(n);
  out.dbl.resize(n);
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
    Job& job = out.jobs[i];
    job.n = numel;
    job.param = make_store(p, pt, param_stochastic, nullptr, numel, "params", i);
    job.grad = make_store(grads[i], pt, false, nullptr, numel, "grads", i);
    for (size_t k = 0; k < n_slots; ++k) {
      const std::vector<Tensor>& slot = lists[2 + k];
      if (slot.empty()) continue;
      const Tensor* sc = scales.size() > k && !scales[k].empty() ? &scales[k][i] : nullptr;
      job.slot[k] = make_store(slot[i], pt, state_stochastic, sc, numel, "state", i);
      TORCH_CHECK(slot[i].scalar_type() == at::kChar || slot[i].sizes() == p.sizes(),
                  "optimist engine: state[", i, "] has shape ", slot[i].sizes(),
                  ", the parameter ", p.sizes());
    }
    if (!ema.empty()) {
      const Tensor* sc = ema_scales.empty() ? nullptr : &ema_scales[i];
      job.slot[kEmaSlot] = make_store(ema[i], pt, state_stochastic, sc, numel, "ema", i);
    }
    out.dbl[i] = compute_is_double(pt);
  }
  out.steps.resize(steps.size());
  out.steps_dbl.resize(steps.size());
  CommonValue next;
  for (size_t i = 0; i < steps.size(); ++i) {
    out.steps[i] = step_data(steps[i], i);
    out.steps_dbl[i] = steps[i].scalar_type() == at::kDouble;
    next.add(next_count(out.steps[i], out.steps_dbl[i]));
  }
  out.next_step = next.get();
  // the in-place update ahead (plan and run are called together; a bump alone is harmless);
  // the gradients are only read
  for (size_t k = 0; k < lists.size(); ++k) {
    if (k == 1) continue;
    for (const Tensor& t : lists[k]) bump(t);
  }
  out.lists = std::move(lists);
  return out;
}

void run(Plan& plan, const std::string& rule, const std::vector<bool>& flags, int64_t fresh_flag,
         const std::vector<double>& hyper, const std::vector<bool>& fresh, double grad_scale,
         double clip_value, bool clip_first, bool maximize, const std::vector<double>& l2,
         const std::vector<double>& decay, double l2_all, double decay_all, double ema_decay,
         int64_t seed, const std::vector<double>& tensor_hyper) {
  TORCH_CHECK(plan.unsupported.empty(), "optimist engine: the plan has unsupported tensors");
  TORCH_CHECK(!plan.ran, "optimist engine: a plan runs once");
  TORCH_CHECK(hyper.size() <= 12, "optimist engine: at most 12 host scalars");
  const size_t n = plan.jobs.size();
  // tensor_hyper: each tensor's own scalars (as many per tensor), after the shared ones
  const size_t per_tensor = n == 0 ? 0 : tensor_hyper.size() / n;
  TORCH_CHECK(per_tensor * n == tensor_hyper.size() && hyper.size() + per_tensor <= 12,
              "optimist engine: tensor_hyper needs the same number of scalars per tensor, at "
              "most 12 with the shared ones");
  TORCH_CHECK(l2.empty() || l2.size() == n, "optimist engine: l2 needs one factor per tensor");
  TORCH_CHECK(decay.empty() || decay.size() == n, "optimist engine: decay: one per tensor");
  plan.ran = true;
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
  Prologue pro = make_prologue(grad_scale, clip_value, clip_first, maximize, l2_all);
  pro.decay = decay_all;
  pro.ema_decay = ema_decay;
  for (size_t i = 0; i < n; ++i) {
    Job& job = plan.jobs[i];
    job.pro = pro;
    if (!l2.empty()) job.pro.l2 = l2[i];
    if (!decay.empty()) job.pro.decay = decay[i];
    job.seed = job_seed(seed, i);
    std::copy(hyper.begin(), hyper.end(), job.hyper);
    std::copy_n(tensor_hyper.begin() + i * per_tensor, per_tensor, job.hyper + hyper.size());
    job.fn = job_fn(plan.dbl[i] != 0, i < fresh.size() && fresh[i]);
  }
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    store_count(plan.steps[i], plan.steps_dbl[i], next_count(plan.steps[i], plan.steps_dbl[i]));
  }
  pybind11::gil_scoped_release release;
  execute(plan.jobs);
}

// plan + run in one call (no step counters; the tensors not checked beforehand): for callers
// with their own checks and scalars, e.g. LAMB/LARS's trust ratios (tensor_hyper).
void step(const std::string& rule, const std::vector<bool>& flags, int64_t fresh_flag,
          const std::vector<double>& hyper, const std::vector<Tensor>& params,
          const std::vector<Tensor>& grads, const std::vector<std::vector<Tensor>>& slots,
          const std::vector<std::vector<Tensor>>& scales, const std::vector<bool>& fresh,
          double grad_scale, double clip_value, bool clip_first, bool maximize,
          const std::vector<double>& l2, const std::vector<double>& decay, double l2_all,
          double decay_all, const std::vector<Tensor>& ema, const std::vector<Tensor>& ema_scales,
          double ema_decay, bool state_stochastic, bool param_stochastic, int64_t seed,
          const std::vector<double>& tensor_hyper) {
  TORCH_CHECK(slots.size() <= kMaxSlots, "optimist engine: at most ", kMaxSlots, " state slots");
  std::vector<std::vector<Tensor>> lists{params, grads};
  lists.insert(lists.end(), slots.begin(), slots.end());
  lists.push_back(ema);
  Plan p = plan(std::move(lists), scales, ema_scales, {}, state_stochastic, param_stochastic,
                false);
  run(p, rule, flags, fresh_flag, hyper, fresh, grad_scale, clip_value, clip_first, maximize, l2,
      decay, l2_all, decay_all, ema_decay, seed, tensor_hyper);
}

// Pass 0: per tensor, the sum of squares of the gradient (after clamping to +-clip_value when
// > 0) in float64, and whether every element is finite; one read of each gradient (reduce.h).
// Tensors are split into chunks of at most kReduceChunk elements (so that both threads read),
// and kReduceStreams chunks are read together, a block of each in turn: one core streams a
// single array at about 60% of the speed at which it streams four (the hardware prefetchers
// work per stream).  Each chunk is summed block after block in its own order, so the result
// does not depend on the grouping or the number of threads.  The groups run last to first: the
// step that follows reads the tensors first to last, so it finds the gradients pass 0 read last
// still in the last-level cache (AMD's L3 keeps what L2 evicts, the most recent longest).
constexpr int64_t kReduceChunk = 1 << 20;
constexpr size_t kReduceStreams = 4;

std::tuple<Tensor, bool> grad_stats(const std::vector<Tensor>& grads, double clip_value) {
  const size_t n = grads.size();
  std::vector<Store> stores(n);
  std::vector<bool> dbl(n);
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < n; ++i) {
    const Tensor& g = grads[i];
    const int64_t numel = real_numel(g);
    stores[i] = make_store(g, g.scalar_type(), false, nullptr, numel, "grads", i);
    dbl[i] = compute_is_double(g.scalar_type());
    add_chunks(chunks, i, numel, kReduceChunk);
  }
  std::vector<double> partial(chunks.size(), 0.0);
  std::vector<uint8_t> finite(chunks.size(), 1);
  // one block of chunk c at element b: adds to partial[c], clears ok on a non-finite value
  auto block = [&](size_t c, int64_t b, int64_t len, bool& ok) {
    const Store& s = stores[chunks[c].tensor];
    alignas(64) double buf[kBlock];
    if (dbl[chunks[c].tensor]) {
      const double* x = load<double>(s, b, len, buf);
      partial[c] += clip_value > 0 ? sum_squares_clipped(x, len, clip_value, ok)
                                   : sum_squares(x, len);
    } else {
      const float* x = load<float>(s, b, len, reinterpret_cast<float*>(buf));
      partial[c] += clip_value > 0 ? sum_squares_clipped(x, len, float(clip_value), ok)
                                   : sum_squares(x, len);
    }
  };
  auto group = [&](size_t first) {
    const size_t last = std::min(chunks.size(), first + kReduceStreams);
    bool ok[kReduceStreams];
    std::fill(ok, ok + kReduceStreams, true);
    for (int64_t offset = 0;; offset += kBlock) {
      bool any = false;
      for (size_t c = first; c < last; ++c) {
        const int64_t b = chunks[c].begin + offset;
        if (b >= chunks[c].end) continue;
        block(c, b, std::min(kBlock, chunks[c].end - b), ok[c - first]);
        any = true;
      }
      if (!any) break;
    }
    for (size_t c = first; c < last; ++c) {
      // without clipping a NaN or inf value makes the sum NaN or inf
      finite[c] = clip_value > 0 ? ok[c - first] : std::isfinite(partial[c]);
    }
  };
  {
    pybind11::gil_scoped_release release;
    const auto groups = static_cast<int64_t>((chunks.size() + kReduceStreams - 1) / kReduceStreams);
    at::parallel_for(0, groups, 1, [&](int64_t a, int64_t b) {
      for (int64_t g = a; g < b; ++g) {
        group(static_cast<size_t>(groups - 1 - g) * kReduceStreams);
      }
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

// ---------------------------------------------------------------------------------------------
// Rules with a per-tensor norm pass (trust ratios: LAMB, LARS; rules.h).  Phase A here: per
// tensor, the rule's norms() over every block after the prologue (its state updates that need
// no norm, and the update direction u), with the sums of p^2 and u^2 (per block in the compute
// precision, reduce.h, across blocks in float64).  The host turns
// the norms into each tensor's scalars (all-reduced first for sharded tensors) and phase B is an
// ordinary step() with them as tensor_hyper.  Chunks as in prodigy_stats: the sums do not depend
// on the number of threads.

template <typename R, typename C>
void run_norms(const Job& job, int64_t begin, int64_t end, double* sums) {
  const R rule(job.hyper);
  alignas(64) C pbuf[kBlock], graw[kBlock], gbuf[kBlock], ubuf[kBlock];
  alignas(64) C sbuf[kMaxSlots][kBlock];
  const PrologueFn<C> prologue = select_prologue<C>(job.pro);  // decay 1: p is only read
  int used[kMaxSlots];
  int n_used = 0;
  for (int k = 0; k < kMaxSlots; ++k) {
    if (job.slot[k].kind != kAbsent) used[n_used++] = k;
  }
  uint32_t seeds[kAllSlots];
  slot_seeds(job.seed, seeds);
  bool in_place = !prepares_grad(job.pro) && job.param.kind == kNative &&
                  job.grad.kind == kNative;
  for (int j = 0; j < n_used; ++j) in_place &= job.slot[used[j]].kind == kNative;
  const int64_t block = in_place ? kBlock : kSmallBlock;
  for (int64_t b = begin; b < end; b += block) {
    const int64_t len = std::min(block, end - b);
    C* __restrict__ p = load<C>(job.param, b, len, pbuf);
    const C* g = prologue(job.pro, p, load<C>(job.grad, b, len, graw), gbuf, len);
    C* s[kMaxSlots] = {nullptr, nullptr, nullptr, nullptr};
    for (int j = 0; j < n_used; ++j) s[used[j]] = load<C>(job.slot[used[j]], b, len, sbuf[used[j]]);
    rule.norms(len, p, g, s[0], s[1], s[2], s[3], ubuf);
    sums[0] += sum_squares_block(p, len);
    sums[1] += sum_squares_block(ubuf, len);
    for (int j = 0; j < n_used; ++j) store<C>(job.slot[used[j]], b, len, s[used[j]], seeds[used[j]]);
  }
}

using NormsFn = void (*)(const Job&, int64_t, int64_t, double*);

template <typename C>
NormsFn norms_fn(const std::string& rule, const std::vector<bool>& flags) {
  const bool nesterov = !flags.empty() && flags[0];
  if (rule == "lamb") return &run_norms<Lamb<C>, C>;
  if (rule == "lars") return nesterov ? &run_norms<Lars<C, true>, C> : &run_norms<Lars<C, false>, C>;
  TORCH_CHECK(false, "optimist engine: rule '", rule, "' has no norm pass");
}

// Phase A for a list of tensors: a float64 tensor [n, 2] of the sums of p^2 and u^2.
Tensor tensor_norms(const std::string& rule, const std::vector<bool>& flags,
                    const std::vector<double>& hyper, const std::vector<Tensor>& params,
                    const std::vector<Tensor>& grads, const std::vector<std::vector<Tensor>>& slots,
                    double grad_scale, double clip_value, bool clip_first, bool maximize,
                    double l2, bool state_stochastic, int64_t seed) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n, "optimist engine: ", n, " params but ", grads.size(), " grads");
  TORCH_CHECK(slots.size() <= kMaxSlots, "optimist engine: at most ", kMaxSlots, " state slots");
  TORCH_CHECK(hyper.size() <= 12, "optimist engine: at most 12 host scalars");
  std::vector<Job> jobs(n);
  std::vector<NormsFn> fns(n);
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < n; ++i) {
    const Tensor& p = params[i];
    const at::ScalarType pt = p.scalar_type();
    TORCH_CHECK(grads[i].scalar_type() == pt && grads[i].sizes() == p.sizes(),
                "optimist engine: grads[", i, "] differs from its parameter in dtype or shape");
    const int64_t numel = real_numel(p);
    Job& job = jobs[i];
    job.n = numel;
    job.param = make_store(p, pt, false, nullptr, numel, "params", i);
    job.grad = make_store(grads[i], pt, false, nullptr, numel, "grads", i);
    for (size_t k = 0; k < slots.size(); ++k) {
      TORCH_CHECK(slots[k].size() == n, "optimist engine: slot ", k, " needs one per tensor");
      job.slot[k] = make_store(slots[k][i], pt, state_stochastic, nullptr, numel, "state", i);
    }
    job.pro = make_prologue(grad_scale, clip_value, clip_first, maximize, l2);
    job.seed = job_seed(seed, i);
    std::copy(hyper.begin(), hyper.end(), job.hyper);
    fns[i] = compute_is_double(pt) ? norms_fn<double>(rule, flags) : norms_fn<float>(rule, flags);
    add_chunks(chunks, i, numel, kParallelElems);
  }
  std::vector<double> partial(2 * chunks.size(), 0.0);
  {
    pybind11::gil_scoped_release release;
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t a, int64_t b) {
      for (int64_t c = a; c < b; ++c) {
        const Chunk& ch = chunks[c];
        fns[ch.tensor](jobs[ch.tensor], ch.begin, ch.end, &partial[2 * c]);
      }
    });
  }
  Tensor out = torch::zeros({static_cast<int64_t>(n), 2}, torch::kFloat64);
  double* o = out.data_ptr<double>();
  for (size_t c = 0; c < chunks.size(); ++c) {
    o[2 * chunks[c].tensor] += partial[2 * c];
    o[2 * chunks[c].tensor + 1] += partial[2 * c + 1];
  }
  for (size_t i = 0; i < n; ++i) {
    for (const auto& slot : slots) bump(slot[i]);
  }
  return out;
}

// step += 1 for each (one-element float32/float64) step tensor, in its own precision; returns
// the new value if all are equal, else NaN.
double advance_steps(const std::vector<Tensor>& steps) {
  CommonValue common;
  for (size_t i = 0; i < steps.size(); ++i) {
    void* data = step_data(steps[i], i);
    const bool dbl = steps[i].scalar_type() == at::kDouble;
    const double v = next_count(data, dbl);
    store_count(data, dbl, v);
    common.add(v);
  }
  return common.get();
}

// x *= factor for one-element float tensors (in their precision, the factor cast first, as
// torch's `tensor *= python_float`); returns the new common value or NaN.
double scale_scalars(const std::vector<Tensor>& xs, double factor) {
  CommonValue common;
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
    common.add(v);
  }
  return common.get();
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

}  // namespace optimist

using namespace optimist;  // NOLINT: the module's bindings below

// Prodigy's global pass: per tensor, <g', x0 - x> and |s'|_1 in float64, where g' is the
// gradient after the prologue the rule will apply (clip, scale, maximize, L2) and s' = beta3 s +
// weight g' is written back to s through its codec (as prodigyopt updates s in its first loop;
// the rule then leaves s alone: seeds as the rule's slot 2 in step()).  One read of g, x, x0 and
// s, one write of s; chunks and lanes as in grad_stats, so the sums do not depend on the number
// of threads.
Tensor prodigy_stats(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                     const std::vector<Tensor>& p0s, const std::vector<Tensor>& ss,
                     const std::vector<Tensor>& s_scales, double beta3, double weight,
                     double grad_scale, double clip_value, bool clip_first, bool maximize,
                     const std::vector<double>& l2, bool state_stochastic, int64_t seed) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && p0s.size() == n && ss.size() == n && l2.size() == n,
              "optimist engine: prodigy_stats needs one grad, p0, s and l2 per param");
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
    job.slot[1] = make_store(ss[i], pt, state_stochastic, sc, numel, "s", i);
    job.pro = make_prologue(grad_scale, clip_value, clip_first, maximize, l2[i]);
    job.n = numel;
    uint32_t seeds[kAllSlots];
    slot_seeds(job_seed(seed, i), seeds);
    job.seed = seeds[2];  // s is the rule's slot 2: step() would round it with this seed
    add_chunks(chunks, i, numel, kParallelElems);
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
      const PrologueFn<C> prologue = select_prologue<C>(job.pro);  // decay 1: p only read
      for (int64_t b = ch.begin; b < ch.end; b += kBlock) {
        const int64_t len = std::min(kBlock, ch.end - b);
        C* __restrict__ x = load<C>(job.param, b, len, pbuf);
        const C* __restrict__ g = load<C>(job.grad, b, len, graw);
        g = prologue(job.pro, x, g, gbuf, len);
        const C* __restrict__ x0 = load<C>(job.slot[0], b, len, x0buf);
        C* __restrict__ sv = load<C>(job.slot[1], b, len, sbuf);
        C dot[kLanes] = {}, l1[kLanes] = {};
        int64_t j = 0;
        for (; j + kLanes <= len; j += kLanes) {
          for (int k = 0; k < kLanes; ++k) {
            dot[k] += g[j + k] * (x0[j + k] - x[j + k]);
            const C si = fmadd(w, g[j + k], sv[j + k] * b3);
            sv[j + k] = si;
            l1[k] += std::abs(si);  // before s is rounded to its storage format
          }
        }
        for (; j < len; ++j) {
          dot[0] += g[j] * (x0[j] - x[j]);
          const C si = fmadd(w, g[j], sv[j] * b3);
          sv[j] = si;
          l1[0] += std::abs(si);
        }
        store<C>(job.slot[1], b, len, sv, job.seed);
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
  for (const Tensor& s : ss) bump(s);
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
  py::class_<Plan>(m, "Plan")
      .def_readonly("unsupported", &Plan::unsupported)
      .def_readonly("step", &Plan::next_step);
  m.def("plan", &plan, py::arg("lists"), py::arg("scales"), py::arg("ema_scales"),
        py::arg("steps"), py::arg("state_stochastic"), py::arg("param_stochastic"),
        py::arg("check"));
  m.def("run", &run, py::arg("plan"), py::arg("rule"), py::arg("flags"), py::arg("fresh_flag"),
        py::arg("hyper"), py::arg("fresh"), py::arg("grad_scale"), py::arg("clip_value"),
        py::arg("clip_first"), py::arg("maximize"), py::arg("l2"), py::arg("decay"),
        py::arg("l2_all"), py::arg("decay_all"), py::arg("ema_decay"), py::arg("seed"),
        py::arg("tensor_hyper") = std::vector<double>{});
  m.def("step", &step, py::arg("rule"), py::arg("flags"), py::arg("fresh_flag"),
        py::arg("hyper"), py::arg("params"), py::arg("grads"), py::arg("slots"),
        py::arg("scales"), py::arg("fresh"), py::arg("grad_scale"), py::arg("clip_value"),
        py::arg("clip_first"), py::arg("maximize"), py::arg("l2"), py::arg("decay"),
        py::arg("l2_all"), py::arg("decay_all"), py::arg("ema"), py::arg("ema_scales"),
        py::arg("ema_decay"), py::arg("state_stochastic"), py::arg("param_stochastic"),
        py::arg("seed"), py::arg("tensor_hyper") = std::vector<double>{});
  m.def("unsupported_indices", &unsupported_indices, py::arg("lists"));
  m.def("grad_stats", &grad_stats, py::arg("grads"), py::arg("clip_value") = 0.0);
  m.def("prodigy_stats", &prodigy_stats, py::arg("params"), py::arg("grads"), py::arg("p0s"),
        py::arg("ss"), py::arg("s_scales"), py::arg("beta3"), py::arg("weight"),
        py::arg("grad_scale"), py::arg("clip_value"), py::arg("clip_first"), py::arg("maximize"),
        py::arg("l2"), py::arg("state_stochastic"), py::arg("seed"));
  m.def("tensor_norms", &tensor_norms, py::arg("rule"), py::arg("flags"), py::arg("hyper"),
        py::arg("params"), py::arg("grads"), py::arg("slots"), py::arg("grad_scale"),
        py::arg("clip_value"), py::arg("clip_first"), py::arg("maximize"), py::arg("l2"),
        py::arg("state_stochastic"), py::arg("seed"));
  m.def("advance_steps", &advance_steps, py::arg("steps"));
  m.def("scale_scalars", &scale_scalars, py::arg("xs"), py::arg("factor"));
  m.def("quantize", &quantize, py::arg("x"));
  m.def("dequantize", &dequantize, py::arg("q"), py::arg("scale"));
}
