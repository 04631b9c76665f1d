// dropout.cpp (bindings): gradfuse._core.dropout_forward / dropout_backward / dropout_mask_bytes /
// philox4x32_10. The contract is in gradfuse/dropout.hpp.
//
// Thin: check every argument as the kernel table's rows say (python/gradfuse/table.py; the order
// of the Python checker: scalars, arrays, shapes, aliasing), release the GIL, call the selected
// ISA's kernel.
#include <pybind11/pybind11.h>

#include "arrays.hpp"
#include "gradfuse/dropout.hpp"
#include "gradfuse/kernels.hpp"

namespace gf {
namespace bind {
namespace {

using namespace pybind11::literals;

// p in [0, 1], with torch's wording (torch.nn.functional.dropout) after the function's name.
double probability(const std::string& fn, py::handle obj) {
  const double p = real(fn, "p", obj);
  if (!(p >= 0 && p <= 1)) value_error(fn, "dropout probability has to be between 0 and 1, but got " + num(p), "p");
  return p;
}

// An int (or an object with __index__, e.g. a NumPy integer; not a bool) in [0, 2**64).
uint64_t parse_u64(const std::string& fn, const char* name, py::handle obj) {
  PyObject* o = obj.ptr();
  if (PyBool_Check(o) || !PyIndex_Check(o))
    type_error(fn, "{arg} must be an int, got " + py::type::handle_of(obj).attr("__name__").cast<std::string>(), name);
  py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(o));
  if (!value) throw py::error_already_set();
  const int negative = PyObject_RichCompareBool(value.ptr(), py::int_(0).ptr(), Py_LT);
  if (negative < 0) throw py::error_already_set();
  bool ok = negative == 0;
  unsigned long long v = 0;
  if (ok) {
    v = PyLong_AsUnsignedLongLong(value.ptr());
    if (v == ~0ull && PyErr_Occurred()) {
      PyErr_Clear();
      ok = false;
    }
  }
  if (!ok) value_error(fn, "{arg} must be an int in [0, 2**64), got " + py::str(value).cast<std::string>(), name);
  return v;
}

}  // namespace

void bind_dropout(py::module_& m) {
  m.def(
      "dropout_forward",
      [](py::handle x, py::handle y, py::handle mask, py::handle p_, py::handle seed, py::handle counter) {
        const std::string fn = "dropout_forward";
        const double p = probability(fn, p_);
        const uint64_t s = parse_u64(fn, "seed", seed), c = parse_u64(fn, "counter", counter);
        ArgSet args(fn);
        const ArrayArg& ax = args.real("x", x, false);
        const ArrayArg& ay = args.real("y", y, true);
        const ArrayArg& am = args.add("mask", mask, true, kUint8);
        args.require_like(ay, ax);
        args.require_shape(am, {dropout_mask_bytes(ax.size)}, "x.size = " + std::to_string(ax.size) + " needs");
        args.allow_in_place(ay, ax);
        args.check_aliasing();
        const int64_t n = ax.size;
        const int threads = num_threads();
        py::gil_scoped_release release;
        with_real_dtype(args.dtype(), [&](auto zero) {
          using T = decltype(zero);
          GF_CALL(dropout_forward<T>, ax.ptr<T>(), ay.ptr<T>(), am.ptr<uint8_t>(), n, p, s, c, threads);
        });
      },
      "x"_a, "y"_a, "mask"_a, py::kw_only(), "p"_a, "seed"_a, "counter"_a,
      "The C++ side of gf.ops.dropout_forward: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "dropout_backward",
      [](py::handle dy, py::handle mask, py::handle dx, py::handle p_) {
        const std::string fn = "dropout_backward";
        const double p = probability(fn, p_);
        ArgSet args(fn);
        const ArrayArg& ady = args.real("dy", dy, false);
        const ArrayArg& am = args.add("mask", mask, false, kUint8);
        const ArrayArg& adx = args.real("dx", dx, true);
        args.require_shape(am, {dropout_mask_bytes(ady.size)}, "dy.size = " + std::to_string(ady.size) + " needs");
        args.require_like(adx, ady);
        args.allow_in_place(adx, ady);
        args.check_aliasing();
        const int64_t n = ady.size;
        const int threads = num_threads();
        py::gil_scoped_release release;
        with_real_dtype(args.dtype(), [&](auto zero) {
          using T = decltype(zero);
          GF_CALL(dropout_backward<T>, ady.ptr<T>(), am.ptr<uint8_t>(), adx.ptr<T>(), n, p, threads);
        });
      },
      "dy"_a, "mask"_a, "dx"_a, py::kw_only(), "p"_a,
      "The C++ side of gf.ops.dropout_backward: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "dropout_mask_bytes",
      [](py::handle n_) {
        const int64_t n = integer("dropout_mask_bytes", "n", n_);
        if (n < 0) value_error("dropout_mask_bytes", "{arg} must be >= 0, got " + std::to_string(n), "n");
        return dropout_mask_bytes(n);
      },
      "n"_a,
      "The C++ side of gf.ops.dropout_mask_bytes: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");

  m.def(
      "philox4x32_10",
      [](py::handle counters, py::handle key, py::handle out) {
        const std::string fn = "philox4x32_10";
        ArgSet args(fn);
        const ArrayArg& ac = args.add("counters", counters, false, kUint32);
        const ArrayArg& ak = args.add("key", key, false, kUint32);
        const ArrayArg& ao = args.add("out", out, true, kUint32);
        args.require_dims(ac, {"N", 4});
        args.require_dims(ak, {2});
        args.require_like(ao, ac);
        args.check_aliasing();
        const int64_t n = ac.shape[0];
        const uint32_t k0 = ak.ptr<uint32_t>()[0], k1 = ak.ptr<uint32_t>()[1];
        const int threads = num_threads();
        py::gil_scoped_release release;
        GF_CALL(philox4x32_10, ac.ptr<uint32_t>(), n, k0, k1, ao.ptr<uint32_t>(), threads);
      },
      "counters"_a, "key"_a, "out"_a,
      "The C++ side of gf.ops.philox4x32_10: its doc, defaults and checks are its row of the kernel table "
      "(python/gradfuse/table.py).");
}

}  // namespace bind
}  // namespace gf
