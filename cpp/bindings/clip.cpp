// clip.cpp (bindings): gradfuse._core.grad_norm / clip_grad_norm / clip_grad_norm_per_tensor /
// clip_grad_value. The contract is in gradfuse/clip.hpp.
//
// Thin: check the scalars (the kernel table's ranges and messages, python/gradfuse/table.py), then
// the gradient list (TensorLists: one dtype, C-contiguous, aligned, writeable where clipped, no two
// gradients sharing memory; arrays adjacent in memory merged into one segment), release the GIL,
// call the selected ISA's kernel.
#include <pybind11/pybind11.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "gradfuse/clip.hpp"
#include "gradfuse/kernels.hpp"

namespace gf {
namespace bind {
namespace {

using namespace pybind11::literals;

// The scalars, with the kernel table's ranges and messages.
double norm_type_of(const std::string& fn, py::handle obj) {
  const double p = real(fn, "norm_type", obj);
  if (!(p > 0)) value_error(fn, "{arg} must be a number > 0 or inf, got " + num(p), "norm_type");
  return p;
}

double max_norm_of(const std::string& fn, py::handle obj) {
  const double max_norm = real(fn, "max_norm", obj);
  if (!(max_norm >= 0))
    value_error(fn, "max_norm must be a number >= 0 (inf: no clipping), got " + num(max_norm), "max_norm");
  return max_norm;
}

// torch's error_if_nonfinite message, naming the kernel and the argument.
[[noreturn]] void raise_nonfinite(const std::string& fn, const std::string& what, double norm_type) {
  throw std::runtime_error(fn + ": the " + what + " of order " + num(norm_type) +
                           " is non-finite, so it cannot be clipped (nothing was written). To disable this "
                           "error and scale the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`");
}

// The arrays of a validated tensor-list argument (an ndarray or a list/tuple of them), in order.
std::vector<py::handle> items_of(py::handle obj) {
  if (PyList_Check(obj.ptr()) || PyTuple_Check(obj.ptr())) {
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(obj.ptr());
    PyObject** data = PySequence_Fast_ITEMS(obj.ptr());
    return std::vector<py::handle>(data, data + n);
  }
  return {obj};
}

}  // namespace

void bind_clip(py::module_& m) {
  m.def(
      "grad_norm",
      [](py::handle grads, py::handle norm_type_) {
        const std::string fn = "grad_norm";
        const double norm_type = norm_type_of(fn, norm_type_);
        TensorLists lists(fn, {{"grads", grads, false, true, kReal}});
        const int threads = num_threads();
        double norm;
        {
          py::gil_scoped_release release;
          norm = with_real_dtype(lists.dtype(), [&](auto zero) {
            using T = decltype(zero);
            return GF_CALL(grad_norm<T>, lists.segments<T>(), norm_type, threads);
          });
        }
        return norm;
      },
      "grads"_a, py::kw_only(), "norm_type"_a = 2.0,
      "The C++ side of gf.ops.grad_norm: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "clip_grad_norm",
      [](py::handle grads, py::handle max_norm_, py::handle norm_type_, py::handle error_if_nonfinite_) {
        const std::string fn = "clip_grad_norm";
        const double max_norm = max_norm_of(fn, max_norm_);
        const double norm_type = norm_type_of(fn, norm_type_);
        const bool error_if_nonfinite = flag(fn, "error_if_nonfinite", error_if_nonfinite_);
        TensorLists lists(fn, {{"grads", grads, true, true, kReal}});
        const int threads = num_threads();
        double norm;
        {
          py::gil_scoped_release release;
          norm = with_real_dtype(lists.dtype(), [&](auto zero) {
            using T = decltype(zero);
            return GF_CALL(clip_grad_norm<T>, lists.segments<T>(), max_norm, norm_type, error_if_nonfinite, threads);
          });
        }
        if (error_if_nonfinite && !std::isfinite(norm)) raise_nonfinite(fn, "total norm of grads", norm_type);
        return norm;
      },
      "grads"_a, py::kw_only(), "max_norm"_a, "norm_type"_a = 2.0, "error_if_nonfinite"_a = false,
      "The C++ side of gf.ops.clip_grad_norm: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "clip_grad_norm_per_tensor",
      [](py::handle grads, py::handle max_norm_, py::handle norm_type_, py::handle error_if_nonfinite_) {
        const std::string fn = "clip_grad_norm_per_tensor";
        const double max_norm = max_norm_of(fn, max_norm_);
        const double norm_type = norm_type_of(fn, norm_type_);
        const bool error_if_nonfinite = flag(fn, "error_if_nonfinite", error_if_nonfinite_);
        TensorLists lists(fn, {{"grads", grads, true, true, kReal}});  // every check; its segments are merged ones
        // One segment per non-empty array (not merged: each array has its own norm).
        const std::vector<py::handle> items = items_of(grads);
        std::vector<int64_t> offset{0};
        std::vector<char*> data;
        std::vector<size_t> index;  // segment -> array
        for (size_t i = 0; i < items.size(); ++i) {
          const auto* arr = py::detail::array_proxy(items[i].ptr());
          int64_t size = 1;
          for (int d = 0; d < arr->nd; ++d) size *= arr->dimensions[d];
          if (size == 0) continue;
          offset.push_back(offset.back() + size);
          data.push_back(arr->data);
          index.push_back(i);
        }
        std::vector<double> seg_norms(data.size(), 0.0);
        const int threads = num_threads();
        int64_t bad;
        {
          py::gil_scoped_release release;
          bad = with_real_dtype(lists.dtype(), [&](auto zero) {
            using T = decltype(zero);
            Segments<T> g;
            g.count = static_cast<int64_t>(data.size());
            g.offset = offset.data();
            g.list[0] = reinterpret_cast<T* const*>(data.data());
            return GF_CALL(clip_grad_norm_per_segment<T>, g, max_norm, norm_type, error_if_nonfinite, seg_norms.data(),
                           threads);
          });
        }
        const bool is_list = PyList_Check(grads.ptr()) || PyTuple_Check(grads.ptr());
        if (bad >= 0) {
          const size_t i = index[static_cast<size_t>(bad)];
          raise_nonfinite(fn, "norm of grads" + (is_list ? "[" + std::to_string(i) + "]" : std::string()), norm_type);
        }
        std::vector<double> norms(items.size(), 0.0);
        for (size_t s = 0; s < index.size(); ++s) norms[index[s]] = seg_norms[s];
        py::list out(norms.size());
        for (size_t i = 0; i < norms.size(); ++i) out[i] = py::float_(norms[i]);
        return out;
      },
      "grads"_a, py::kw_only(), "max_norm"_a, "norm_type"_a = 2.0, "error_if_nonfinite"_a = false,
      "The C++ side of gf.ops.clip_grad_norm_per_tensor: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "clip_grad_value",
      [](py::handle grads, py::handle clip_value_) {
        const std::string fn = "clip_grad_value";
        const double clip_value = real(fn, "clip_value", clip_value_);
        if (!(clip_value >= 0)) value_error(fn, "{arg} must be a number >= 0, got " + num(clip_value), "clip_value");
        TensorLists lists(fn, {{"grads", grads, true, true, kReal}});
        const int threads = num_threads();
        py::gil_scoped_release release;
        with_real_dtype(lists.dtype(), [&](auto zero) {
          using T = decltype(zero);
          GF_CALL(clip_grad_value<T>, lists.segments<T>(), clip_value, threads);
        });
      },
      "grads"_a, py::kw_only(), "clip_value"_a,
      "The C++ side of gf.ops.clip_grad_value: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");
}

}  // namespace bind
}  // namespace gf
