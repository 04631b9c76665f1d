// arrays.cpp: see arrays.hpp.
#include "arrays.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace gf {
namespace bind {
namespace {

using py::detail::npy_api;

std::string shape_str(const py::detail::PyArray_Proxy* a) {
  std::ostringstream s;
  s << '(';
  for (int d = 0; d < a->nd; ++d) s << (d ? ", " : "") << a->dimensions[d];
  s << (a->nd == 1 ? ",)" : ")");
  return s.str();
}

const char* dtype_name(DType t) { return t == DType::f32 ? "float32" : "float64"; }

std::string item_name(const TensorArg& arg, size_t i, bool is_list) {
  return is_list ? std::string(arg.name) + "[" + std::to_string(i) + "]" : std::string(arg.name);
}

struct Range {
  const char* begin;
  const char* end;
  size_t arg;
  size_t index;
};

}  // namespace

void raise_type(const std::string& msg) { throw py::type_error(msg); }
void raise_value(const std::string& msg) { throw py::value_error(msg); }

TensorLists::TensorLists(const std::string& fn, std::vector<TensorArg> args) {
  const auto& api = npy_api::get();
  const size_t nargs = args.size();
  std::vector<std::vector<py::handle>> items(nargs);
  std::vector<bool> is_list(nargs, false);
  present_.assign(std::max<size_t>(nargs, kMaxStates + 2), false);
  base_.resize(present_.size());

  // 1. Each argument: an ndarray, a list/tuple of them, or None where optional.
  for (size_t a = 0; a < nargs; ++a) {
    const TensorArg& arg = args[a];
    PyObject* o = arg.obj.ptr();
    if (o == nullptr || o == Py_None) {
      if (arg.required) raise_type(fn + ": " + arg.name + " is required (got None)");
      continue;
    }
    present_[a] = true;
    if (api.PyArray_Check_(o)) {
      items[a].push_back(arg.obj);
    } else if (PyList_Check(o) || PyTuple_Check(o)) {
      is_list[a] = true;
      const Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
      PyObject** data = PySequence_Fast_ITEMS(o);
      items[a].assign(data, data + n);
    } else {
      raise_type(fn + ": " + arg.name + " must be a numpy.ndarray or a list of them, got " +
                 std::string(Py_TYPE(o)->tp_name));
    }
    if (a > 0 && items[a].size() != items[0].size())
      raise_value(fn + ": " + arg.name + " has " + std::to_string(items[a].size()) + " arrays but " +
                  args[0].name + " has " + std::to_string(items[0].size()));
  }
  const size_t n = items[0].size();

  // 2. Each array: ndarray, native float32/float64 (the dtype of the first one), C-contiguous,
  //    aligned, writeable when written, and the shape of its parameter.
  std::vector<const py::detail::PyArray_Proxy*> first(n, nullptr);
  std::vector<Range> written, read;
  written.reserve(n * nargs);
  bool have_dtype = false;
  keep_.reserve(n * nargs);
  for (size_t a = 0; a < nargs; ++a) {
    if (!present_[a]) continue;
    const TensorArg& arg = args[a];
    for (size_t i = 0; i < n; ++i) {
      PyObject* o = items[a][i].ptr();
      if (!api.PyArray_Check_(o))
        raise_type(fn + ": " + item_name(arg, i, is_list[a]) + " must be a numpy.ndarray, got " +
                   std::string(Py_TYPE(o)->tp_name));
      const auto* arr = py::detail::array_proxy(o);
      const auto* descr = py::detail::array_descriptor_proxy(arr->descr);
      DType t;
      if (descr->type_num == npy_api::NPY_FLOAT_) t = DType::f32;
      else if (descr->type_num == npy_api::NPY_DOUBLE_) t = DType::f64;
      else
        raise_type(fn + ": " + item_name(arg, i, is_list[a]) + " has dtype " +
                   py::str(py::handle(arr->descr)).cast<std::string>() + "; expected float32 or float64");
      if (descr->byteorder == '>')
        raise_type(fn + ": " + item_name(arg, i, is_list[a]) + " is big-endian; expected native float32 or float64");
      if (!have_dtype) {
        dtype_ = t;
        have_dtype = true;
      } else if (t != dtype_) {
        raise_type(fn + ": " + item_name(arg, i, is_list[a]) + " has dtype " + dtype_name(t) + " but " +
                   item_name(args[0], a == 0 ? 0 : i, is_list[0]) + " is " + dtype_name(dtype_) +
                   " (one call takes one dtype)");
      }
      const int flags = arr->flags;
      if (!(flags & npy_api::NPY_ARRAY_C_CONTIGUOUS_))
        raise_value(fn + ": " + item_name(arg, i, is_list[a]) + " is not C-contiguous (no silent copies: "
                    "pass np.ascontiguousarray(...) and use the result)");
      if (!(flags & npy_api::NPY_ARRAY_ALIGNED_))
        raise_value(fn + ": " + item_name(arg, i, is_list[a]) + " is not aligned to its dtype");
      if (arg.written && !(flags & npy_api::NPY_ARRAY_WRITEABLE_))
        raise_value(fn + ": " + item_name(arg, i, is_list[a]) + " is read-only (it is updated in place)");
      if (a == 0) {
        first[i] = arr;
      } else {
        const auto* ref = first[i];
        bool same = ref->nd == arr->nd;
        for (int d = 0; same && d < arr->nd; ++d) same = ref->dimensions[d] == arr->dimensions[d];
        if (!same)
          raise_value(fn + ": " + item_name(arg, i, is_list[a]) + " has shape " + shape_str(arr) + " but " +
                      item_name(args[0], i, is_list[0]) + " has shape " + shape_str(ref));
      }
      int64_t size = 1;
      for (int d = 0; d < arr->nd; ++d) size *= arr->dimensions[d];
      if (size > 0) {
        const int64_t nbytes = size * (t == DType::f32 ? 4 : 8);
        (arg.written ? written : read).push_back(Range{arr->data, arr->data + nbytes, a, i});
      }
      keep_.push_back(py::reinterpret_borrow<py::object>(o));
    }
  }

  // 3. Aliasing: written arrays pairwise disjoint, read arrays disjoint from every written one.
  //    (The same parameter twice, a gradient that is its parameter, a state shared by two tensors.)
  auto describe = [&](const Range& r) { return item_name(args[r.arg], r.index, is_list[r.arg]); };
  std::sort(written.begin(), written.end(), [](const Range& x, const Range& y) { return x.begin < y.begin; });
  for (size_t k = 1; k < written.size(); ++k)
    if (written[k].begin < written[k - 1].end)
      raise_value(fn + ": " + describe(written[k - 1]) + " and " + describe(written[k]) +
                  " share memory (an array that is updated in place must not overlap any other argument)");
  for (const Range& r : read) {
    auto it = std::lower_bound(written.begin(), written.end(), r.end,
                               [](const Range& w, const char* end) { return w.begin < end; });
    if (it != written.begin() && (it - 1)->end > r.begin)
      raise_value(fn + ": " + describe(r) + " shares memory with " + describe(*(it - 1)) +
                  " (an array that is updated in place must not overlap any other argument)");
  }

  // 4. Coalesce: array i joins the open segment when, in every present list, it starts where the
  //    segment's previous array ended. Empty arrays are dropped.
  const int64_t itemsize = dtype_ == DType::f32 ? 4 : 8;
  std::vector<const char*> seg_end(nargs, nullptr);
  for (size_t i = 0; i < n; ++i) {
    const auto* p = first[i];
    int64_t size = 1;
    for (int d = 0; d < p->nd; ++d) size *= p->dimensions[d];
    if (size == 0) continue;
    bool joins = offset_.size() > 1;
    for (size_t a = 0; joins && a < nargs; ++a)
      if (present_[a]) joins = py::detail::array_proxy(items[a][i].ptr())->data == seg_end[a];
    if (!joins) {
      offset_.push_back(offset_.back());
      for (size_t a = 0; a < nargs; ++a)
        if (present_[a]) base_[a].push_back(py::detail::array_proxy(items[a][i].ptr())->data);
    }
    offset_.back() += size;
    for (size_t a = 0; a < nargs; ++a)
      if (present_[a]) seg_end[a] = py::detail::array_proxy(items[a][i].ptr())->data + size * itemsize;
  }
  // A single list (all_finite): the arrays are the "gradients" the kernel reads.
  if (nargs == 1) {
    base_[1] = base_[0];
    present_[1] = true;
  }
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '(';
  for (size_t d = 0; d < shape.size(); ++d) s << (d ? ", " : "") << shape[d];
  s << (shape.size() == 1 ? ",)" : ")");
  return s.str();
}

void ArgSet::fail(const std::string& msg) const { raise_value(fn_ + ": " + msg); }

ArrayArg& ArgSet::add(const char* name, py::handle obj, bool written, bool optional) {
  args_.push_back(std::make_unique<ArrayArg>());
  ArrayArg& a = *args_.back();
  a.name = name;
  a.written = written;
  PyObject* o = obj.ptr();
  if (o == nullptr || o == Py_None) {
    if (!optional) raise_type(fn_ + ": " + name + " is required (got None)");
    return a;
  }
  if (!npy_api::get().PyArray_Check_(o))
    raise_type(fn_ + ": " + name + " must be a numpy.ndarray, got " + std::string(Py_TYPE(o)->tp_name));
  const auto* arr = py::detail::array_proxy(o);
  const int flags = arr->flags;
  if (!(flags & npy_api::NPY_ARRAY_C_CONTIGUOUS_))
    raise_value(fn_ + ": " + name + " is not C-contiguous (no silent copies: pass np.ascontiguousarray(...) "
                "and use the result)");
  if (!(flags & npy_api::NPY_ARRAY_ALIGNED_)) raise_value(fn_ + ": " + name + " is not aligned to its dtype");
  if (written && !(flags & npy_api::NPY_ARRAY_WRITEABLE_))
    raise_value(fn_ + ": " + name + " is read-only (it is written)");
  a.present = true;
  a.data = arr->data;
  a.shape.assign(arr->dimensions, arr->dimensions + arr->nd);
  a.size = 1;
  for (int64_t d : a.shape) a.size *= d;
  a.nbytes = a.size * py::reinterpret_borrow<py::dtype>(arr->descr).itemsize();
  keep_.push_back(py::reinterpret_borrow<py::object>(o));
  return a;
}

const ArrayArg& ArgSet::floating(const char* name, py::handle obj, bool written, bool optional) {
  PyObject* o = obj.ptr();
  if (o != nullptr && o != Py_None && npy_api::get().PyArray_Check_(o)) {  // dtype before layout
    const auto* descr = py::detail::array_descriptor_proxy(py::detail::array_proxy(o)->descr);
    DType t;
    if (descr->type_num == npy_api::NPY_FLOAT_) t = DType::f32;
    else if (descr->type_num == npy_api::NPY_DOUBLE_) t = DType::f64;
    else
      raise_type(fn_ + ": " + name + " has dtype " + py::str(py::handle(py::detail::array_proxy(o)->descr)).cast<std::string>() +
                 "; expected float32 or float64");
    if (descr->byteorder == '>')
      raise_type(fn_ + ": " + name + " is big-endian; expected native float32 or float64");
    if (!have_dtype_) {
      dtype_ = t, have_dtype_ = true, first_floating_ = name;
    } else if (t != dtype_) {
      raise_type(fn_ + ": " + name + " has dtype " + (t == DType::f32 ? "float32" : "float64") + " but " +
                 first_floating_ + " is " + (dtype_ == DType::f32 ? "float32" : "float64") + " (one call takes one dtype)");
    }
  }
  return add(name, obj, written, optional);
}

const ArrayArg& ArgSet::typed(const char* name, py::handle obj, bool written, char kind, int itemsize,
                              const char* type_name, bool optional) {
  PyObject* o = obj.ptr();
  if (o != nullptr && o != Py_None && npy_api::get().PyArray_Check_(o)) {
    py::dtype dt = py::reinterpret_borrow<py::dtype>(py::detail::array_proxy(o)->descr);
    if (dt.kind() != kind || dt.itemsize() != itemsize || dt.byteorder() == '>')
      raise_type(fn_ + ": " + name + " has dtype " + py::str(dt).cast<std::string>() + "; expected " + type_name);
  }
  return add(name, obj, written, optional);
}

void ArgSet::require_shape(const ArrayArg& a, const std::vector<int64_t>& shape, const std::string& what) const {
  if (a.present && a.shape != shape)
    raise_value(fn_ + ": " + a.name + " has shape " + shape_str(a.shape) + " but " + what + " " + shape_str(shape));
}

void ArgSet::allow_in_place(const ArrayArg& out, const ArrayArg& in) { in_place_.emplace_back(&out, &in); }

void ArgSet::check_aliasing() const {
  auto exact_in_place = [&](const ArrayArg& w, const ArrayArg& o) {
    if (w.data != o.data || w.shape != o.shape || w.nbytes != o.nbytes) return false;
    for (const auto& pair : in_place_)
      if ((pair.first == &w && pair.second == &o) || (pair.first == &o && pair.second == &w)) return true;
    return false;
  };
  for (size_t i = 0; i < args_.size(); ++i) {
    const ArrayArg& w = *args_[i];
    if (!w.written || !w.present || w.nbytes == 0) continue;
    for (size_t j = 0; j < args_.size(); ++j) {
      const ArrayArg& o = *args_[j];
      if (i == j || !o.present || o.nbytes == 0 || exact_in_place(w, o)) continue;
      if (w.data < o.data + o.nbytes && o.data < w.data + w.nbytes)
        raise_value(fn_ + ": " + w.name + " shares memory with " + o.name +
                    " (an array that is written must not overlap any other argument)");
    }
  }
}

void check_nonneg(const std::string& fn, const char* name, double x) {
  if (!(std::isfinite(x) && x >= 0))
    raise_value(fn + ": " + name + " must be a finite number >= 0, got " + py::str(py::float_(x)).cast<std::string>());
}

void check_finite(const std::string& fn, const char* name, double x) {
  if (!std::isfinite(x))
    raise_value(fn + ": " + name + " must be a finite number, got " + py::str(py::float_(x)).cast<std::string>());
}

void check_unit(const std::string& fn, const char* name, double x) {
  if (!(x >= 0 && x < 1))
    raise_value(fn + ": " + name + " must be in [0, 1), got " + py::str(py::float_(x)).cast<std::string>());
}

void check_closed_unit(const std::string& fn, const char* name, double x) {
  if (!(x >= 0 && x <= 1))
    raise_value(fn + ": " + name + " must be in [0, 1], got " + py::str(py::float_(x)).cast<std::string>());
}

void check_step(const std::string& fn, int64_t step) {
  if (step < 1) raise_value(fn + ": step must be >= 1 (the 1-based step being taken), got " + std::to_string(step));
}

void parse_grad_scale(const std::string& fn, py::handle grad_scale, OptimArgs& args) {
  if (grad_scale.is_none()) return;
  double s;
  try {
    s = grad_scale.cast<double>();
  } catch (const py::cast_error&) {
    raise_type(fn + ": grad_scale must be a number or None, got " + std::string(Py_TYPE(grad_scale.ptr())->tp_name));
  }
  if (!(std::isfinite(s) && s > 0))
    raise_value(fn + ": grad_scale must be a finite number > 0, got " + py::str(py::float_(s)).cast<std::string>());
  args.grad_scale = s;
  args.has_grad_scale = true;
}

}  // namespace bind
}  // namespace gf
