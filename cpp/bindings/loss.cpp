// loss.cpp (bindings): softmax, the losses and the penalties (contract: gradfuse/loss.hpp).
//
// Thin: check every argument as the kernel table's rows say (python/gradfuse/table.py; the order
// of the Python checker: scalars, arrays (ArgSet / TensorLists: dtype, layout), shapes, aliasing,
// then the labels' range, which the table cannot say), all before anything is written; release
// the GIL; call the selected ISA's kernel. Losses return their value as a Python float.
#include <pybind11/pybind11.h>

#include <limits>
#include <string>

#include "arrays.hpp"
#include "gradfuse/kernels.hpp"
#include "gradfuse/loss.hpp"

namespace gf {
namespace bind {
namespace {

using namespace pybind11::literals;

// "mean" -> true, "sum" -> false; anything else is a ValueError.
bool parse_reduction(const std::string& fn, py::handle obj) {
  const std::string reduction = text(fn, "reduction", obj);
  if (reduction == "mean") return true;
  if (reduction == "sum") return false;
  value_error(fn, "reduction must be 'mean' or 'sum', got '" + reduction + "'", "reduction");
}

// Rows and columns of an array whose last axis is the class axis.
void rows_cols(const ArrayArg& a, int64_t& rows, int64_t& cols) {
  cols = a.shape.back();
  rows = cols > 0 ? a.size / cols : 0;  // no columns: nothing to do
}

// (N, K) scores and (N,) labels.
void check_labels(ArgSet& s, const ArrayArg& scores, const ArrayArg& labels) {
  s.require_dims(scores, {"N", "K"});
  s.require_dims(labels, {"N"});
}

// Each label in [0, K), unless it is ignore_index (when there is one).
void check_label_range(const ArgSet& s, const ArrayArg& labels, int64_t classes, bool has_ignore,
                       int64_t ignore_index) {
  const int64_t* y = labels.ptr<int64_t>();
  for (int64_t i = 0; i < labels.size; ++i) {
    if (has_ignore && y[i] == ignore_index) continue;
    if (y[i] < 0 || y[i] >= classes)
      value_error(s.fn(), "{arg} = " + std::to_string(y[i]) + " is out of range [0, " + std::to_string(classes) + ")",
                  labels.name, i);
  }
}

template <class F>
py::float_ run_loss(DType dtype, F&& f) {
  const int threads = num_threads();
  double value;
  {
    py::gil_scoped_release release;
    value = with_real_dtype(dtype, [&](auto zero) { return f(zero, threads); });
  }
  return py::float_(value);
}

void softmax_forward_binding(const std::string& fn, py::handle x, py::handle y, bool log) {
  ArgSet s(fn);
  const ArrayArg& xa = s.real("x", x, false);
  const ArrayArg& ya = s.real("y", y, true);
  s.require_dims(xa, {"...", "K"});  // the last axis is normalised
  s.require_like(ya, xa);
  s.allow_in_place(ya, xa);
  s.check_aliasing();
  int64_t rows, cols;
  rows_cols(xa, rows, cols);
  const int threads = num_threads();
  py::gil_scoped_release release;
  with_real_dtype(s.dtype(), [&](auto zero) {
    using T = decltype(zero);
    GF_CALL(softmax_forward<T>, xa.ptr<T>(), ya.ptr<T>(), rows, cols, log, threads);
  });
}

void softmax_backward_binding(const std::string& fn, py::handle y, py::handle dy, py::handle dx, bool log) {
  ArgSet s(fn);
  const ArrayArg& ya = s.real("y", y, false);
  const ArrayArg& dya = s.real("dy", dy, false);
  const ArrayArg& dxa = s.real("dx", dx, true);
  s.require_dims(ya, {"...", "K"});
  s.require_like(dya, ya);
  s.require_like(dxa, ya);
  s.allow_in_place(dxa, dya);  // dx may be dy itself; it must still not overlap y
  s.check_aliasing();
  int64_t rows, cols;
  rows_cols(ya, rows, cols);
  const int threads = num_threads();
  py::gil_scoped_release release;
  with_real_dtype(s.dtype(), [&](auto zero) {
    using T = decltype(zero);
    GF_CALL(softmax_backward<T>, ya.ptr<T>(), dya.ptr<T>(), dxa.ptr<T>(), rows, cols, log, threads);
  });
}

// pred/target/grad of an element-wise loss: same shape.
py::float_ squared_error_binding(const std::string& fn, py::handle pred, py::handle target, py::handle grad,
                                 bool mean) {
  ArgSet s(fn);
  const ArrayArg& p = s.real("pred", pred, false);
  const ArrayArg& t = s.wide("target", target, false);  // float32 beside bf16
  const ArrayArg& g = s.real("grad", grad, true, true);
  s.require_like(t, p);
  s.require_like(g, p);
  s.check_aliasing();
  const int64_t n = p.size;
  const double denom = mean ? static_cast<double>(n) : 1.0;
  return run_loss(s.dtype(), [&](auto zero, int threads) {
    using T = decltype(zero);
    const double sum = GF_CALL(squared_error<T>, p.ptr<T>(), t.ptr<compute_t<T>>(), g.present ? g.ptr<T>() : nullptr, n,
                               2.0 / denom, threads);
    return sum / denom;  // mean of nothing: 0 / 0 = NaN, as torch
  });
}

}  // namespace

void bind_loss(py::module_& m) {
  m.def(
      "softmax_forward", [](py::handle x, py::handle y) { softmax_forward_binding("softmax_forward", x, y, false); },
      "x"_a, "y"_a,
      "The C++ side of gf.ops.softmax_forward: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "softmax_backward",
      [](py::handle y, py::handle dy, py::handle dx) {
        softmax_backward_binding("softmax_backward", y, dy, dx, false);
      },
      "y"_a, "dy"_a, "dx"_a,
      "The C++ side of gf.ops.softmax_backward: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "log_softmax_forward",
      [](py::handle x, py::handle y) { softmax_forward_binding("log_softmax_forward", x, y, true); }, "x"_a, "y"_a,
      "The C++ side of gf.ops.log_softmax_forward: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "log_softmax_backward",
      [](py::handle y, py::handle dy, py::handle dx) {
        softmax_backward_binding("log_softmax_backward", y, dy, dx, true);
      },
      "y"_a, "dy"_a, "dx"_a,
      "The C++ side of gf.ops.log_softmax_backward: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "softmax_cross_entropy",
      [](py::handle logits, py::handle labels, py::handle grad, py::handle reduction, py::handle ignore_index,
         py::handle label_smoothing) {
        const std::string fn = "softmax_cross_entropy";
        CrossEntropyArgs a;
        a.mean = parse_reduction(fn, reduction);
        a.ignore_index = integer(fn, "ignore_index", ignore_index);
        a.label_smoothing = real(fn, "label_smoothing", label_smoothing);
        check_closed_unit(fn, "label_smoothing", a.label_smoothing);
        ArgSet s(fn);
        const ArrayArg& x = s.real("logits", logits, false);
        const ArrayArg& y = s.add("labels", labels, false, kInt64);
        const ArrayArg& g = s.real("grad", grad, true, true);
        check_labels(s, x, y);
        s.require_like(g, x);
        s.check_aliasing();
        check_label_range(s, y, x.shape[1], true, a.ignore_index);
        const int64_t rows = x.shape[0], cols = x.shape[1];
        return run_loss(s.dtype(), [&](auto zero, int threads) {
          using T = decltype(zero);
          return GF_CALL(softmax_cross_entropy<T>, x.ptr<T>(), y.ptr<int64_t>(), g.present ? g.ptr<T>() : nullptr, rows,
                         cols, a, threads);
        });
      },
      "logits"_a, "labels"_a, "grad"_a = py::none(), py::kw_only(), "reduction"_a = "mean", "ignore_index"_a = -100,
      "label_smoothing"_a = 0.0,
      "The C++ side of gf.ops.softmax_cross_entropy: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "multi_margin_loss",
      [](py::handle scores, py::handle labels, py::handle grad, py::handle p_, py::handle margin_,
         py::handle reduction) {
        const std::string fn = "multi_margin_loss";
        const int64_t p = integer(fn, "p", p_);
        if (p != 1 && p != 2) value_error(fn, "p must be 1 or 2, got " + std::to_string(p), "p");
        const double margin = real(fn, "margin", margin_);
        check_finite(fn, "margin", margin);
        const bool mean = parse_reduction(fn, reduction);
        ArgSet s(fn);
        const ArrayArg& x = s.real("scores", scores, false);
        const ArrayArg& y = s.add("labels", labels, false, kInt64);
        const ArrayArg& g = s.real("grad", grad, true, true);
        check_labels(s, x, y);
        s.require_like(g, x);
        s.check_aliasing();
        check_label_range(s, y, x.shape[1], false, 0);
        const int64_t rows = x.shape[0], cols = x.shape[1];
        return run_loss(s.dtype(), [&](auto zero, int threads) {
          using T = decltype(zero);
          return GF_CALL(multi_margin_loss<T>, x.ptr<T>(), y.ptr<int64_t>(), g.present ? g.ptr<T>() : nullptr, rows,
                         cols, static_cast<int>(p), margin, mean, threads);
        });
      },
      "scores"_a, "labels"_a, "grad"_a = py::none(), py::kw_only(), "p"_a = 1, "margin"_a = 1.0, "reduction"_a = "mean",
      "The C++ side of gf.ops.multi_margin_loss: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "mse_loss",
      [](py::handle pred, py::handle target, py::handle grad, py::handle reduction) {
        const std::string fn = "mse_loss";
        const bool mean = parse_reduction(fn, reduction);
        return squared_error_binding(fn, pred, target, grad, mean);
      },
      "pred"_a, "target"_a, "grad"_a = py::none(), py::kw_only(), "reduction"_a = "mean",
      "The C++ side of gf.ops.mse_loss: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "sum_of_squares_loss",
      [](py::handle pred, py::handle target, py::handle grad) {
        return squared_error_binding("sum_of_squares_loss", pred, target, grad, false);
      },
      "pred"_a, "target"_a, "grad"_a = py::none(),
      "The C++ side of gf.ops.sum_of_squares_loss: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "bce_with_logits",
      [](py::handle logits, py::handle targets, py::handle grad, py::handle reduction, py::handle pos_weight) {
        const std::string fn = "bce_with_logits";
        const bool mean = parse_reduction(fn, reduction);
        ArgSet s(fn);
        const ArrayArg& x = s.real("logits", logits, false);
        const ArrayArg& t = s.wide("targets", targets, false);  // float32 beside bf16
        const ArrayArg& g = s.real("grad", grad, true, true);
        const ArrayArg& pw = s.wide("pos_weight", pos_weight, false, true);
        s.require_like(t, x);
        s.require_like(g, x);
        int64_t cols = 0;
        if (pw.present) {
          if (x.ndim() < 1) s.fail(pw, "{arg} needs logits with a class axis (the last), got shape ()");
          cols = x.shape.back();
          s.require_shape(pw, {cols}, "must be (C,) =");
        }
        s.check_aliasing();
        const int64_t n = x.size;
        const double denom = mean ? static_cast<double>(n) : 1.0;
        return run_loss(s.dtype(), [&](auto zero, int threads) {
          using T = decltype(zero);
          using C = compute_t<T>;
          const double sum = GF_CALL(bce_with_logits<T>, x.ptr<T>(), t.ptr<C>(), pw.present ? pw.ptr<C>() : nullptr,
                                     g.present ? g.ptr<T>() : nullptr, n, cols, 1.0 / denom, threads);
          return sum / denom;
        });
      },
      "logits"_a, "targets"_a, "grad"_a = py::none(), py::kw_only(), "reduction"_a = "mean",
      "pos_weight"_a = py::none(),
      "The C++ side of gf.ops.bce_with_logits: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "penalty",
      [](py::handle params, py::handle grads, py::handle l1_, py::handle l2_) {
        const std::string fn = "penalty";
        const double l1 = real(fn, "l1", l1_);
        check_nonneg(fn, "l1", l1);
        const double l2 = real(fn, "l2", l2_);
        check_nonneg(fn, "l2", l2);
        TensorLists lists(fn, {{"params", params, false, true, kReal}, {"grads", grads, true, false, kReal}});
        if (lists.empty()) return py::float_(0.0);
        return run_loss(lists.dtype(), [&](auto zero, int threads) {
          using T = decltype(zero);
          return GF_CALL(penalty<T>, lists.segments<T>(), l1, l2, threads);
        });
      },
      "params"_a, "grads"_a = py::none(), py::kw_only(), "l1"_a = 0.0, "l2"_a = 0.0,
      "The C++ side of gf.ops.penalty: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");
}

}  // namespace bind
}  // namespace gf
