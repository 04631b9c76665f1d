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
  if (!std::isfinite(slope)) raise_value(fn + ": negative_slope must be a finite number");
  for (const auto& [n, a] : kNames)
    if (name == n) return a;
  raise_value(fn + ": unknown activation '" + name +
              "' (expected none, relu, leaky_relu, tanh, sigmoid, gelu or gelu_tanh)");
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
  if (needs == ActNeeds::y && !y.present)
    args.fail(act_name + "'s backward needs y (the forward output)");
  if (needs == ActNeeds::x && !x.present) args.fail(act_name + "'s backward needs x (the forward input)");
  if (needs == ActNeeds::x_or_y && !x.present && !y.present)
    args.fail(act_name + "'s backward needs x (the forward input) or y (its output)");
  if (act == Act::leaky_relu && !x.present && slope < 0)
    args.fail("leaky_relu's backward needs x (the forward input) when negative_slope < 0");
}

void bind_activation(py::module_& m) {
  m.def(
      "activation_forward",
      [](py::handle x, py::handle y, const std::string& activation, double negative_slope) {
        ArgSet args("activation_forward");
        const Act act = parse_activation(args.fn(), activation, negative_slope);
        const ArrayArg& ax = args.floating("x", x, false);
        const ArrayArg& ay = args.floating("y", y, true);
        args.require_shape(ay, ax.shape, "x has shape");
        if (ay.data != ax.data) args.check_aliasing();  // in place (y is x) is allowed
        const int threads = num_threads();
        py::gil_scoped_release release;
        if (args.dtype() == DType::f32)
          GF_CALL(activation_forward<float>, act, negative_slope, ax.ptr<float>(), ay.ptr<float>(), ax.size, threads);
        else
          GF_CALL(activation_forward<double>, act, negative_slope, ax.ptr<double>(), ay.ptr<double>(), ax.size, threads);
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
        const ArrayArg& ax = args.floating("x", x, false, true);
        const ArrayArg& ay = args.floating("y", y, false, true);
        const ArrayArg& adx = args.floating("dx", dx, true);
        check_saved(args, activation, act, negative_slope, ax, ay);
        args.require_shape(ax, ady.shape, "dy has shape");
        args.require_shape(ay, ady.shape, "dy has shape");
        args.require_shape(adx, ady.shape, "dy has shape");
        if (adx.data != ady.data) args.check_aliasing();  // in place (dx is dy) is allowed
        const int threads = num_threads();
        py::gil_scoped_release release;
        if (args.dtype() == DType::f32)
          GF_CALL(activation_backward<float>, act, negative_slope, ady.ptr<float>(), ax.present ? ax.ptr<float>() : nullptr,
                  ay.present ? ay.ptr<float>() : nullptr, adx.ptr<float>(), ady.size, threads);
        else
          GF_CALL(activation_backward<double>, act, negative_slope, ady.ptr<double>(),
                  ax.present ? ax.ptr<double>() : nullptr, ay.present ? ay.ptr<double>() : nullptr, adx.ptr<double>(),
                  ady.size, threads);
      },
      "dy"_a, "dx"_a, py::kw_only(), "activation"_a, "x"_a = py::none(), "y"_a = py::none(),
      "negative_slope"_a = 0.01,
      "dx = dy * activation'(.), element-wise. Needs y (the forward output) for tanh and sigmoid, x (the input) "
      "for gelu and gelu_tanh, either for relu and leaky_relu; dx may be dy (in place).");
}

}  // namespace bind
}  // namespace gf
