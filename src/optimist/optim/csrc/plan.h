// optimist engine: the Python-facing step (a header of engine.cpp, one translation unit).
//
// plan() checks one call's tensors and turns them into the core's jobs, run() sets their host
// scalars, prologue and rule and executes them (trust.h's trust_step is the trust-ratio rules'
// run); the step counters (next_count, store_count, advance_steps) and the scalar state
// (scale_scalars) with them.
// Built on engine.cpp's core (Job, make_store, rule_fn, execute), included after it.
#pragma once

#include <ATen/PythonTorchFunctionTLS.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace optimist {

using at::Tensor;

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
  TensorLists lists;  // borrowed from the Python lists in `owners`, kept alive while the plan is
  std::vector<pybind11::object> owners;
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

// How many tensors ahead a loop over tensors fetches their storage and version counter.
constexpr size_t kAhead = 8;

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

// (lists and steps: Python lists, borrowed (checks.h), so the caller must not change them while
// the plan lives; the plan holds them.)
Plan plan(pybind11::handle py_lists, const std::vector<std::vector<Tensor>>& scales,
          const std::vector<Tensor>& ema_scales, pybind11::handle py_steps,
          bool state_stochastic, bool param_stochastic, bool check) {
  Plan out;
  out.lists = borrow_lists(py_lists, out.owners, "lists");
  const TensorLists& lists = out.lists;
  const Tensors steps = borrow(py_steps, out.owners, "steps");
  TORCH_CHECK(lists.size() >= 3 && lists.size() <= kMaxSlots + 3,
              "optimist engine: plan needs [params, grads, slots..., ema] with at most ",
              kMaxSlots, " slots");
  const size_t n = lists[0].size();
  const size_t n_slots = lists.size() - 3;
  if (check) {
    out.unsupported = unsupported_indices(lists);
    if (!out.unsupported.empty()) return out;
  }
  const Tensors& params = lists[0];
  const Tensors& grads = lists[1];
  const Tensors& ema = lists.back();
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
    if (i + kAhead < n) {
      for (const Tensors& list : lists) {
        if (!list.empty()) prefetch_more(*list[i + kAhead]);
      }
    }
    const Tensor& p = *params[i];
    const Tensor& g = *grads[i];
    TORCH_CHECK(p.defined() && p.device().is_cpu() && p.is_contiguous(),
                "optimist engine: params[", i, "] must be a contiguous CPU tensor");
    TORCH_CHECK(g.scalar_type() == p.scalar_type(), "optimist engine: grads[", i,
                "] has dtype ", g.scalar_type(), ", the parameter ", p.scalar_type());
    TORCH_CHECK(g.sizes() == p.sizes(), "optimist engine: grads[", i, "] has shape ",
                g.sizes(), ", the parameter ", p.sizes());
    const at::ScalarType pt = p.scalar_type();
    const int64_t numel = real_numel(p);
    Job& job = out.jobs[i];
    job.n = numel;
    job.param = make_store(p, pt, param_stochastic, nullptr, numel, "params", i);
    job.grad = make_store(g, pt, false, nullptr, numel, "grads", i);
    for (size_t k = 0; k < n_slots; ++k) {
      const Tensors& slot = lists[2 + k];
      if (slot.empty()) continue;
      const Tensor& t = *slot[i];
      const Tensor* sc = scales.size() > k && !scales[k].empty() ? &scales[k][i] : nullptr;
      job.slot[k] = make_store(t, pt, state_stochastic, sc, numel, "state", i);
      TORCH_CHECK(t.scalar_type() == at::kChar || t.sizes() == p.sizes(),
                  "optimist engine: state[", i, "] has shape ", t.sizes(),
                  ", the parameter ", p.sizes());
    }
    if (!ema.empty()) {
      const Tensor* sc = ema_scales.empty() ? nullptr : &ema_scales[i];
      job.slot[kEmaSlot] = make_store(*ema[i], pt, state_stochastic, sc, numel, "ema", i);
    }
    out.dbl[i] = compute_is_double(pt);
    // the in-place update ahead (plan and run are called together; a bump alone is harmless),
    // here while the tensors' metadata is in cache; the gradients are only read
    for (size_t k = 0; k < lists.size(); ++k) {
      if (k != 1 && !lists[k].empty()) bump(*lists[k][i]);
    }
  }
  out.steps.resize(steps.size());
  out.steps_dbl.resize(steps.size());
  CommonValue next;
  for (size_t i = 0; i < steps.size(); ++i) {
    out.steps[i] = step_data(*steps[i], i);
    out.steps_dbl[i] = steps[i]->scalar_type() == at::kDouble;
    next.add(next_count(out.steps[i], out.steps_dbl[i]));
  }
  out.next_step = next.get();
  return out;
}

// The plan's step counters advanced to their next value (as torch's `state["step"] += 1`).
void store_next_steps(Plan& plan) {
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    store_count(plan.steps[i], plan.steps_dbl[i], next_count(plan.steps[i], plan.steps_dbl[i]));
  }
}

void run(Plan& plan, const std::string& rule, const std::vector<bool>& flags, int64_t fresh_flag,
         const std::vector<double>& hyper, const std::vector<bool>& fresh, double grad_scale,
         double clip_value, bool clip_first, bool maximize, const std::vector<double>& l2,
         const std::vector<double>& decay, double l2_all, double decay_all, double ema_decay,
         int64_t seed) {
  TORCH_CHECK(plan.unsupported.empty(), "optimist engine: the plan has unsupported tensors");
  TORCH_CHECK(!plan.ran, "optimist engine: a plan runs once");
  TORCH_CHECK(hyper.size() <= 12, "optimist engine: at most 12 host scalars");
  const size_t n = plan.jobs.size();
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
    job.fn = job_fn(plan.dbl[i] != 0, i < fresh.size() && fresh[i]);
  }
  store_next_steps(plan);
  pybind11::gil_scoped_release release;
  execute(plan.jobs);
}

// step += 1 for each (one-element float32/float64) step tensor, in its own precision; returns
// the new value if all are equal, else NaN.
double advance_steps(pybind11::handle py_steps) {
  std::vector<pybind11::object> owners;
  const Tensors steps = borrow(py_steps, owners, "steps");
  CommonValue common;
  for (size_t i = 0; i < steps.size(); ++i) {
    void* data = step_data(*steps[i], i);
    const bool dbl = steps[i]->scalar_type() == at::kDouble;
    const double v = next_count(data, dbl);
    store_count(data, dbl, v);
    common.add(v);
  }
  return common.get();
}

// x *= factor for one-element float tensors (in their precision, the factor cast first, as
// torch's `tensor *= python_float`); returns the new common value or NaN.
double scale_scalars(pybind11::handle py_xs, double factor) {
  std::vector<pybind11::object> owners;
  const Tensors xs = borrow(py_xs, owners, "xs");
  CommonValue common;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& s = *xs[i];
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

// [p.grad for p in params] (None where a parameter has none), each parameter's way to its
// gradient (its Python object, TensorImpl, autograd metadata, the gradient's TensorImpl) fetched
// in stages ahead of its turn: after another step's work these are cache misses, which Python's
// loop took one after the other.  Where `.grad` may run Python (a tensor subclass other than
// Parameter/Buffer, an active torch function mode), Python's getattr reads it.
inline pybind11::list grads_of(pybind11::handle params) {
  PyObject* fast = PySequence_Fast(params.ptr(), "optimist engine: expected a list of tensors");
  if (fast == nullptr) throw pybind11::error_already_set();
  const auto owner = pybind11::reinterpret_steal<pybind11::object>(fast);
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  PyObject** items = PySequence_Fast_ITEMS(fast);
  const bool via_python = at::impl::torch_function_mode_enabled();
  auto plain = [&](Py_ssize_t i) { return !via_python && THPVariable_CheckExact(items[i]); };
  auto impl = [&](Py_ssize_t i) { return THPVariable_Unpack(items[i]).unsafeGetTensorImpl(); };
  pybind11::list out(n);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (i + 12 < n) __builtin_prefetch(items[i + 12]);
    if (i + 8 < n && plain(i + 8)) prefetch_impl(THPVariable_Unpack(items[i + 8]));
    if (i + 4 < n && plain(i + 4)) {
      if (const void* meta = impl(i + 4)->autograd_meta()) {
        __builtin_prefetch(meta);
        __builtin_prefetch(static_cast<const char*>(meta) + 64);
      }
    }
    if (i + 2 < n && plain(i + 2)) {
      const Tensor& g = impl(i + 2)->grad();
      if (g.defined()) prefetch_impl(g);
    }
    PyObject* g = plain(i) ? THPVariable_Wrap(impl(i)->grad())
                           : PyObject_GetAttrString(items[i], "grad");
    if (g == nullptr) throw pybind11::error_already_set();
    PyList_SET_ITEM(out.ptr(), i, g);
  }
  return out;
}

}  // namespace optimist
