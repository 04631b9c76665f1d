// dense.cpp (bindings): gradfuse._core.matmul / dense_forward / dense_backward.
//
// Thin: check every argument as the kernel table's rows say (python/gradfuse/table.py; the order
// of the Python checker: scalars, arrays, shapes, aliasing, then what the table cannot say: the
// saved tensors an activation's backward needs, the BLAS interface's int dimensions), release the
// GIL, call the kernel.
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
      [](py::handle a, py::handle b, py::handle c, py::handle trans_a, py::handle trans_b, py::handle accumulate) {
        ArgSet args("matmul");
        GemmArgs g;
        g.trans_a = flag(args.fn(), "trans_a", trans_a);
        g.trans_b = flag(args.fn(), "trans_b", trans_b);
        g.accumulate = flag(args.fn(), "accumulate", accumulate);
        const ArrayArg& aa = args.real("a", a, false);
        const ArrayArg& ab = args.real("b", b, false);
        const ArrayArg& ac = args.wide("c", c, true);  // float32 beside bf16 a, b
        if (g.trans_a) args.require_dims(aa, {"K", "M"});
        else args.require_dims(aa, {"M", "K"});
        if (g.trans_b) args.require_dims(ab, {"N", "K"});
        else args.require_dims(ab, {"K", "N"});
        args.require_dims(ac, {"M", "N"});
        g.m = args.dim("M"), g.k = args.dim("K"), g.n = args.dim("N");
        args.check_aliasing();
        require_int_dims(args, {&aa, &ab});  // they hold every dimension of the call
        const int threads = num_threads();
        py::gil_scoped_release release;
        if (args.dtype() == DType::bf16)
          GF_CALL(matmul_bf16<float>, g, aa.ptr<bf16>(), ab.ptr<bf16>(), ac.ptr<float>(), threads);
        else
          with_dtype(args.dtype(), [&](auto t) {
            using T = decltype(t);
            GF_CALL(matmul<T>, g, aa.ptr<T>(), ab.ptr<T>(), ac.ptr<T>(), threads);
          });
      },
      "a"_a, "b"_a, "c"_a, py::kw_only(), "trans_a"_a = false, "trans_b"_a = false, "accumulate"_a = false,
      "The C++ side of gf.ops.matmul: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "dense_forward",
      [](py::handle x, py::handle weight, py::handle bias, py::handle y, py::handle activation,
         py::handle negative_slope, py::handle z) {
        ArgSet args("dense_forward");
        const ActArgs act = activation_args(args.fn(), activation, negative_slope);
        const ArrayArg& ax = args.real("x", x, false);
        const ArrayArg& aw = args.real("weight", weight, false);
        const ArrayArg& ab = args.wide("bias", bias, false, true);  // float32 beside bf16
        const ArrayArg& ay = args.real("y", y, true);
        const ArrayArg& az = args.real("z", z, true, true);
        args.require_dims(ax, {"N", "IN"});
        args.require_dims(aw, {"IN", "OUT"});
        args.require_dims(ab, {"OUT"});
        args.require_dims(ay, {"N", "OUT"});
        args.require_dims(az, {"N", "OUT"});
        const int64_t n = args.dim("N"), in = args.dim("IN"), out = args.dim("OUT");
        args.check_aliasing();
        require_int_dims(args, {&ax, &aw});
        const int threads = num_threads();
        py::gil_scoped_release release;
        if (args.dtype() == DType::bf16)
          GF_CALL(dense_forward_bf16, act.act, act.slope, ax.ptr<bf16>(), aw.ptr<bf16>(), ab.ptr_or_null<float>(),
                  ay.ptr<bf16>(), az.ptr_or_null<bf16>(), n, in, out, threads);
        else
          with_dtype(args.dtype(), [&](auto t) {
            using T = decltype(t);
            GF_CALL(dense_forward<T>, act.act, act.slope, ax.ptr<T>(), aw.ptr<T>(), ab.ptr_or_null<T>(), ay.ptr<T>(),
                    az.ptr_or_null<T>(), n, in, out, threads);
          });
      },
      "x"_a, "weight"_a, "bias"_a, "y"_a, py::kw_only(), "activation"_a = "none", "negative_slope"_a = 0.01,
      "z"_a = py::none(),
      "The C++ side of gf.ops.dense_forward: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "dense_backward",
      [](py::handle dy, py::handle x, py::handle weight, py::handle dx, py::handle dweight, py::handle dbias,
         py::handle activation, py::handle y, py::handle z, py::handle negative_slope, py::handle accumulate_,
         py::handle dz) {
        ArgSet args("dense_backward");
        const ActArgs act = activation_args(args.fn(), activation, negative_slope);
        const bool accumulate = flag(args.fn(), "accumulate", accumulate_);
        const ArrayArg& ady = args.real("dy", dy, false);
        const ArrayArg& ax = args.real("x", x, false);
        const ArrayArg& aw = args.real("weight", weight, false);
        const ArrayArg& adx = args.real("dx", dx, true, true);
        const ArrayArg& adw = args.wide("dweight", dweight, true, true);  // float32 beside bf16: they
        const ArrayArg& adb = args.wide("dbias", dbias, true, true);      // feed float32 master weights
        const ArrayArg& ay = args.real("y", y, false, true);
        const ArrayArg& az = args.real("z", z, false, true);
        const ArrayArg& adz = args.real("dz", dz, true, true);
        args.require_dims(ax, {"N", "IN"});  // the row's shape_order: x, weight first
        args.require_dims(aw, {"IN", "OUT"});
        args.require_dims(ady, {"N", "OUT"});
        args.require_dims(adx, {"N", "IN"});
        args.require_dims(adw, {"IN", "OUT"});
        args.require_dims(adb, {"OUT"});
        for (const ArrayArg* a : {&ay, &az, &adz}) args.require_dims(*a, {"N", "OUT"});
        const int64_t n = args.dim("N"), in = args.dim("IN"), out = args.dim("OUT");
        args.check_aliasing();
        check_saved(args, act, az, ay);  // z plays the activation's input
        require_int_dims(args, {&ax, &aw});
        const int threads = num_threads();
        py::gil_scoped_release release;
        if (args.dtype() == DType::bf16)
          GF_CALL(dense_backward_bf16, act.act, act.slope, ady.ptr<bf16>(), ax.ptr<bf16>(), aw.ptr<bf16>(),
                  ay.ptr_or_null<bf16>(), az.ptr_or_null<bf16>(), adz.ptr_or_null<bf16>(), adx.ptr_or_null<bf16>(),
                  adw.ptr_or_null<float>(), adb.ptr_or_null<float>(), accumulate, n, in, out, threads);
        else
          with_dtype(args.dtype(), [&](auto t) {
            using T = decltype(t);
            GF_CALL(dense_backward<T>, act.act, act.slope, ady.ptr<T>(), ax.ptr<T>(), aw.ptr<T>(), ay.ptr_or_null<T>(),
                    az.ptr_or_null<T>(), adz.ptr_or_null<T>(), adx.ptr_or_null<T>(), adw.ptr_or_null<T>(),
                    adb.ptr_or_null<T>(), accumulate, n, in, out, threads);
          });
      },
      "dy"_a, "x"_a, "weight"_a, "dx"_a, "dweight"_a, "dbias"_a, py::kw_only(), "activation"_a = "none",
      "y"_a = py::none(), "z"_a = py::none(), "negative_slope"_a = 0.01, "accumulate"_a = false, "dz"_a = py::none(),
      "The C++ side of gf.ops.dense_backward: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");
}

}  // namespace bind
}  // namespace gf
