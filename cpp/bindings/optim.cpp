// optim.cpp (bindings): the optimizers' one entry point, and all_finite.
//
//   _core.optim_step(algorithm, names, arrays, scalars, skip_nonfinite) -> bool
//
// algorithm: a name of GF_OPTIM_ALGORITHMS (cpp/src/optim.cpp); names / arrays: the call's array
// arguments in the kernel table's order (params, grads, then the states, then optionally "copies",
// the bf16 compute copies written in the same pass; each an ndarray, a list of them, or None when
// the call does not use it); scalars: {name: value} for the fields of
// OptimArgs, already checked against the kernel table by python/gradfuse/_checks.py (gf.ops does
// it for both backends). Thin: check the arrays (arrays.hpp), release the GIL, call the selected
// ISA's kernel. Returns False when skip_nonfinite found NaN/Inf in the gradients (nothing was
// written), True otherwise.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "gradfuse/kernels.hpp"
#include "gradfuse/optim.hpp"

namespace gf {
namespace bind {
namespace {

using namespace pybind11::literals;

std::vector<std::string> algorithms() {
  int count = 0;
  const char* const* names = GF_CALL(optim_algorithms, &count);
  return std::vector<std::string>(names, names + count);
}

int algorithm_index(const std::string& name) {
  static const std::vector<std::string> names = algorithms();
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return static_cast<int>(i);
  value_error("optim_step", "unknown optimizer algorithm '" + name + "'", "algorithm");
}

// OptimArgs from {name: value}; a name it does not have is an error (the table and C++ differ).
OptimArgs parse_scalars(const std::string& fn, py::dict scalars) {
  OptimArgs a;
  for (auto item : scalars) {
    const std::string key = py::str(item.first);
    py::handle value = item.second;
    if (key == "step") {
      a.step = value.cast<int64_t>();
      continue;
    }
#define GF_SET_REAL(name)                             \
  if (key == #name) {                                 \
    a.name = value.cast<double>();                    \
    if (key == "grad_scale") a.has_grad_scale = true; \
    continue;                                         \
  }
#define GF_SET_FLAG(name)        \
  if (key == #name) {            \
    a.name = value.cast<bool>(); \
    continue;                    \
  }
    GF_OPTIM_REALS(GF_SET_REAL)
    GF_OPTIM_FLAGS(GF_SET_FLAG)
#undef GF_SET_REAL
#undef GF_SET_FLAG
    value_error(fn,
                "OptimArgs has no field '" + key +
                    "' (the kernel table and cpp/include/gradfuse/optim.hpp "
                    "disagree)",
                "scalars");
  }
  return a;
}

bool step(const std::string& algorithm, py::tuple names, py::tuple arrays, py::dict scalars, bool skip_nonfinite) {
  const int index = algorithm_index(algorithm);
  const OptimArgs args = parse_scalars(algorithm, scalars);
  const bool copies = names.size() > 2 && py::str(names[names.size() - 1]).cast<std::string>() == "copies";
  const size_t floating = names.size() - copies;
  if (names.size() != arrays.size() || floating < 2 || floating > static_cast<size_t>(kMaxLists))
    value_error(algorithm, "expected params, grads, up to " + std::to_string(kMaxStates) + " states and copies",
                "arrays");
  std::vector<std::string> keep(names.size());
  std::vector<TensorArg> lists;
  for (size_t i = 0; i < names.size(); ++i) {
    keep[i] = py::str(names[i]);
    if (i == floating) lists.push_back({keep[i].c_str(), arrays[i], true, false, kBf16});  // bf16 copies, optional
    else lists.push_back({keep[i].c_str(), arrays[i], i != 1, i < 2});  // grads are read; states may be unused
  }
  TensorLists checked(algorithm, std::move(lists), false, !GF_CALL(optim_per_tensor, index));
  if (checked.empty()) return true;
  const int threads = num_threads();
  py::gil_scoped_release release;
  return with_dtype(checked.dtype(), [&](auto zero) {
    using T = decltype(zero);
    return GF_CALL(optim_step<T>, index, args, checked.segments<T>(), skip_nonfinite, threads);
  });
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def("optim_step", &step, "algorithm"_a, "names"_a, "arrays"_a, "scalars"_a, "skip_nonfinite"_a = false,
        "One step of an optimizer (a name of _optimizer_algorithms()) over lists of arrays in the kernel table's "
        "order, with checked scalars by name. Use gf.ops.<name>, which checks the scalars, or an optimizer.");

  m.def("_optimizer_algorithms", &algorithms, "The algorithms optim_step knows.");

  m.def(
      "_optimizer_fields",
      [] {
        std::vector<std::string> names{"step"};
#define GF_NAME(name) names.push_back(#name);
        GF_OPTIM_REALS(GF_NAME)
        GF_OPTIM_FLAGS(GF_NAME)
#undef GF_NAME
        return names;
      },
      "The scalar names optim_step takes (the fields of OptimArgs).");

  m.def(
      "_touch",
      [](py::handle params, py::handle grads, py::handle s0, py::handle s1, py::handle s2, py::handle copies) {
        return step("_touch", py::make_tuple("params", "grads", "s0", "s1", "s2", "copies"),
                    py::make_tuple(params, grads, s0, s1, s2, copies), py::dict(), false);
      },
      "params"_a, "grads"_a, "s0"_a = py::none(), "s1"_a = py::none(), "s2"_a = py::none(), "copies"_a = py::none(),
      "Benchmark ceiling: the memory traffic of an optimizer step with these arrays (p += 0*g, s += 0*g, "
      "and the bf16 copies of p when given), no math. Not a training kernel.");

  m.def(
      "all_finite",
      [](py::handle arrays, py::handle grad_scale) {
        const std::string fn = "all_finite";
        OptimArgs a;
        if (!grad_scale.is_none()) {
          a.grad_scale = real(fn, "grad_scale", grad_scale);
          if (!(std::isfinite(a.grad_scale) && a.grad_scale > 0))
            value_error(fn, "{arg} must be a finite number > 0, got " + num(a.grad_scale), "grad_scale");
          a.has_grad_scale = true;
        }
        TensorLists lists(fn, {{"arrays", arrays, false, true, kReal}});
        if (lists.empty()) return true;
        const int threads = num_threads();
        py::gil_scoped_release release;
        return with_real_dtype(lists.dtype(), [&](auto zero) {
          using T = decltype(zero);
          return GF_CALL(all_finite<T>, lists.segments<T>(), 0, a, threads);
        });
      },
      "arrays"_a, "grad_scale"_a = py::none(),
      "True when every element of every array (divided by grad_scale, if given) is finite.");
}

}  // namespace bind
}  // namespace gf
