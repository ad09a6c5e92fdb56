// optimist engine: which tensors the engine takes (a header of engine.cpp, one translation unit).
#pragma once

#include <torch/csrc/autograd/python_variable.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace optimist {

using at::Tensor;

// ---------------------------------------------------------------------------------------------
// Tensors of Python sequences, borrowed: pointers to the tensors the Python objects hold, valid
// while the sequences (`owners`) live.  No at::Tensor is copied: a C++ copy of a tensor that
// Python owns takes a reference to its Python object, and its release gives it back under the
// GIL, which (with the conversion) was 20-40% of a warm plan() on 1000 small tensors.

using Tensors = std::vector<const Tensor*>;
using TensorLists = std::vector<Tensors>;

// Hints to load a tensor's metadata ahead of its use: its TensorImpl (prefetch_impl), then,
// once that is in, its storage and version counter (prefetch_more).  After another optimizer's
// step, each is a cache miss; one tensor at a time, every miss waits for memory, which was most
// of plan()'s time on 1000 small tensors.
inline void prefetch_impl(const Tensor& t) {
  const char* impl = reinterpret_cast<const char*>(t.unsafeGetTensorImpl());
  for (size_t off = 0; off < sizeof(c10::TensorImpl); off += 64) __builtin_prefetch(impl + off);
}

inline void prefetch_more(const Tensor& t) {
  const c10::TensorImpl* impl = t.unsafeGetTensorImpl();
  __builtin_prefetch(impl->unsafe_storage().unsafeGetStorageImpl());
  // (VariableVersion is one intrusive_ptr: its first word is the counter's address)
  __builtin_prefetch(*reinterpret_cast<void* const*>(&impl->version_counter()), 1);  // (bumped)
}

// The tensors of `seq` (a list or tuple of tensors); `owners` keeps the sequence alive.
inline Tensors borrow(pybind11::handle seq, std::vector<pybind11::object>& owners,
                      const std::string& what) {
  PyObject* fast = PySequence_Fast(seq.ptr(), "optimist engine: expected a list of tensors");
  if (fast == nullptr) throw pybind11::error_already_set();
  owners.push_back(pybind11::reinterpret_steal<pybind11::object>(fast));
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  PyObject** items = PySequence_Fast_ITEMS(fast);
  Tensors out(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    TORCH_CHECK(THPVariable_Check(items[i]), "optimist engine: ", what, "[", i,
                "] is not a tensor");
    out[i] = &THPVariable_Unpack(items[i]);
    prefetch_impl(*out[i]);
  }
  return out;
}

// borrow() of each sequence of `seqs`.
inline TensorLists borrow_lists(pybind11::handle seqs, std::vector<pybind11::object>& owners,
                                const std::string& what) {
  TensorLists out;
  for (pybind11::handle seq : pybind11::reinterpret_borrow<pybind11::sequence>(seqs)) {
    out.push_back(borrow(seq, owners, what + "[" + std::to_string(out.size()) + "]"));
  }
  return out;
}

inline bool engine_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf ||
         t == at::kComplexFloat || t == at::kComplexDouble;
}

inline bool usable(const Tensor& t, const Tensor& p) {
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
inline Range byte_range(const Tensor& t) {
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

inline bool any_overlap(std::vector<Range> ranges) {
  ranges.erase(std::remove_if(ranges.begin(), ranges.end(),
                              [](const Range& r) { return r.first == r.second; }),
               ranges.end());
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return true;
  }
  return false;
}

inline bool params_overlap(const Tensors& params) {
  struct Entry {
    std::vector<Range> ranges;
    bool overlap;
  };
  static std::mutex mutex;
  static std::vector<Entry> cache;  // most recent first
  constexpr size_t kCacheSize = 16;

  std::vector<Range> ranges;
  ranges.reserve(params.size());
  for (const Tensor* p : params) ranges.push_back(byte_range(*p));
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
inline std::vector<int64_t> unsupported_indices(const TensorLists& lists) {
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
      if (!lists[k].empty()) python[i] = python_tensor(*lists[k][i]);
    }
    any_python |= python[i];
  }
  if (any_python) {
    for (size_t i = 0; i < n; ++i) {
      if (python[i]) out.push_back(static_cast<int64_t>(i));
    }
    if (out.size() == n) return out;
    TensorLists rest(lists.size());
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
    const Tensor& p = *params[i];
    bool ok = p.defined() && engine_dtype(p.scalar_type()) && usable(p, p) &&
              !p.is_inference();
    if (ok && lists.size() > 1 && !lists[1].empty()) {
      ok = usable(*lists[1][i], p) && lists[1][i]->scalar_type() == p.scalar_type();
    }
    for (size_t k = 2; ok && k < lists.size(); ++k) {
      if (!lists[k].empty() && lists[k][i]->defined()) ok = usable(*lists[k][i], p);
    }
    if (!ok) out.push_back(static_cast<int64_t>(i));
  }
  return out;
}

// unsupported_indices of Python lists (the binding).
inline std::vector<int64_t> unsupported_indices_of(pybind11::handle lists) {
  std::vector<pybind11::object> owners;
  return unsupported_indices(borrow_lists(lists, owners, "lists"));
}

}  // namespace optimist
