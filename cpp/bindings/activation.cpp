// activation.cpp (bindings): gradfuse._core.activation_forward / activation_backward.
#include <pybind11/pybind11.h>

#include "activation_args.hpp"
#include "arrays.hpp"
#include "gradfuse/activation.hpp"

namespace gf {
namespace bind {

using namespace pybind11::literals;

Act parse_activation(const std::string& fn, const std::string& name, double slope) {
  static const std::pair<const char*, Act> kNames[] = {
      {"none", Act::none},       {"relu", Act::relu}, {"leaky_relu", Act::leaky_relu}, {"tanh", Act::tanh},
      {"sigmoid", Act::sigmoid}, {"gelu", Act::gelu}, {"gelu_tanh", Act::gelu_tanh}};
  for (const auto& [n, a] : kNames)
    if (name == n) {
      check_finite(fn, "negative_slope", slope);
      return a;
    }
  value_error(fn, "unknown activation '" + name + "' (expected none, relu, leaky_relu, tanh, sigmoid, gelu or gelu_tanh)",
              "activation");
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

void check_saved(const ArgSet& args, const std::string& act_name, Act act, double slope, const ArrayArg& x,
                 const ArrayArg& y) {
  const ActNeeds needs = activation_needs(act);
  if (needs == ActNeeds::y && !y.present) args.fail(y, act_name + "'s backward needs y (the forward output)");
  if (needs == ActNeeds::x && !x.present) args.fail(x, act_name + "'s backward needs x (the forward input)");
  if (needs == ActNeeds::x_or_y && !x.present && !y.present)
    args.fail(x, act_name + "'s backward needs x (the forward input) or y (its output)");
  if (act == Act::leaky_relu && !x.present && slope < 0)
    args.fail(x, "leaky_relu's backward needs x (the forward input) when negative_slope < 0");
}

void bind_activation(py::module_& m) {
  m.def(
      "activation_forward",
      [](py::handle x, py::handle y, const std::string& activation, double negative_slope) {
        ArgSet args("activation_forward");
        const Act act = parse_activation(args.fn(), activation, negative_slope);
        const ArrayArg& ax = args.floating("x", x, false);
        const ArrayArg& ay = args.floating("y", y, true);
        args.require_like(ay, ax);
        args.allow_in_place(ay, ax);
        args.check_aliasing();
        const int threads = num_threads();
        py::gil_scoped_release release;
        with_dtype(args.dtype(), [&](auto zero) {
          using T = decltype(zero);
          GF_CALL(activation_forward<T>, act, negative_slope, ax.ptr<T>(), ay.ptr<T>(), ax.size, threads);
        });
      },
      "x"_a, "y"_a, py::kw_only(), "activation"_a, "negative_slope"_a = 0.01,
      "y = activation(x), element-wise, any shape; y may be x (in place).");

  m.def(
      "activation_backward",
      [](py::handle dy, py::handle dx, const std::string& activation, py::handle x, py::handle y,
         double negative_slope) {
        ArgSet args("activation_backward");
        const Act act = parse_activation(args.fn(), activation, negative_slope);
        const ArrayArg& ady = args.floating("dy", dy, false);
        const ArrayArg& adx = args.floating("dx", dx, true);
        const ArrayArg& ax = args.floating("x", x, false, true);
        const ArrayArg& ay = args.floating("y", y, false, true);
        args.require_like(adx, ady);
        args.require_like(ax, ady);
        args.require_like(ay, ady);
        args.allow_in_place(adx, ady);
        args.check_aliasing();
        check_saved(args, activation, act, negative_slope, ax, ay);
        const int threads = num_threads();
        py::gil_scoped_release release;
        with_dtype(args.dtype(), [&](auto zero) {
          using T = decltype(zero);
          GF_CALL(activation_backward<T>, act, negative_slope, ady.ptr<T>(), ax.ptr_or_null<T>(), ay.ptr_or_null<T>(),
                  adx.ptr<T>(), ady.size, threads);
        });
      },
      "dy"_a, "dx"_a, py::kw_only(), "activation"_a, "x"_a = py::none(), "y"_a = py::none(),
      "negative_slope"_a = 0.01,
      "dx = dy * activation'(.), element-wise. Needs y (the forward output) for tanh and sigmoid, x (the input) "
      "for gelu and gelu_tanh, either for relu and leaky_relu; dx may be dy (in place).");
}

}  // namespace bind
}  // namespace gf
