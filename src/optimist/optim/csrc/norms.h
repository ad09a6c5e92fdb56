// optimist engine: the reduction passes over tensors (a header of engine.cpp, one translation
// unit): pass 0 (grad_stats, grad_total: per tensor, the gradient's sum of squares and
// finiteness) and Prodigy's global pass (prodigy_stats, prodigy_plan_stats).  Per block in
// reduce.h's sums or the rule's own; chunked so that the sums do not depend on the number of
// threads.  Built on engine.cpp's core (Job, Chunk, make_store, select_prologue) and plan.h's
// Plan (Prodigy's pass over a planned step), included after them.
#pragma once

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace optimist {

using at::Tensor;

// Pass 0: per tensor, the sum of squares of the gradient (after clamping to +-clip_value when
// > 0) in float64, and whether every element is finite; one read of each gradient (reduce.h).
// Tensors are split into chunks of at most kReduceChunk elements, each summed block after block
// in its own order, so the result does not depend on how chunks are scheduled or on the number
// of threads.  The schedule (reduce_schedule): the chunks last to first, cut into one run per
// thread of about equal elements; a thread reads kReduceStreams chunks of its run together, a
// block of each in turn, and a stream that finishes its chunk takes the run's next one, so that
// kReduceStreams streams stay open to the end (one core streams a single array at about 60% of
// the speed at which it streams four: the hardware prefetchers work per stream; a model's
// biases and norms are chunks of a few hundred elements, done in one block).  Last to first:
// the step that follows reads the tensors first to last, so it finds the gradients pass 0 read
// last still in the last-level cache (AMD's L3 keeps what L2 evicts, the most recent longest).
constexpr int64_t kReduceChunk = 1 << 20;
constexpr int kReduceStreams = 4;

// The chunks' order of reading (last to first) cut into `parts` runs of about equal elements:
// run r is order[cuts[r], cuts[r + 1]).
std::vector<size_t> reduce_schedule(const std::vector<Chunk>& chunks, int64_t parts,
                                    std::vector<size_t>& cuts) {
  std::vector<size_t> order(chunks.size());
  int64_t total = 0;
  for (size_t c = 0; c < chunks.size(); ++c) {
    order[c] = chunks.size() - 1 - c;
    total += chunks[c].end - chunks[c].begin;
  }
  cuts.assign(1, 0);
  int64_t seen = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const Chunk& ch = chunks[order[k]];
    seen += ch.end - ch.begin;
    // close run r once it holds its share (r + 1) / parts of the elements
    while (static_cast<int64_t>(cuts.size()) < parts &&
           seen * parts >= total * static_cast<int64_t>(cuts.size())) {
      cuts.push_back(k + 1);
    }
  }
  while (static_cast<int64_t>(cuts.size()) <= parts) cuts.push_back(order.size());
  return order;
}

// Per tensor: the sum of squares (in `sums`, one per gradient); returns whether all are finite.
bool reduce_grads(const std::vector<Tensor>& grads, double clip_value, double* sums) {
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
  // one block of chunk c at element b: its sum of squares; clears ok on a non-finite value
  auto block = [&](size_t c, int64_t b, int64_t len, bool& ok) {
    const Store& s = stores[chunks[c].tensor];
    alignas(64) double buf[kBlock];
    if (dbl[chunks[c].tensor]) {
      const double* x = load<double>(s, b, len, buf);
      return clip_value > 0 ? sum_squares_clipped(x, len, clip_value, ok) : sum_squares(x, len);
    }
    const float* x = load<float>(s, b, len, reinterpret_cast<float*>(buf));
    return clip_value > 0 ? sum_squares_clipped(x, len, float(clip_value), ok)
                          : sum_squares(x, len);
  };
  // one thread's run order[first, last): kReduceStreams streams, each taking the next chunk
  const int64_t parts = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), static_cast<int64_t>(chunks.size())));
  std::vector<size_t> cuts;
  const std::vector<size_t> order = reduce_schedule(chunks, parts, cuts);
  auto run = [&](size_t first, size_t last) {
    size_t chunk[kReduceStreams];
    int64_t at[kReduceStreams];
    double sum[kReduceStreams];  // the chunk's sum so far (partial[] is written once)
    bool ok[kReduceStreams];
    int open = 0;
    size_t next = first;
    auto take = [&](int k) {  // stream k takes the run's next chunk; false when none is left
      if (next == last) return false;
      chunk[k] = order[next++];
      at[k] = chunks[chunk[k]].begin;
      sum[k] = 0.0;
      ok[k] = true;
      return true;
    };
    while (open < kReduceStreams && take(open)) ++open;
    while (open > 0) {
      for (int k = 0; k < open;) {
        const size_t c = chunk[k];
        const int64_t len = std::min(kBlock, chunks[c].end - at[k]);
        sum[k] += block(c, at[k], len, ok[k]);
        at[k] += len;
        if (at[k] < chunks[c].end) {
          ++k;
          continue;
        }
        partial[c] = sum[k];
        // without clipping a NaN or inf value makes the sum NaN or inf
        finite[c] = clip_value > 0 ? ok[k] : std::isfinite(sum[k]);
        if (take(k)) {
          ++k;
          continue;
        }
        --open;  // the last open stream moves into slot k, read next in this turn
        chunk[k] = chunk[open];
        at[k] = at[open];
        sum[k] = sum[open];
        ok[k] = ok[open];
      }
    }
  };
  {
    pybind11::gil_scoped_release release;
    at::parallel_for(0, parts, 1, [&](int64_t a, int64_t b) {
      for (int64_t r = a; r < b; ++r) run(cuts[r], cuts[r + 1]);
    });
  }
  std::fill(sums, sums + n, 0.0);
  bool all = true;
  for (size_t c = 0; c < chunks.size(); ++c) {
    sums[chunks[c].tensor] += partial[c];
    all &= finite[c] != 0;
  }
  return all;
}

std::tuple<Tensor, bool> grad_stats(const std::vector<Tensor>& grads, double clip_value) {
  Tensor sums = torch::empty({static_cast<int64_t>(grads.size())}, torch::kFloat64);
  const bool finite = reduce_grads(grads, clip_value, sums.data_ptr<double>());
  return {sums, finite};
}

// Pass 0 summed over the tensors: the total sum of squares (the per-tensor sums added in the
// order given, from 0) and whether all are finite, as Python floats: the two scalars
// clip_by_global_norm and skip_nonfinite need, with no tensor made on the way (pass 0 leaves
// every cache cold, where each torch op costs tens of microseconds).  None where the engine
// does not take the gradients (unsupported_indices), so that the caller's fallback runs.
std::optional<std::tuple<double, bool>> grad_total(const std::vector<Tensor>& grads,
                                                          double clip_value) {
  Tensors ptrs;
  for (const Tensor& g : grads) ptrs.push_back(&g);
  if (!unsupported_indices(TensorLists{ptrs, ptrs}).empty()) return std::nullopt;
  std::vector<double> sums(grads.size());
  const bool finite = reduce_grads(grads, clip_value, sums.data());
  double total = 0.0;
  for (const double v : sums) total += v;
  return std::make_tuple(total, finite);
}

// Prodigy's global pass: per tensor, <g', x0 - x> and |s'|_1 in float64, where g' is the
// gradient after the prologue the rule will apply (clip, scale, maximize, L2) and s' = beta3 s +
// weight g' is written back to s through its codec (as prodigyopt updates s in its first loop;
// the rule then leaves s alone: seeds as the rule's slot 2 in run()).  One read of g, x, x0 and
// s, one write of s; chunks and lanes as in grad_stats, so the sums do not depend on the number
// of threads.  Returns the two sums over all tensors (each tensor's, added in tensor order).
// jobs[i]: param, grad, slot[0] = x0, slot[1] = s, n, pro and seed set.
std::tuple<double, double> prodigy_sums(const std::vector<Job>& jobs,
                                        const std::vector<uint8_t>& dbl, double beta3,
                                        double weight) {
  std::vector<Chunk> chunks;
  chunks.reserve(jobs.size());
  std::vector<size_t> first_chunk(jobs.size());
  std::vector<int64_t> sizes(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    first_chunk[i] = chunks.size();
    sizes[i] = jobs[i].n;
    add_chunks(chunks, i, jobs[i].n, kParallelElems);
  }
  std::vector<double> dots(chunks.size()), norms(chunks.size());
  auto one = [&](size_t c) {
    const Chunk& ch = chunks[c];
    const Job& job = jobs[ch.tensor];
    auto body = [&](auto zero) {
      using C = decltype(zero);
      constexpr int kLanes = 16;  // independent partial sums, so the loop vectorizes
      alignas(64) C pbuf[kBlock], gbuf[kBlock], graw[kBlock], x0buf[kBlock], sbuf[kBlock];
      const C b3 = C(beta3), w = C(weight);
      const PrologueFn<C> prologue = select_prologue<C>(job.pro);  // decay 1: p only read
      double dot_sum = 0.0, norm_sum = 0.0;  // the chunk's sums, stored once at its end
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
          dot_sum += static_cast<double>(dot[k]);
          norm_sum += static_cast<double>(l1[k]);
        }
      }
      dots[c] = dot_sum;
      norms[c] = norm_sum;
    };
    if (dbl[ch.tensor]) {
      body(0.0);
    } else {
      body(0.0f);
    }
  };
  {
    // each thread its share of each tensor's chunks, forwards (for_jobs_shared)
    pybind11::gil_scoped_release release;
    for_jobs_shared(sizes, kParallelElems, [&](size_t i, int64_t begin, int64_t end) {
      const size_t first = first_chunk[i] + static_cast<size_t>(begin / kParallelElems);
      const size_t last = first_chunk[i] + static_cast<size_t>((end - 1) / kParallelElems) + 1;
      for (size_t c = first; c < last; ++c) one(c);
    });
  }
  std::vector<double> dot(jobs.size(), 0.0), norm(jobs.size(), 0.0);
  for (size_t c = 0; c < chunks.size(); ++c) {
    dot[chunks[c].tensor] += dots[c];
    norm[chunks[c].tensor] += norms[c];
  }
  double total_dot = 0.0, total_norm = 0.0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    total_dot += dot[i];
    total_norm += norm[i];
  }
  return {total_dot, total_norm};
}

// The prologue and codec seed of tensor i in Prodigy's global pass.
void prodigy_job(Job& job, size_t i, double grad_scale, double clip_value, bool clip_first,
                 bool maximize, double l2, int64_t seed) {
  job.pro = make_prologue(grad_scale, clip_value, clip_first, maximize, l2);
  uint32_t seeds[kAllSlots];
  slot_seeds(job_seed(seed, i), seeds);
  job.seed = seeds[2];  // s is the rule's slot 2: run() would round it with this seed
}

// The global pass over lists of tensors (checked here).
std::tuple<double, double> prodigy_stats(
    const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
    const std::vector<Tensor>& p0s, const std::vector<Tensor>& ss,
    const std::vector<Tensor>& s_scales, double beta3, double weight, double grad_scale,
    double clip_value, bool clip_first, bool maximize, double l2, bool state_stochastic,
    int64_t seed) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && p0s.size() == n && ss.size() == n,
              "optimist engine: prodigy_stats needs one grad, p0 and s per param");
  std::vector<Job> jobs(n);  // only the stores and the prologue are used
  std::vector<uint8_t> dbl(n);
  for (size_t i = 0; i < n; ++i) {
    const at::ScalarType pt = params[i].scalar_type();
    const int64_t numel = real_numel(params[i]);
    Job& job = jobs[i];
    job.param = make_store(params[i], pt, false, nullptr, numel, "params", i);
    job.grad = make_store(grads[i], pt, false, nullptr, numel, "grads", i);
    job.slot[0] = make_store(p0s[i], pt, false, nullptr, numel, "p0", i);
    const Tensor* sc = s_scales.empty() ? nullptr : &s_scales[i];
    job.slot[1] = make_store(ss[i], pt, state_stochastic, sc, numel, "s", i);
    job.n = numel;
    prodigy_job(job, i, grad_scale, clip_value, clip_first, maximize, l2, seed);
    dbl[i] = compute_is_double(pt);
  }
  auto out = prodigy_sums(jobs, dbl, beta3, weight);
  for (const Tensor& s : ss) bump(s);
  return out;
}

// The global pass over a plan's tensors (made by plan() for the rule's step that follows, so
// each tensor is converted and checked once per step): its params, grads and s (the rule's
// slot 2), with x0 from p0s.  The plan's version bumps already cover s.
std::tuple<double, double> prodigy_plan_stats(
    const Plan& plan, pybind11::handle py_p0s, double beta3, double weight,
    double grad_scale, double clip_value, bool clip_first, bool maximize, double l2,
    int64_t seed) {
  const size_t n = plan.jobs.size();
  std::vector<pybind11::object> owners;
  const Tensors p0s = borrow(py_p0s, owners, "p0s");
  TORCH_CHECK(plan.unsupported.empty() && !plan.ran && p0s.size() == n,
              "optimist engine: prodigy_plan_stats needs an unrun plan and one p0 per param");
  std::vector<Job> jobs(n);
  const Tensors& params = plan.lists[0];
  for (size_t i = 0; i < n; ++i) {
    if (i + kAhead < n) prefetch_more(*p0s[i + kAhead]);
    const Job& planned = plan.jobs[i];
    TORCH_CHECK(planned.slot[2].kind != kAbsent, "optimist engine: the plan has no s slot");
    Job& job = jobs[i];
    job.param = planned.param;
    job.grad = planned.grad;
    job.slot[0] = make_store(*p0s[i], params[i]->scalar_type(), false, nullptr, planned.n, "p0", i);
    job.slot[1] = planned.slot[2];
    job.n = planned.n;
    prodigy_job(job, i, grad_scale, clip_value, clip_first, maximize, l2, seed);
  }
  return prodigy_sums(jobs, plan.dbl, beta3, weight);
}

}  // namespace optimist
