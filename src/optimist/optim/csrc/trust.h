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
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace optimist {

using at::Tensor;

// The block length of run_norms over a job: kBlock where every stream is used in place, else
// kSmallBlock (the buffers of decoded values stay in L1).  kParallelElems is a multiple of both.
int64_t norm_block(const Job& job) {
  bool in_place = !prepares_grad(job.pro) && job.param.kind == kNative &&
                  job.grad.kind == kNative;
  for (int k = 0; k < kMaxSlots; ++k) in_place &= job.slot[k].kind == kNative ||
                                                  job.slot[k].kind == kAbsent;
  return in_place ? kBlock : kSmallBlock;
}

// Phase A over elements [begin, end) of one tensor (begin a multiple of norm_block(job)): the
// rule's norms() block by block, each block's sums of p^2 and u^2 written to blocks[2k] and
// blocks[2k + 1] for its k-th block.
template <typename R, typename C>
void run_norms(const Job& job, int64_t begin, int64_t end, double* blocks) {
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
  const int64_t block = norm_block(job);
  for (int64_t b = begin; b < end; b += block, blocks += 2) {
    const int64_t len = std::min(block, end - b);
    C* __restrict__ p = load<C>(job.param, b, len, pbuf);
    const C* g = prologue(job.pro, p, load<C>(job.grad, b, len, graw), gbuf, len);
    C* s[kMaxSlots] = {nullptr, nullptr, nullptr, nullptr};
    for (int j = 0; j < n_used; ++j) s[used[j]] = load<C>(job.slot[used[j]], b, len, sbuf[used[j]]);
    const C* u = rule.norms(len, p, g, s[0], s[1], s[2], s[3], ubuf);
    sum_squares_pair<C>(p, u, len, blocks);
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

// A tensor's two sums from its blocks' (run_norms): per chunk of kParallelElems elements, the
// blocks added in order from 0, and the chunks added in order, so that the sums depend neither
// on the number of threads nor on how the blocks were shared among them.
void sum_blocks(const double* blocks, int64_t n_blocks, int64_t block, double* sums) {
  const int64_t per_chunk = kParallelElems / block;
  sums[0] = sums[1] = 0.0;
  for (int64_t c = 0; c < n_blocks; c += per_chunk) {
    double chunk[2] = {0.0, 0.0};
    for (int64_t k = c; k < std::min(n_blocks, c + per_chunk); ++k) {
      chunk[0] += blocks[2 * k];
      chunk[1] += blocks[2 * k + 1];
    }
    sums[0] += chunk[0];
    sums[1] += chunk[1];
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
// where either norm is 0 (as Optax); with norm_decay > 0 (LARS as its paper: u is then g)
// scale * coefficient * ||p|| / (||u|| + norm_decay ||p|| + eps), 1 where ||p|| or the
// denominator is 0.  The operations of trust_ratio._ratio, in float64.
double trust_scalar(const double* sums, double scale, double coefficient, double eps,
                    double norm_decay) {
  const double p_norm = std::sqrt(sums[0]), u_norm = std::sqrt(sums[1]);
  if (norm_decay == 0.0) {
    if (p_norm == 0.0 || u_norm == 0.0) return scale;
    return scale * (coefficient * p_norm / (u_norm + eps));
  }
  const double denominator = u_norm + norm_decay * p_norm + eps;
  if (p_norm == 0.0 || denominator == 0.0) return scale;
  return scale * (coefficient * p_norm / denominator);
}

// A trust-ratio step (LAMB, LARS) over a plan, in one call: phase A (run_norms), each tensor's
// scalar (trust_scalar, appended to the shared host scalars `hyper`), phase B (the rule's
// functor).  Without `reduce`, tensor by tensor, so that phase B's second read of p, g (LARS) or
// m, v, p (LAMB) comes from the caches, not memory, in one parallel region: a tensor of more
// than half a thread's share of the step is shared among the threads block by block (evenly),
// each thread runs phase A over its share, waits for the others (one barrier per such tensor),
// computes the tensor's scalar from every block's sums and runs phase B over the same share;
// every other tensor (smaller ones in groups of at most kParallelElems elements) then goes
// whole, largest first, to whichever thread is free, so that a thread held up (preempted)
// stalls no other: sharing every tensor, as before, put 33 barriers in a 10M-parameter step,
// and with 2 threads on a loaded machine each thread spun at them for the other (37 ms of CPU
// per step against 3.8 ms of work).  A whole tensor's phase B reads from L3 rather than L2,
// at the same CPU time per element here.  With
// `reduce` (a Python callable taking and returning the float64 [n, 2] sums, e.g. an all-reduce
// of sharded tensors' rows): phase A over every tensor, then `reduce`, then phase B over every
// tensor.  The same sums either way (sum_blocks).  Returns the sums.
Tensor trust_step(Plan& plan, const std::string& rule, const std::vector<bool>& flags,
                  const std::vector<double>& hyper, bool maximize, bool grad_in_update,
                  double scale, double coefficient, double eps, int64_t seed,
                  const pybind11::object& reduce, double norm_decay) {
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
  // per tensor: its blocks' sums at offset[i] in `blocks` (2 doubles per block)
  std::vector<int64_t> offset(n + 1, 0);
  for (size_t i = 0; i < n; ++i) {
    Job& job = jobs[i];
    job.pro = pro_a;
    job.seed = job_seed(seed, i);
    std::copy(hyper.begin(), hyper.end(), job.hyper);
    job.hyper[own] = 0.0;
    job.fn = step_fns[plan.dbl[i]];
    const int64_t block = norm_block(job);
    offset[i + 1] = offset[i] + 2 * ((job.n + block - 1) / block);
  }
  store_next_steps(plan);
  Tensor out = torch::zeros({static_cast<int64_t>(n), 2}, torch::kFloat64);
  double* sums = out.data_ptr<double>();
  // (not zeroed: every block is written before it is read)
  const std::unique_ptr<double[]> block_sums(new double[static_cast<size_t>(offset[n])]);
  double* const blocks = block_sums.get();
  // phase A over [first, last) of tensor i's blocks; its sums once every block is in
  auto norms = [&](size_t i, int64_t first, int64_t last) {
    const Job& job = jobs[i];
    const int64_t block = norm_block(job);
    if (first < last) {
      norm_fns[plan.dbl[i]](job, first * block, std::min(job.n, last * block),
                            blocks + offset[i] + 2 * first);
    }
  };
  auto total = [&](size_t i, double* s) {
    const int64_t block = norm_block(jobs[i]);
    sum_blocks(blocks + offset[i], (jobs[i].n + block - 1) / block, block, s);
  };
  // phase B over [first, last) of tensor i's blocks with the scalar of the sums s
  auto update = [&](size_t i, int64_t first, int64_t last, const double* s) {
    Job job = jobs[i];  // (a copy per thread: the scalar and prologue are the thread's own)
    const int64_t block = norm_block(job);
    job.hyper[own] = trust_scalar(s, scale, coefficient, eps, norm_decay);
    job.pro = pro_b;
    if (first < last) update_backwards(job, first * block, std::min(job.n, last * block));
  };
  auto n_blocks = [&](size_t i) {
    const int64_t block = norm_block(jobs[i]);
    return (jobs[i].n + block - 1) / block;
  };
  // Shared tensors (each split among the threads, one barrier each) and items (a tensor or a
  // group of consecutive small ones, whole to one thread).  A tensor is shared only where going
  // whole would leave the threads uneven (more than half a thread's share of the step); the
  // items go largest first to whichever thread is free, so no thread waits on another before
  // the end, and a thread held up (preempted) has its items taken by the others.
  // With `reduce`, every tensor of more than kParallelElems elements is shared.
  const int threads = at::get_num_threads();
  int64_t all_elems = 0;
  for (const Job& job : jobs) all_elems += job.n;
  const int64_t share_above =
      reduce.is_none() ? std::max(kParallelElems, all_elems / (2 * threads)) : kParallelElems;
  std::vector<size_t> large;
  std::vector<std::pair<size_t, size_t>> groups;
  std::vector<int64_t> group_elems;
  for (size_t first = 0; first < n;) {
    int64_t elems = jobs[first].n;
    size_t last = first + 1;
    while (last < n && elems + jobs[last].n <= kParallelElems) elems += jobs[last++].n;
    if (last - first == 1 && elems > share_above) {
      large.push_back(first);
    } else {
      groups.emplace_back(first, last);
      group_elems.push_back(elems);
    }
    first = last;
  }
  if (reduce.is_none()) {
    std::vector<size_t> order(groups.size());
    for (size_t g = 0; g < order.size(); ++g) order[g] = g;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return group_elems[a] > group_elems[b]; });
    pybind11::gil_scoped_release release;
    std::atomic<size_t> next_group{0};
    auto work = [&](int tid, int nt) {
      for (const size_t i : large) {
        const auto [first, last] = even_share(n_blocks(i), tid, nt);
        norms(i, first, last);
        if (nt > 1) {
#pragma omp barrier
        }
        double s[2];
        total(i, s);
        if (tid == 0) std::copy(s, s + 2, sums + 2 * i);
        update(i, first, last, s);
      }
      for (size_t k; (k = next_group.fetch_add(1)) < order.size();) {
        const auto [first, last] = groups[order[k]];
        for (size_t i = first; i < last; ++i) norms(i, 0, n_blocks(i));
        for (size_t i = first; i < last; ++i) {
          total(i, sums + 2 * i);
          update(i, 0, n_blocks(i), sums + 2 * i);
        }
      }
    };
    if (threads == 1 || (large.empty() && groups.size() <= 1)) {
      work(0, 1);
    } else {
#pragma omp parallel num_threads(threads)
      work(omp_get_thread_num(), omp_get_num_threads());
    }
    return out;
  }
  {
    pybind11::gil_scoped_release release;
    for (const size_t i : large) {
      at::parallel_for(0, n_blocks(i), kParallelElems / norm_block(jobs[i]),
                       [&](int64_t a, int64_t b) { norms(i, a, b); });
    }
    at::parallel_for(0, static_cast<int64_t>(groups.size()), 1, [&](int64_t a, int64_t b) {
      for (int64_t g = a; g < b; ++g) {
        for (size_t i = groups[g].first; i < groups[g].second; ++i) norms(i, 0, n_blocks(i));
      }
    });
    for (size_t i = 0; i < n; ++i) total(i, sums + 2 * i);
  }
  Tensor reduced = reduce(out).cast<Tensor>();
  TORCH_CHECK(reduced.scalar_type() == at::kDouble && reduced.device().is_cpu() &&
                  reduced.sizes() == out.sizes(),
              "optimist engine: reduce must return the float64 CPU sums of shape [", n, ", 2]");
  out = reduced.contiguous();
  const double* reduced_sums = out.data_ptr<double>();
  {
    pybind11::gil_scoped_release release;
    for (const size_t i : large) {
      at::parallel_for(0, n_blocks(i), kParallelElems / norm_block(jobs[i]),
                       [&](int64_t a, int64_t b) { update(i, a, b, reduced_sums + 2 * i); });
    }
    at::parallel_for(0, static_cast<int64_t>(groups.size()), 1, [&](int64_t a, int64_t b) {
      for (int64_t g = a; g < b; ++g) {
        for (size_t i = groups[g].first; i < groups[g].second; ++i) {
          update(i, 0, n_blocks(i), reduced_sums + 2 * i);
        }
      }
    });
  }
  return out;
}

}  // namespace optimist
