// activation.cpp (bindings): gradfuse._core.activation_forward / activation_backward.
//
// Thin: check every argument as the kernel table's rows say (python/gradfuse/table.py; the order
// of the Python checker: scalars, arrays, shapes, aliasing, then the saved tensors the backward
// needs), release the GIL, call the selected ISA's kernel.
#include <pybind11/pybind11.h>

#include "activation_args.hpp"
#include "arrays.hpp"
#include "gradfuse/activation.hpp"

namespace gf {
namespace bind {

using namespace pybind11::literals;

ActArgs activation_args(const std::string& fn, py::handle activation, py::handle negative_slope) {
  static const std::pair<const char*, Act> kNames[] = {
      {"none", Act::none},       {"relu", Act::relu}, {"leaky_relu", Act::leaky_relu}, {"tanh", Act::tanh},
      {"sigmoid", Act::sigmoid}, {"gelu", Act::gelu}, {"gelu_tanh", Act::gelu_tanh}};
  ActArgs a{Act::none, text(fn, "activation", activation), 0.0};
  bool known = false;
  for (const auto& [n, act] : kNames)
    if (a.name == n) a.act = act, known = true;
  if (!known)
    value_error(
        fn, "unknown activation '" + a.name + "' (expected none, relu, leaky_relu, tanh, sigmoid, gelu or gelu_tanh)",
        "activation");
  a.slope = real(fn, "negative_slope", negative_slope);
  check_finite(fn, "negative_slope", a.slope);
  return a;
}

ActNeeds activation_needs(Act act) {
  switch (act) {
    case Act::none: return ActNeeds::nothing;
    case Act::relu:
    case Act::leaky_relu: return ActNeeds::x_or_y;
    case Act::tanh:
    case Act::sigmoid: return ActNeeds::y;
    default: return ActNeeds::x;
  }
}

void check_saved(const ArgSet& args, const ActArgs& a, const ArrayArg& x, const ArrayArg& y) {
  const ActNeeds needs = activation_needs(a.act);
  if (needs == ActNeeds::y && !y.present) args.fail(y, a.name + "'s backward needs {arg} (the forward output)");
  if (needs == ActNeeds::x && !x.present) args.fail(x, a.name + "'s backward needs {arg} (the forward input)");
  if (needs == ActNeeds::x_or_y && !x.present && !y.present)
    args.fail(x, a.name + "'s backward needs {arg} (the forward input) or y (its output)");
  if (a.act == Act::leaky_relu && !x.present && a.slope < 0)
    args.fail(x, "leaky_relu's backward needs {arg} (the forward input) when negative_slope < 0");
}

void bind_activation(py::module_& m) {
  m.def(
      "activation_forward",
      [](py::handle x, py::handle y, py::handle activation, py::handle negative_slope) {
        ArgSet args("activation_forward");
        const ActArgs act = activation_args(args.fn(), activation, negative_slope);
        const ArrayArg& ax = args.real("x", x, false);
        const ArrayArg& ay = args.real("y", y, true);
        args.require_like(ay, ax);
        args.allow_in_place(ay, ax);
        args.check_aliasing();
        const int threads = num_threads();
        py::gil_scoped_release release;
        with_real_dtype(args.dtype(), [&](auto zero) {
          using T = decltype(zero);
          GF_CALL(activation_forward<T>, act.act, act.slope, ax.ptr<T>(), ay.ptr<T>(), ax.size, threads);
        });
      },
      "x"_a, "y"_a, py::kw_only(), "activation"_a, "negative_slope"_a = 0.01,
      "The C++ side of gf.ops.activation_forward: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "activation_backward",
      [](py::handle dy, py::handle dx, py::handle activation, py::handle x, py::handle y, py::handle negative_slope) {
        ArgSet args("activation_backward");
        const ActArgs act = activation_args(args.fn(), activation, negative_slope);
        const ArrayArg& ady = args.real("dy", dy, false);
        const ArrayArg& adx = args.real("dx", dx, true);
        const ArrayArg& ax = args.real("x", x, false, true);
        const ArrayArg& ay = args.real("y", y, false, true);
        args.require_like(adx, ady);
        args.require_like(ax, ady);
        args.require_like(ay, ady);
        args.allow_in_place(adx, ady);
        args.check_aliasing();
        check_saved(args, act, ax, ay);
        const int threads = num_threads();
        py::gil_scoped_release release;
        with_real_dtype(args.dtype(), [&](auto zero) {
          using T = decltype(zero);
          GF_CALL(activation_backward<T>, act.act, act.slope, ady.ptr<T>(), ax.ptr_or_null<T>(), ay.ptr_or_null<T>(),
                  adx.ptr<T>(), ady.size, threads);
        });
      },
      "dy"_a, "dx"_a, py::kw_only(), "activation"_a, "x"_a = py::none(), "y"_a = py::none(), "negative_slope"_a = 0.01,
      "The C++ side of gf.ops.activation_backward: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");
}

}  // namespace bind
}  // namespace gf
