// optimist engine: the trust-ratio rules' step (LAMB, LARS; a header of engine.cpp, one
// translation unit, included after plan.h).  Their update is scaled per tensor by
// ||p|| / ||u||, known only after a full read, so each tensor is read twice: phase A
// (run_norms) runs the rule's norms() over every block after the prologue (its state updates
// that need no norm, and the update direction u) and sums p^2 and u^2 (per block in the
// compute precision, reduce.h, across blocks in float64); trust_step turns each tensor's sums
// into its scalar and runs phase B, the rule's functor (rules.h), with it.
#pragma once

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace optimist {

using at::Tensor;

// Phase A over elements [begin, end) of one tensor: the rule's norms() block by block, with the
// blocks' sums of p^2 and u^2 added to sums[0] and sums[1].
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

// Phase A of one tensor: its sums of p^2 and u^2 added to sums[0], sums[1].  Chunks of
// kParallelElems elements, each summed block after block from zero and added in order, so that
// the sums do not depend on the number of threads nor on which tensors are read together.
void norms_of(const Job& job, NormsFn fn, double* sums) {
  const int64_t chunks = (job.n + kParallelElems - 1) / kParallelElems;
  if (chunks == 1) {  // (no allocation for small tensors)
    double partial[2] = {0.0, 0.0};
    fn(job, 0, job.n, partial);
    sums[0] += partial[0];
    sums[1] += partial[1];
    return;
  }
  std::vector<double> partial(2 * chunks, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t a, int64_t b) {
    for (int64_t c = a; c < b; ++c) {
      fn(job, c * kParallelElems, std::min(job.n, (c + 1) * kParallelElems), &partial[2 * c]);
    }
  });
  for (int64_t c = 0; c < chunks; ++c) {
    sums[0] += partial[2 * c];
    sums[1] += partial[2 * c + 1];
  }
}

// Phase B of one tensor over [begin, end), last piece first: phase A read the tensor first to
// last, so its end is what the caches still hold (L2, then the L3 that keeps what L2 evicts).
// Each piece runs forwards (one prefetched stream per array).  Pieces of kTrustPiece elements
// (4 MiB of each float32 array: several times L2, a fraction of L3) measured faster at 50M
// parameters than pieces of kParallelElems (a stream restarted every 128 KiB) and than one
// forward pass.
constexpr int64_t kTrustPiece = 1 << 20;

void update_backwards(const Job& job, int64_t begin, int64_t end) {
  for (int64_t e = end; e > begin;) {
    const int64_t b = std::max(begin, (e - 1) / kTrustPiece * kTrustPiece);
    job.fn(job, b, e);
    e = b;
  }
}

// Each tensor's phase-B scalar, scale * coefficient * ||p|| / (||u|| + eps), with the ratio 1
// where either norm is 0 (as Optax; the operations of trust_ratio.trust_ratio, in float64).
double trust_scalar(const double* sums, double scale, double coefficient, double eps) {
  const double p_norm = std::sqrt(sums[0]), u_norm = std::sqrt(sums[1]);
  if (p_norm == 0.0 || u_norm == 0.0) return scale;
  return scale * (coefficient * p_norm / (u_norm + eps));
}

// A trust-ratio step (LAMB, LARS) over a plan, in one call: phase A (run_norms), each tensor's
// scalar (trust_scalar, appended to the shared host scalars `hyper`), phase B (the rule's
// functor).  Without `reduce`, tensor by tensor: tensors of more than kParallelElems elements
// one at a time and smaller ones in groups of at most that many, phase B right after the
// group's phase A, so that its second read of p, g (LARS) or m, v, p (LAMB) comes from the
// caches, not memory.  With `reduce` (a Python callable taking and returning the float64
// [n, 2] sums, e.g. an all-reduce of sharded tensors' rows): phase A over every tensor, then
// `reduce`, then phase B over every tensor.  The same sums either way.  Returns the sums.
Tensor trust_step(Plan& plan, const std::string& rule, const std::vector<bool>& flags,
                  const std::vector<double>& hyper, bool maximize, bool grad_in_update,
                  double scale, double coefficient, double eps, int64_t seed,
                  const pybind11::object& reduce) {
  TORCH_CHECK(plan.unsupported.empty(), "optimist engine: the plan has unsupported tensors");
  TORCH_CHECK(!plan.ran, "optimist engine: a plan runs once");
  TORCH_CHECK(hyper.size() < 12, "optimist engine: at most 11 shared host scalars");
  plan.ran = true;
  std::vector<Job>& jobs = plan.jobs;
  const size_t n = jobs.size();
  const size_t own = hyper.size();  // the index of the tensor's scalar in job.hyper
  using JobFn = void (*)(const Job&, int64_t, int64_t);
  const JobFn step_fns[2] = {rule_fn<float>(rule, flags), rule_fn<double>(rule, flags)};
  const NormsFn norm_fns[2] = {norms_fn<float>(rule, flags), norms_fn<double>(rule, flags)};
  const Prologue pro_a = make_prologue(1.0, 0.0, true, maximize, 0.0);
  const Prologue pro_b = make_prologue(1.0, 0.0, true, maximize && grad_in_update, 0.0);
  for (size_t i = 0; i < n; ++i) {
    Job& job = jobs[i];
    job.pro = pro_a;
    job.seed = job_seed(seed, i);
    std::copy(hyper.begin(), hyper.end(), job.hyper);
    job.hyper[own] = 0.0;
    job.fn = step_fns[plan.dbl[i]];
  }
  store_next_steps(plan);
  Tensor out = torch::zeros({static_cast<int64_t>(n), 2}, torch::kFloat64);
  const double* sums = out.data_ptr<double>();
  auto phase_a = [&](size_t first, size_t last) {
    double* s = out.data_ptr<double>();
    for (size_t i = first; i < last; ++i) norms_of(jobs[i], norm_fns[plan.dbl[i]], s + 2 * i);
  };
  auto phase_b = [&](size_t first, size_t last) {
    for (size_t i = first; i < last; ++i) {
      jobs[i].hyper[own] = trust_scalar(sums + 2 * i, scale, coefficient, eps);
      jobs[i].pro = pro_b;
    }
    if (last - first == 1 && jobs[first].n > kParallelElems) {
      const Job& job = jobs[first];
      const int64_t blocks = (job.n + kBlock - 1) / kBlock;
      at::parallel_for(0, blocks, kParallelElems / kBlock, [&](int64_t b0, int64_t b1) {
        update_backwards(job, b0 * kBlock, std::min(job.n, b1 * kBlock));
      });
      return;
    }
    for (size_t i = first; i < last; ++i) jobs[i].fn(jobs[i], 0, jobs[i].n);
  };
  // groups of tensors: [first, next(first))
  auto next = [&](size_t first) {
    int64_t elems = jobs[first].n;
    size_t last = first + 1;
    while (last < n && elems + jobs[last].n <= kParallelElems) elems += jobs[last++].n;
    return last;
  };
  if (reduce.is_none()) {
    pybind11::gil_scoped_release release;
    for (size_t first = 0; first < n;) {
      const size_t last = next(first);
      phase_a(first, last);
      phase_b(first, last);
      first = last;
    }
    return out;
  }
  {
    pybind11::gil_scoped_release release;
    for (size_t first = 0; first < n; first = next(first)) phase_a(first, next(first));
  }
  Tensor reduced = reduce(out).cast<Tensor>();
  TORCH_CHECK(reduced.scalar_type() == at::kDouble && reduced.device().is_cpu() &&
                  reduced.sizes() == out.sizes(),
              "optimist engine: reduce must return the float64 CPU sums of shape [", n, ", 2]");
  out = reduced.contiguous();
  sums = out.data_ptr<double>();
  {
    pybind11::gil_scoped_release release;
    for (size_t first = 0; first < n; first = next(first)) phase_b(first, next(first));
  }
  return out;
}

}  // namespace optimist
