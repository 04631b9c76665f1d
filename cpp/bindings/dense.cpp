// dense.cpp (bindings): gradfuse._core.matmul / dense_forward / dense_backward.
#include <pybind11/pybind11.h>

#include <climits>

#include "activation_args.hpp"
#include "arrays.hpp"
#include "gradfuse/blas.hpp"
#include "gradfuse/dense.hpp"

namespace gf {
namespace bind {
namespace {

using namespace pybind11::literals;

void require_matrix(const ArgSet& args, const ArrayArg& a) {
  if (a.present && a.ndim() != 2) args.fail(a, "{arg} must be 2-D, got shape " + shape_str(a.shape));
}

// The BLAS interface takes int dimensions.
void require_int_dims(const ArgSet& args, std::initializer_list<const ArrayArg*> arrays) {
  for (const ArrayArg* a : arrays)
    for (int64_t d : a->shape)
      if (d > INT_MAX) args.fail(*a, "{arg} has a dimension over 2^31 - 1 (the BLAS interface's limit)");
}

}  // namespace

void bind_dense(py::module_& m) {
  m.def(
      "matmul",
      [](py::handle a, py::handle b, py::handle c, bool trans_a, bool trans_b, bool accumulate) {
        ArgSet args("matmul");
        const ArrayArg& aa = args.floating("a", a, false);
        const ArrayArg& ab = args.floating("b", b, false);
        const ArrayArg& ac = args.floating("c", c, true);
        for (const ArrayArg* x : {&aa, &ab, &ac}) require_matrix(args, *x);
        GemmArgs g;
        g.trans_a = trans_a, g.trans_b = trans_b, g.accumulate = accumulate;
        g.m = trans_a ? aa.shape[1] : aa.shape[0];
        g.k = trans_a ? aa.shape[0] : aa.shape[1];
        const int64_t kb = trans_b ? ab.shape[1] : ab.shape[0];
        g.n = trans_b ? ab.shape[0] : ab.shape[1];
        if (kb != g.k)
          args.fail(ab, "op(a) has shape " + shape_str({g.m, g.k}) + " and op({arg}) " + shape_str({kb, g.n}) +
                            ": the inner dimensions differ");
        args.require_shape(ac, {g.m, g.n}, "op(a) @ op(b) has shape");
        args.check_aliasing();
        require_int_dims(args, {&aa, &ab, &ac});
        const int threads = num_threads();
        py::gil_scoped_release release;
        with_dtype(args.dtype(), [&](auto t) {
          using T = decltype(t);
          GF_CALL(matmul<T>, g, aa.ptr<T>(), ab.ptr<T>(), ac.ptr<T>(), threads);
        });
      },
      "a"_a, "b"_a, "c"_a, py::kw_only(), "trans_a"_a = false, "trans_b"_a = false, "accumulate"_a = false,
      "c = op(a) @ op(b), or c += ... with accumulate; op transposes when trans_a / trans_b. Deterministic for every "
      "thread count.");

  m.def(
      "dense_forward",
      [](py::handle x, py::handle weight, py::handle bias, py::handle y, const std::string& activation,
         double negative_slope, py::handle z) {
        ArgSet args("dense_forward");
        const Act act = parse_activation(args.fn(), activation, negative_slope);
        const ArrayArg& ax = args.floating("x", x, false);
        const ArrayArg& aw = args.floating("weight", weight, false);
        const ArrayArg& ab = args.floating("bias", bias, false, true);
        const ArrayArg& ay = args.floating("y", y, true);
        const ArrayArg& az = args.floating("z", z, true, true);
        require_matrix(args, ax);
        require_matrix(args, aw);
        const int64_t n = ax.shape[0], in = ax.shape[1], out = aw.shape[1];
        args.require_shape(aw, {in, out}, "x has shape " + shape_str(ax.shape) + ", so it must be (in_features, out_features) =");
        args.require_shape(ab, {out}, "weight has shape " + shape_str(aw.shape) + ", so it must be");
        args.require_shape(ay, {n, out}, "x @ weight has shape");
        args.require_shape(az, {n, out}, "x @ weight has shape");
        args.check_aliasing();
        require_int_dims(args, {&ax, &aw});
        const int threads = num_threads();
        py::gil_scoped_release release;
        with_dtype(args.dtype(), [&](auto t) {
          using T = decltype(t);
          GF_CALL(dense_forward<T>, act, negative_slope, ax.ptr<T>(), aw.ptr<T>(), ab.ptr_or_null<T>(), ay.ptr<T>(),
                  az.ptr_or_null<T>(), n, in, out, threads);
        });
      },
      "x"_a, "weight"_a, "bias"_a, "y"_a, py::kw_only(), "activation"_a = "none", "negative_slope"_a = 0.01,
      "z"_a = py::none(),
      "y = activation(x @ weight + bias); weight (in_features, out_features), bias (out_features,) or None; z, if "
      "given, receives the pre-activation x @ weight + bias (gelu's backward needs it).");

  m.def(
      "dense_backward",
      [](py::handle dy, py::handle x, py::handle weight, py::handle dx, py::handle dweight, py::handle dbias,
         const std::string& activation, py::handle y, py::handle z, double negative_slope, bool accumulate,
         py::handle dz) {
        ArgSet args("dense_backward");
        const Act act = parse_activation(args.fn(), activation, negative_slope);
        const ArrayArg& ady = args.floating("dy", dy, false);
        const ArrayArg& ax = args.floating("x", x, false);
        const ArrayArg& aw = args.floating("weight", weight, false);
        const ArrayArg& adx = args.floating("dx", dx, true, true);
        const ArrayArg& adw = args.floating("dweight", dweight, true, true);
        const ArrayArg& adb = args.floating("dbias", dbias, true, true);
        const ArrayArg& ay = args.floating("y", y, false, true);
        const ArrayArg& az = args.floating("z", z, false, true);
        const ArrayArg& adz = args.floating("dz", dz, true, true);
        require_matrix(args, ax);
        require_matrix(args, aw);
        const int64_t n = ax.shape[0], in = ax.shape[1], out = aw.shape[1];
        args.require_shape(aw, {in, out}, "x has shape " + shape_str(ax.shape) + ", so it must be (in_features, out_features) =");
        args.require_shape(ady, {n, out}, "x @ weight has shape");
        args.require_shape(adx, {n, in}, "x has shape");
        args.require_shape(adw, {in, out}, "weight has shape");
        args.require_shape(adb, {out}, "the bias has shape");
        for (const ArrayArg* a : {&ay, &az, &adz}) args.require_shape(*a, {n, out}, "x @ weight has shape");
        args.check_aliasing();
        check_saved(args, activation, act, negative_slope, az, ay);  // z plays the activation's input
        require_int_dims(args, {&ax, &aw});
        const int threads = num_threads();
        py::gil_scoped_release release;
        with_dtype(args.dtype(), [&](auto t) {
          using T = decltype(t);
          GF_CALL(dense_backward<T>, act, negative_slope, ady.ptr<T>(), ax.ptr<T>(), aw.ptr<T>(), ay.ptr_or_null<T>(),
                  az.ptr_or_null<T>(), adz.ptr_or_null<T>(), adx.ptr_or_null<T>(), adw.ptr_or_null<T>(),
                  adb.ptr_or_null<T>(), accumulate, n, in, out, threads);
        });
      },
      "dy"_a, "x"_a, "weight"_a, "dx"_a, "dweight"_a, "dbias"_a, py::kw_only(), "activation"_a = "none",
      "y"_a = py::none(), "z"_a = py::none(), "negative_slope"_a = 0.01, "accumulate"_a = false, "dz"_a = py::none(),
      "Backward of dense_forward: dz = dy * activation'(.) (from y, the forward output, or z, the "
      "pre-activation: tanh/sigmoid need y, gelu needs z, relu either), dbias = column sums of dz, dx = dz @ "
      "weight.T, dweight = x.T @ dz; dx, dweight, dbias may each be None (not computed); accumulate adds into "
      "dweight and dbias; dz is an optional scratch array (else one is allocated).");
}

}  // namespace bind
}  // namespace gf
