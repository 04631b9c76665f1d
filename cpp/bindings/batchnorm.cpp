// batchnorm.cpp (bindings): gradfuse._core.batchnorm_forward / batchnorm_backward.
//
// Thin: check every argument as the kernel table's rows say (python/gradfuse/table.py; the order of
// the Python checker: scalars, arrays, shapes, aliasing, then the rules the table cannot say, which
// the NumPy twins in python/gradfuse/_numpy/batchnorm.py check too) before anything is written,
// release the GIL, call the selected ISA's kernel.
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "arrays.hpp"
#include "gradfuse/batchnorm.hpp"
#include "gradfuse/kernels.hpp"

namespace gf {
namespace bind {
namespace {

using namespace pybind11::literals;

// x as (n, c, l): channels first (N, C, *S) or channels last (N, *S, C); l = prod(S). Checks x's
// shape (the kernel table's rule; it binds N, C and the spatial dimensions) first.
struct Dims {
  int64_t n = 0, c = 0, l = 1;
};

Dims dims_of(ArgSet& args, const ArrayArg& x, bool channels_last) {
  if (channels_last) args.require_dims(x, {"N", "...", "C"});
  else args.require_dims(x, {"N", "C", "..."});
  Dims d;
  d.n = x.shape[0];
  d.c = args.dim("C");
  const int first = channels_last ? 1 : 2, last = channels_last ? x.ndim() - 1 : x.ndim();
  for (int i = first; i < last; ++i) d.l *= x.shape[i];
  return d;
}

void require_channels(ArgSet& args, std::initializer_list<const ArrayArg*> arrays) {
  for (const ArrayArg* a : arrays) args.require_dims(*a, {"C"});
}

template <class T>
BnForward<T> forward_args(const Dims& d, const ArrayArg& x, const ArrayArg& w, const ArrayArg& b, const ArrayArg& rm,
                          const ArrayArg& rv, const ArrayArg& y, const ArrayArg& sm, const ArrayArg& si, bool batch,
                          double momentum, double eps, bool channels_last) {
  using R = compute_t<T>;  // the per-channel arrays' dtype (float32 beside bf16 data)
  BnForward<T> f;
  f.x = x.ptr<T>(), f.y = y.ptr<T>(), f.weight = w.ptr_or_null<R>(), f.bias = b.ptr_or_null<R>();
  f.running_mean = rm.ptr_or_null<R>(), f.running_var = rv.ptr_or_null<R>();
  f.save_mean = sm.ptr<R>(), f.save_invstd = si.ptr<R>();
  f.n = d.n, f.c = d.c, f.l = d.l, f.channels_last = channels_last;
  f.batch_stats = batch, f.momentum = momentum, f.eps = eps;
  return f;
}

template <class T>
BnBackward<T> backward_args(const Dims& d, const ArrayArg& dy, const ArrayArg& x, const ArrayArg& w, const ArrayArg& sm,
                            const ArrayArg& si, const ArrayArg& dx, const ArrayArg& dw, const ArrayArg& db,
                            bool training, bool channels_last) {
  using R = compute_t<T>;
  BnBackward<T> g;
  g.dy = dy.ptr<T>(), g.x = x.ptr<T>(), g.weight = w.ptr_or_null<R>();
  g.save_mean = sm.ptr<R>(), g.save_invstd = si.ptr<R>();
  g.dx = dx.ptr<T>(), g.dweight = dw.ptr_or_null<R>(), g.dbias = db.ptr_or_null<R>();
  g.n = d.n, g.c = d.c, g.l = d.l, g.channels_last = channels_last, g.batch_stats = training;
  return g;
}

}  // namespace

void bind_batchnorm(py::module_& m) {
  m.def(
      "batchnorm_forward",
      [](py::handle x, py::handle weight, py::handle bias, py::handle running_mean, py::handle running_var,
         py::handle y, py::handle save_mean, py::handle save_invstd, py::handle training_, py::handle momentum_,
         py::handle eps_, py::handle channels_last_) {
        const std::string fn = "batchnorm_forward";
        const bool training = flag(fn, "training", training_);
        const double momentum = real(fn, "momentum", momentum_);
        check_closed_unit(fn, "momentum", momentum);
        const double eps = real(fn, "eps", eps_);
        check_nonneg(fn, "eps", eps);
        const bool channels_last = flag(fn, "channels_last", channels_last_);
        ArgSet args(fn);
        const ArrayArg& ax = args.real("x", x, false);
        const ArrayArg& aw = args.wide("weight", weight, false, true);
        const ArrayArg& ab = args.wide("bias", bias, false, true);
        const ArrayArg& arm = args.wide("running_mean", running_mean, true, true);
        const ArrayArg& arv = args.wide("running_var", running_var, true, true);
        const ArrayArg& ay = args.real("y", y, true);
        const ArrayArg& asm_ = args.wide("save_mean", save_mean, true);
        const ArrayArg& asi = args.wide("save_invstd", save_invstd, true);
        const Dims d = dims_of(args, ax, channels_last);
        require_channels(args, {&aw, &ab, &arm, &arv});
        args.require_like(ay, ax);
        require_channels(args, {&asm_, &asi});
        args.allow_in_place(ay, ax);
        args.check_aliasing();
        if (arm.present != arv.present)
          args.fail(arm, "running_mean and running_var must both be arrays or both be None");
        const bool batch = training || !arm.present;
        if (batch && !(eps > 0))
          value_error(fn, "{arg} must be > 0 when the batch statistics are used (training), got " + num(eps), "eps");
        if (batch && d.n * d.l == 1)
          args.fail(ax, "Expected more than 1 value per channel when training, got input size " + shape_str(ax.shape));
        const int threads = num_threads();
        with_real_dtype(args.dtype(), [&](auto zero) {
          using T = decltype(zero);
          const auto f = forward_args<T>(d, ax, aw, ab, arm, arv, ay, asm_, asi, batch, momentum, eps, channels_last);
          py::gil_scoped_release release;
          GF_CALL(batchnorm_forward<T>, f, threads);
        });
      },
      "x"_a, "weight"_a, "bias"_a, "running_mean"_a, "running_var"_a, "y"_a, "save_mean"_a, "save_invstd"_a,
      py::kw_only(), "training"_a = true, "momentum"_a = 0.1, "eps"_a = 1e-5, "channels_last"_a = false,
      "The C++ side of gf.ops.batchnorm_forward: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "batchnorm_backward",
      [](py::handle dy, py::handle x, py::handle weight, py::handle save_mean, py::handle save_invstd, py::handle dx,
         py::handle dweight, py::handle dbias, py::handle training_, py::handle channels_last_) {
        const std::string fn = "batchnorm_backward";
        const bool training = flag(fn, "training", training_);
        const bool channels_last = flag(fn, "channels_last", channels_last_);
        ArgSet args(fn);
        const ArrayArg& ady = args.real("dy", dy, false);
        const ArrayArg& ax = args.real("x", x, false);
        const ArrayArg& aw = args.wide("weight", weight, false, true);
        const ArrayArg& asm_ = args.wide("save_mean", save_mean, false);
        const ArrayArg& asi = args.wide("save_invstd", save_invstd, false);
        const ArrayArg& adx = args.real("dx", dx, true);
        const ArrayArg& adw = args.wide("dweight", dweight, true, true);
        const ArrayArg& adb = args.wide("dbias", dbias, true, true);
        const Dims d = dims_of(args, ax, channels_last);  // the row's shape_order: x first
        args.require_like(ady, ax);
        require_channels(args, {&aw, &asm_, &asi});
        args.require_like(adx, ax);
        require_channels(args, {&adw, &adb});
        args.allow_in_place(adx, ady);
        args.check_aliasing();
        const int threads = num_threads();
        with_real_dtype(args.dtype(), [&](auto zero) {
          using T = decltype(zero);
          const auto g = backward_args<T>(d, ady, ax, aw, asm_, asi, adx, adw, adb, training, channels_last);
          py::gil_scoped_release release;
          GF_CALL(batchnorm_backward<T>, g, threads);
        });
      },
      "dy"_a, "x"_a, "weight"_a, "save_mean"_a, "save_invstd"_a, "dx"_a, "dweight"_a, "dbias"_a, py::kw_only(),
      "training"_a = true, "channels_last"_a = false,
      "The C++ side of gf.ops.batchnorm_backward: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");
}

}  // namespace bind
}  // namespace gf
