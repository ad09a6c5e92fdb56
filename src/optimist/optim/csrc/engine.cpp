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
// rule_fn() below.  Headers of this one translation unit hold the rest: the codecs (and the
// int8 codec's own entry points) in codecs.h, pass 0's block reduction in reduce.h, the checks
// of which tensors the engine takes in checks.h; built on the core here, the Python-facing step
// (plan, run, the step counters) in plan.h, the reduction passes over tensors (grad_stats,
// prodigy_stats) in norms.h and the trust-ratio rules' two-phase step (trust_step) in trust.h.
// The functor sees only compute-precision pointers (float for float32/bfloat16/float16
// parameters, double for float64) to the
// parameter, the prepared gradient and up to four state slots, over one block of at most kBlock
// elements (or over a job's whole range when every tensor is used in place and nothing runs
// around the rule: a functor must not assume n <= kBlock); the engine decodes what is not
// stored in that precision into L1-resident block buffers before the call, runs the prologue
// on the block (or, for a rule that takes it into its loop, kFusesPrologue, hands it to the
// rule as an element function), and encodes after, so that memory is still read and written
// once.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
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

// The prologue of one element: decoupled decay of the parameter, then the gradient the rule sees.
// The operation order is torch's: clip_grad_* before the step, then `-grad` for maximize, then
// `grad.add(param, alpha=weight_decay)` with the decayed parameter.  The flags say which steps
// run (chosen once per job), so that each is one more operation on a value in a register.
template <typename C, bool DECAY, bool GRAD, bool CLIP, bool FIRST, bool SCALED, bool L2>
struct ElementPrologue {
  C decay, scale, sgn, l2, hi, lo;
  explicit ElementPrologue(const Prologue& pr)
      : decay(C(pr.decay)), scale(C(pr.grad_scale)), sgn(C(pr.sign)), l2(C(pr.l2)),
        hi(C(pr.clip_value)), lo(-C(pr.clip_value)) {}
  OPTIMIST_INLINE C param(C p) const { return DECAY ? p * decay : p; }
  OPTIMIST_INLINE C grad(C g, C p) const {
    if constexpr (GRAD) {
      if constexpr (CLIP && FIRST) g = std::min(std::max(g, lo), hi);
      if constexpr (SCALED) g = g * scale;
      if constexpr (CLIP && !FIRST) g = std::min(std::max(g, lo), hi);
      g = g * sgn;
      if constexpr (L2) g = fmadd(l2, p, g);
    }
    return g;
  }
};

// The prologue on one block as a pass of its own, in place and in L1 (the block was just
// loaded, so this costs no memory traffic of its own): the parameter decayed in place, the
// gradient written to `out` unless nothing changes it.  For rules that do not take the
// prologue into their loop (kFusesPrologue), and for clipping by value.
template <typename C>
using PrologueFn = const C* (*)(const Prologue&, C* __restrict__, const C* __restrict__,
                                C* __restrict__, int64_t);

template <typename C, bool DECAY, bool GRAD, bool CLIP, bool FIRST, bool SCALED, bool L2>
const C* prologue_block(const Prologue& pr, C* __restrict__ p, const C* __restrict__ graw,
                        C* __restrict__ out, int64_t n) {
  const ElementPrologue<C, DECAY, GRAD, CLIP, FIRST, SCALED, L2> e(pr);
  for (int64_t i = 0; i < n; ++i) {
    const C pi = e.param(p[i]);
    if constexpr (DECAY) p[i] = pi;
    if constexpr (GRAD) out[i] = e.grad(graw[i], pi);
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

// f(pre) with the ElementPrologue of `pr`, which must not clip by value (that stays a pass of
// its own, so that the rules' loops are compiled in 10 variants, not 40).
template <typename C, typename F>
void with_element_prologue(const Prologue& pr, F&& f) {
  with_flag(pr.decay != 1.0, [&](auto decay) {
    constexpr bool kDecay = decltype(decay)::value;
    if (!prepares_grad(pr)) {
      f(ElementPrologue<C, kDecay, false, false, false, false, false>(pr));
      return;
    }
    with_flag(pr.grad_scale != 1.0, [&](auto scaled) {
      with_flag(pr.l2 != 0.0, [&](auto l2) {
        f(ElementPrologue<C, kDecay, true, false, false, decltype(scaled)::value,
                          decltype(l2)::value>(pr));
      });
    });
  });
}

// Whether rule R takes the prologue into its loop: `static constexpr bool kFusesPrologue =
// true` and `template <typename Pre> operator()(n, p, g, s0..s3, pre)` (rules.h).
template <typename R, typename = void>
constexpr bool kFusesPrologue = false;
template <typename R>
constexpr bool kFusesPrologue<R, std::void_t<decltype(R::kFusesPrologue)>> = R::kFusesPrologue;

// One job over elements [begin, end): decode (load), the prologue (a pass of its own where
// `prologue` is set, else in the rule's loop through `pre`), rule, epilogue, encode (store).
// Where every stream is used in place and nothing runs as a pass besides the rule, one call
// over the whole range, as the per-optimizer kernels did (per 4 KiB block, the calls and the
// codec switches cost 1-3% of a 10M step, and a separate decay pass 3% of AdamW's).  Else block
// by block, small blocks (kSmallBlock) where a pass over the gradient runs, so that the memory
// streams the step reads and writes advance together: with 4 KiB blocks, a pass over one
// stream at a time (the prologue over the gradient, the decode of one state slot) left the
// memory system idle on the others (maximize-only Adam took 1.2-1.3x the plain step).
template <typename R, typename C, typename Pre>
void run_blocks(const Job& job, int64_t begin, int64_t end, Pre pre, PrologueFn<C> prologue) {
  const R rule(job.hyper);
  alignas(64) C pbuf[kBlock], graw[kBlock], gbuf[kBlock];
  alignas(64) C sbuf[kAllSlots][kBlock];
  const Prologue& pr = job.pro;
  int used[kAllSlots];  // the slots present, in order
  int n_used = 0;
  for (int k = 0; k < kAllSlots; ++k) {
    if (job.slot[k].kind != kAbsent) used[n_used++] = k;
  }
  uint32_t seeds[kAllSlots];
  slot_seeds(job.seed, seeds);
  bool native = job.param.kind == kNative && job.grad.kind == kNative;
  for (int j = 0; j < n_used; ++j) native &= job.slot[used[j]].kind == kNative;
  const bool ema = job.slot[kEmaSlot].kind != kAbsent;
  const bool grad_pass = prologue != nullptr && prepares_grad(pr);
  const int64_t block = native && !ema && prologue == nullptr ? end - begin
                        : native && !grad_pass                ? kBlock
                                                              : kSmallBlock;
  for (int64_t b = begin; b < end; b += block) {
    const int64_t len = std::min(block, end - b);
    C* __restrict__ p = load<C>(job.param, b, len, pbuf);
    const C* g = load<C>(job.grad, b, len, graw);
    if (prologue != nullptr) g = prologue(pr, p, g, gbuf, len);
    C* s[kAllSlots] = {nullptr, nullptr, nullptr, nullptr, nullptr};
    for (int j = 0; j < n_used; ++j) {
      const int k = used[j];
      s[k] = load<C>(job.slot[k], b, len, sbuf[k]);
    }
    if constexpr (kFusesPrologue<R>) {
      rule(len, p, g, s[0], s[1], s[2], s[3], pre);
    } else {
      rule(len, p, g, s[0], s[1], s[2], s[3]);
    }
    if (C* __restrict__ e = s[kEmaSlot]) {
      const C d = C(pr.ema_decay), od = C(1) - C(pr.ema_decay);
      for (int64_t i = 0; i < len; ++i) e[i] = fmadd(od, p[i], e[i] * d);
    }
    store<C>(job.param, b, len, p, job.seed);
    store_slots<C>(job.slot, used, n_used, b, len, s, seeds);
  }
}

template <typename R, typename C>
void run_job(const Job& job, int64_t begin, int64_t end) {
  if constexpr (kFusesPrologue<R>) {
    if (job.pro.clip_value <= 0.0) {
      with_element_prologue<C>(job.pro, [&](auto pre) {
        run_blocks<R, C>(job, begin, end, pre, nullptr);
      });
      return;
    }
  }
  const PrologueFn<C> prologue = select_prologue<C>(job.pro);
  run_blocks<R, C>(job, begin, end, Raw<C>{}, prologue == &no_prologue<C> ? nullptr : prologue);
}

// Thread tid's share [first, last) of n units, of nt threads: even, whole units (also
// trust.h's per-tensor shares).
inline std::pair<int64_t, int64_t> even_share(int64_t n, int tid, int nt) {
  return {n * tid / nt, n * (tid + 1) / nt};
}

// work(i, begin, end) over every element of every job i (sizes[i] elements), in one parallel
// region (one fork and join per call, where a parallel_for per job costs one per large tensor),
// for a pass over every tensor that a step follows (Prodigy's global pass): first runs of
// consecutive small jobs (at most kParallelElems elements in all, in order: they fit the caches)
// to whichever thread is free, then each job of more than kParallelElems elements, in order, cut
// into even shares of whole `unit`-element pieces, one per thread (begin is a multiple of
// `unit`), with no barrier between jobs.  Forwards throughout: reading the jobs and each share
// last to first, so that the step would find the start of each share still in the last-level
// cache, measured 4-7% slower for Prodigy's step (10M and 50M parameters, 1 and 2 threads)
// than streaming forwards.  Serial (work(i, 0, n) for each job, in the order above) on one thread,
// inside a parallel region, or with nothing to share.  Where work's results depend only on the
// element range, they do not depend on the threads.
template <typename F>
void for_jobs_shared(const std::vector<int64_t>& sizes, int64_t unit, F&& work) {
  std::vector<size_t> large;
  std::vector<std::pair<size_t, size_t>> runs;  // [first, last) of small jobs
  for (size_t first = 0; first < sizes.size();) {
    if (sizes[first] > kParallelElems) {
      large.push_back(first++);
      continue;
    }
    int64_t elems = sizes[first];
    size_t last = first + 1;
    while (last < sizes.size() && sizes[last] <= kParallelElems &&
           elems + sizes[last] <= kParallelElems) {
      elems += sizes[last++];
    }
    runs.emplace_back(first, last);
    first = last;
  }
  auto small_run = [&](const std::pair<size_t, size_t>& run) {
    for (size_t i = run.first; i < run.second; ++i) {
      if (sizes[i] > 0) work(i, int64_t{0}, sizes[i]);
    }
  };
  const int threads = at::get_num_threads();
  if (threads == 1 || at::in_parallel_region() || (large.empty() && runs.size() <= 1)) {
    for (const auto& run : runs) small_run(run);
    for (const size_t i : large) work(i, int64_t{0}, sizes[i]);
    return;
  }
  std::atomic<size_t> next_run{0};
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    for (size_t r; (r = next_run.fetch_add(1)) < runs.size();) small_run(runs[r]);
    for (const size_t i : large) {
      const auto [first, last] = even_share((sizes[i] + unit - 1) / unit, tid, nt);
      if (first < last) work(i, first * unit, std::min(sizes[i], last * unit));
    }
  }
}

// Hints to load the first KiB of each of a small job's tensors ahead of its turn: tensors of a
// few hundred bytes, each its own allocation, are too short for the hardware prefetcher, so
// after another step's work every one of them waited for memory in turn.
inline void prefetch_job(const Job& job) {
  const int64_t bytes = std::min<int64_t>(job.n * int64_t{4}, 1024);
  auto fetch = [&](const Store& s) {
    if (s.data == nullptr) return;
    for (int64_t off = 0; off < bytes; off += 64) {
      __builtin_prefetch(static_cast<const char*>(s.data) + off);
    }
  };
  fetch(job.param);
  fetch(job.grad);
  for (const Store& s : job.slot) fetch(s);
}

// Every job: a large one shared among the threads (one parallel_for each), the small ones in one
// more.  (one region for the whole list, as for_jobs_shared, measured slower here on the loaded
// 2-core machine: 10M steps took a steady 2 or 4 scheduler ticks, 8.0 ms for SGD at 2 threads
// against 2.3-3.2 ms, for reasons not found; Prodigy's global pass uses it.)
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
  constexpr size_t kJobsAhead = 2;  // small jobs whose tensors are fetched ahead
  auto run_small = [&](size_t j0, size_t j1) {
    for (size_t j = j0; j < j1; ++j) {
      if (j + kJobsAhead < j1) prefetch_job(*small[j + kJobsAhead]);
      small[j]->fn(*small[j], 0, small[j]->n);
    }
  };
  if (small_elems <= kParallelElems || small.size() == 1) {
    run_small(0, small.size());
    return;
  }
  const int64_t count = static_cast<int64_t>(small.size());
  const int64_t mean = std::max<int64_t>(1, small_elems / count);
  const int64_t grain = std::max<int64_t>(1, kParallelElems / mean);
  at::parallel_for(0, count, grain, [&](int64_t j0, int64_t j1) { run_small(j0, j1); });
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
  } else if (rule == "ftrl") {
    fn = &run_job<Ftrl<C>, C>;
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
    with_flag(flag(0), [&](auto hess) {
      with_flag(flag(1), [&](auto max_eps) {
        fn = &run_job<SophiaG<C, decltype(hess)::value, decltype(max_eps)::value>, C>;
      });
    });
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

// The version counter of a tensor updated in place, as torch's in-place ops do (inline: one
// plan() bumps thousands).
inline void bump(const Tensor& t) {
  if (t.defined() && !t.is_inference()) t.unsafeGetTensorImpl()->bump_version();
}

}  // namespace optimist

// The Python-facing functions built on the core above (headers of this translation unit).
#include "plan.h"
#include "norms.h"
#include "trust.h"

using namespace optimist;  // NOLINT: the module's bindings below

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
        py::arg("l2_all"), py::arg("decay_all"), py::arg("ema_decay"), py::arg("seed"));
  m.def("unsupported_indices", &unsupported_indices_of, py::arg("lists"));
  m.def("grads", &grads_of, py::arg("params"));
  m.def("grad_stats", &grad_stats, py::arg("grads"), py::arg("clip_value") = 0.0);
  m.def("grad_total", &grad_total, py::arg("grads"), py::arg("clip_value") = 0.0);
  m.def("prodigy_stats", &prodigy_stats, py::arg("params"), py::arg("grads"), py::arg("p0s"),
        py::arg("ss"), py::arg("s_scales"), py::arg("beta3"), py::arg("weight"),
        py::arg("grad_scale"), py::arg("clip_value"), py::arg("clip_first"), py::arg("maximize"),
        py::arg("l2"), py::arg("state_stochastic"), py::arg("seed"));
  m.def("prodigy_plan_stats", &prodigy_plan_stats, py::arg("plan"), py::arg("p0s"),
        py::arg("beta3"), py::arg("weight"), py::arg("grad_scale"), py::arg("clip_value"),
        py::arg("clip_first"), py::arg("maximize"), py::arg("l2"), py::arg("seed"));
  m.def("trust_step", &trust_step, py::arg("plan"), py::arg("rule"), py::arg("flags"),
        py::arg("hyper"), py::arg("maximize"), py::arg("grad_in_update"), py::arg("scale"),
        py::arg("coefficient"), py::arg("eps"), py::arg("seed"), py::arg("reduce") = py::none(),
        py::arg("norm_decay") = 0.0);
  m.def("advance_steps", &advance_steps, py::arg("steps"));
  m.def("scale_scalars", &scale_scalars, py::arg("xs"), py::arg("factor"));
  m.def("quantize", &quantize, py::arg("x"));
  m.def("dequantize", &dequantize, py::arg("q"), py::arg("scale"));
}
