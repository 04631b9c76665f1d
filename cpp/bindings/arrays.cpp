// arrays.cpp: see arrays.hpp.
#include "arrays.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

namespace gf {
namespace bind {
namespace {

using py::detail::npy_api;

py::object none_or(const char* s) { return s ? py::object(py::str(s)) : py::object(py::none()); }
py::object none_or(int64_t i) { return i >= 0 ? py::object(py::int_(i)) : py::object(py::none()); }

[[noreturn]] void raise(const char* cls, const std::string& fn, const std::string& tmpl, const char* arg, int64_t index,
                        const char* other, int64_t other_index) {
  py::object type = py::module_::import("gradfuse.errors").attr(cls);
  py::object err = type(fn, tmpl, none_or(arg), none_or(index), none_or(other), none_or(other_index));
  PyErr_SetObject(type.ptr(), err.ptr());
  throw py::error_already_set();
}

const char* dtype_name(DType t) { return t == DType::f32 ? "float32" : t == DType::f64 ? "float64" : "bfloat16"; }

// ml_dtypes.bfloat16's scalar type, which its NumPy dtype's typeobj is; null when ml_dtypes is not
// installed. Looked up on the first array that is neither float32 nor float64 (imported only if
// the caller has not already imported it, which an array of that dtype implies).
PyTypeObject* bfloat16_type() {
  static PyTypeObject* type = [] {
    PyObject* mod = PyImport_ImportModule("ml_dtypes");
    if (!mod) {
      PyErr_Clear();
      return static_cast<PyTypeObject*>(nullptr);
    }
    PyObject* t = PyObject_GetAttrString(mod, "bfloat16");  // kept: a type lives as long as its module
    Py_DECREF(mod);
    if (!t) PyErr_Clear();
    return reinterpret_cast<PyTypeObject*>(t);
  }();
  return type;
}

// type(o).__name__, as the Python checker's messages say it ("float32", where tp_name says
// "numpy.float32").
std::string type_name(PyObject* o) {
  return py::str(py::handle(reinterpret_cast<PyObject*>(Py_TYPE(o))).attr("__name__")).cast<std::string>();
}

// NumPy's bool and number scalars (np.bool_, np.integer, np.floating), which flag() takes.
bool numpy_number(PyObject* o) {
  static PyObject* types = [] {
    py::module_ np = py::module_::import("numpy");
    return py::make_tuple(np.attr("bool_"), np.attr("integer"), np.attr("floating")).release().ptr();
  }();
  const int r = PyObject_IsInstance(o, types);
  if (r < 0) throw py::error_already_set();
  return r == 1;
}

}  // namespace

void type_error(const std::string& fn, const std::string& tmpl, const char* arg, int64_t index, const char* other,
                int64_t other_index) {
  raise("KernelTypeError", fn, tmpl, arg, index, other, other_index);
}

void value_error(const std::string& fn, const std::string& tmpl, const char* arg, int64_t index, const char* other,
                 int64_t other_index) {
  raise("KernelValueError", fn, tmpl, arg, index, other, other_index);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '(';
  for (size_t d = 0; d < shape.size(); ++d) s << (d ? ", " : "") << shape[d];
  s << (shape.size() == 1 ? ",)" : ")");
  return s.str();
}

std::string num(double x) { return py::str(py::float_(x)).cast<std::string>(); }

double real(const std::string& fn, const char* name, py::handle x) {
  PyObject* o = x.ptr();
  if (PyFloat_CheckExact(o)) return PyFloat_AS_DOUBLE(o);  // the common case, first
  PyNumberMethods* nb = Py_TYPE(o)->tp_as_number;
  const bool number = nb && (nb->nb_float || nb->nb_index) && !PyUnicode_Check(o) && !PyBytes_Check(o) &&
                      !(npy_api::get().PyArray_Check_(o) && py::detail::array_proxy(o)->nd != 0);
  const double v = number ? PyFloat_AsDouble(o) : -1.0;
  if (!number || (v == -1.0 && PyErr_Occurred())) {
    PyErr_Clear();
    type_error(fn, "{arg} must be a number, got " + type_name(o), name);
  }
  return v;
}

int64_t integer(const std::string& fn, const char* name, py::handle x) {
  PyObject* o = x.ptr();
  if (PyFloat_Check(o) || !PyIndex_Check(o)) type_error(fn, "{arg} must be an int, got " + type_name(o), name);
  const py::object value = py::reinterpret_steal<py::object>(PyNumber_Index(o));
  if (!value) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow != 0)
    type_error(fn, "{arg} must be an int that fits in 64 bits, got " + py::str(value).cast<std::string>(), name);
  return v;
}

bool flag(const std::string& fn, const char* name, py::handle x) {
  PyObject* o = x.ptr();
  if (o == Py_True) return true;
  if (o == Py_False || o == Py_None) return false;
  if (!PyLong_Check(o) && !PyFloat_Check(o) && !numpy_number(o))
    type_error(fn, "{arg} must be a bool, got " + type_name(o), name);
  const int v = PyObject_IsTrue(o);
  if (v < 0) throw py::error_already_set();
  return v == 1;
}

std::string text(const std::string& fn, const char* name, py::handle x) {
  PyObject* o = x.ptr();
  if (!PyUnicode_Check(o)) type_error(fn, "{arg} must be a str, got " + type_name(o), name);
  Py_ssize_t n = 0;
  if (const char* s = PyUnicode_AsUTF8AndSize(o, &n)) return std::string(s, static_cast<size_t>(n));
  PyErr_Clear();  // lone surrogates: escaped (such a name matches nothing; the message can still say it)
  const py::object b = py::reinterpret_steal<py::object>(PyUnicode_AsEncodedString(o, "utf-8", "backslashreplace"));
  if (!b) throw py::error_already_set();
  return std::string(PyBytes_AS_STRING(b.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(b.ptr())));
}

void check_nonneg(const std::string& fn, const char* name, double x) {
  if (!(std::isfinite(x) && x >= 0)) value_error(fn, "{arg} must be a finite number >= 0, got " + num(x), name);
}

void check_finite(const std::string& fn, const char* name, double x) {
  if (!std::isfinite(x)) value_error(fn, "{arg} must be a finite number, got " + num(x), name);
}

void check_closed_unit(const std::string& fn, const char* name, double x) {
  if (!(x >= 0 && x <= 1)) value_error(fn, "{arg} must be in [0, 1], got " + num(x), name);
}

void check_array(const std::string& fn, PyObject* o, DtypeRule rule, DtypeState& dtypes, const char* name,
                 int64_t index, bool written, Checked& c) {
  struct {
    const char* name;
    int64_t index;
    bool written;
  } out{name, index, written};
  const auto& api = npy_api::get();
  if (!api.PyArray_Check_(o)) type_error(fn, "{arg} must be a numpy.ndarray, got " + type_name(o), out.name, out.index);
  const auto* arr = py::detail::array_proxy(o);
  const auto* descr = py::detail::array_descriptor_proxy(arr->descr);
  const auto dtype = [&] { return py::str(py::handle(arr->descr)).cast<std::string>(); };
  int64_t itemsize = rule.itemsize;
  if (rule.kind == 'f' || rule.kind == 'w') {
    DType t;
    if (descr->type_num == npy_api::NPY_FLOAT_) t = DType::f32;
    else if (descr->type_num == npy_api::NPY_DOUBLE_) t = DType::f64;
    else if (rule.bf16 && descr->type_num >= 256 && bfloat16_type() &&
             descr->typeobj == reinterpret_cast<PyObject*>(bfloat16_type()))
      t = DType::bf16;
    else type_error(fn, "{arg} has dtype " + dtype() + "; expected " + rule.name, out.name, out.index);
    if (descr->byteorder == '>')
      type_error(fn, "{arg} is big-endian; expected native " + std::string(rule.name), out.name, out.index);
    itemsize = bind::itemsize(t);
    if (rule.kind == 'w' && dtypes.set && dtypes.dtype == DType::bf16) {
      if (t != DType::f32)
        type_error(fn,
                   "{arg} has dtype " + std::string(dtype_name(t)) + "; expected float32 beside {other} in bfloat16",
                   out.name, out.index, dtypes.first, dtypes.first_index);
    } else if (!dtypes.set) {
      dtypes = DtypeState{t, true, out.name, out.index};
    } else if (t != dtypes.dtype) {
      // a list names its counterpart in the first list (params[i] for grads[i])
      const bool same_arg = std::string(out.name) == dtypes.first;
      const int64_t other_index =
          (dtypes.first_index >= 0 && out.index >= 0 && !same_arg) ? out.index : dtypes.first_index;
      type_error(fn,
                 "{arg} has dtype " + std::string(dtype_name(t)) + " but {other} is " + dtype_name(dtypes.dtype) +
                     " (one call takes one dtype)",
                 out.name, out.index, dtypes.first, other_index);
    }
  } else if (rule.kind == 'b') {
    if (!(descr->type_num >= 256 && bfloat16_type() &&
          descr->typeobj == reinterpret_cast<PyObject*>(bfloat16_type())) ||
        descr->byteorder == '>')
      type_error(fn, "{arg} has dtype " + dtype() + "; expected bfloat16", out.name, out.index);
    if (dtypes.set && dtypes.dtype != DType::f32)
      type_error(fn,
                 "{arg} is bfloat16 but {other} is " + std::string(dtype_name(dtypes.dtype)) +
                     " (bfloat16 copies need float32 masters)",
                 out.name, out.index, dtypes.first, dtypes.first_index);
  } else {
    const py::dtype dt = py::reinterpret_borrow<py::dtype>(arr->descr);
    if (dt.kind() != rule.kind || dt.itemsize() != rule.itemsize || dt.byteorder() == '>')
      type_error(fn, "{arg} has dtype " + dtype() + "; expected " + rule.name, out.name, out.index);
  }
  const int flags = arr->flags;
  if (!(flags & npy_api::NPY_ARRAY_C_CONTIGUOUS_))
    value_error(fn, "{arg} is not C-contiguous (no silent copies: pass np.ascontiguousarray(...) and use the result)",
                out.name, out.index);
  if (!(flags & npy_api::NPY_ARRAY_ALIGNED_)) value_error(fn, "{arg} is not aligned to its dtype", out.name, out.index);
  if (out.written && !(flags & npy_api::NPY_ARRAY_WRITEABLE_))
    value_error(fn, "{arg} is read-only (it is written in place)", out.name, out.index);
  static_assert(sizeof(Py_intptr_t) == sizeof(int64_t), "numpy's dimensions are read as int64");
  c.data = arr->data;
  c.shape.dims = reinterpret_cast<const int64_t*>(arr->dimensions);
  c.shape.nd = arr->nd;
  int64_t size = 1;
  for (int d = 0; d < arr->nd; ++d) size *= c.shape.dims[d];
  c.size = size;
  c.nbytes = size * itemsize;
}

namespace {

// The memory of one array, for the aliasing check: ref is its position among the call's arrays
// (signature order, list items in list order), which also breaks ties between equal starts.
struct Span {
  const char* begin;
  const char* end;
  size_t ref;  // a full word: filled and read field by field, never a narrow store then a wide load
};

// The same steps as the Python checker's _check_aliasing: written arrays sorted by address must be
// pairwise disjoint (neighbours suffice), then no read array overlaps a written one, but its
// in-place partner exactly. written, read: the non-empty arrays; get(ref) -> the ArrayArg.
template <class Get>
void check_spans(const std::string& fn, std::vector<Span>& written, const std::vector<Span>& read, Get get) {
  const char* kShared =
      "{arg} shares memory with {other} (an array that is written must not overlap any other argument)";
  const auto by_address = [](const Span& x, const Span& y) {
    return x.begin != y.begin ? x.begin < y.begin : x.ref < y.ref;
  };
  if (!std::is_sorted(written.begin(), written.end(), by_address))  // lists allocated in order often are
    std::sort(written.begin(), written.end(), by_address);
  for (size_t k = 1; k < written.size(); ++k)
    if (written[k].begin < written[k - 1].end) {
      const auto& a = get(written[k].ref);
      const auto& b = get(written[k - 1].ref);
      value_error(fn, kShared, a.name, a.index, b.name, b.index);
    }
  const auto partners = [](const ArrayArg& a, const ArrayArg& b) {
    return (a.in_place && std::strcmp(a.in_place, b.name) == 0) || (b.in_place && std::strcmp(b.in_place, a.name) == 0);
  };
  for (const Span& it : read) {
    auto k = std::lower_bound(written.begin(), written.end(), it.end,
                              [](const Span& w, const char* e) { return w.begin < e; });
    while (k != written.begin()) {
      const Span& w = *--k;
      if (w.end <= it.begin) break;  // disjoint and sorted: the ends grow with the starts
      const auto& a = get(w.ref);
      const auto& b = get(it.ref);
      if (partners(a, b) && w.begin == it.begin && w.end == it.end && a.shape == b.shape) continue;
      value_error(fn, kShared, a.name, a.index, b.name, b.index);
    }
  }
}

// Spans of the non-empty arrays among get(0 .. count-1).
template <class Get>
void check_arrays_spans(const std::string& fn, size_t count, Get get) {
  std::vector<Span> written, read;
  for (size_t k = 0; k < count; ++k) {
    const ArrayArg& a = get(k);
    if (a.present && a.nbytes > 0) {
      Span& sp = (a.written ? written : read).emplace_back();
      sp.begin = a.data, sp.end = a.data + a.nbytes, sp.ref = k;
    }
  }
  check_spans(fn, written, read, get);
}

}  // namespace

void check_aliasing(const std::string& fn, const std::vector<const ArrayArg*>& arrays) {
  check_arrays_spans(fn, arrays.size(), [&](size_t k) -> const ArrayArg& { return *arrays[k]; });
}

TensorLists::TensorLists(const std::string& fn, std::vector<TensorArg> args, bool check_only, bool merge) {
  const auto& api = npy_api::get();
  const size_t nargs = args.size();
  present_.assign(nargs, false);
  base_.resize(nargs);
  for (const TensorArg& arg : args) rules_.push_back(arg.rule);
  // Every array of the call, list after list: items[start[a] + i] is argument a's i-th.
  std::vector<Checked> items;
  std::vector<size_t> start(nargs + 1, 0);
  std::vector<bool> is_list(nargs, false);
  std::vector<Span> written, read;
  size_t count = 0, first = 0;
  const char* first_list = nullptr;
  // The ArrayArg of items[k], for error messages.
  const auto get = [&](size_t k) {
    const size_t a = static_cast<size_t>(std::upper_bound(start.begin(), start.end(), k) - start.begin()) - 1;
    ArrayArg r;
    r.name = args[a].name, r.index = is_list[a] ? static_cast<int64_t>(k - start[a]) : -1;
    r.present = true, r.written = args[a].written, r.data = items[k].data, r.shape = items[k].shape;
    r.size = items[k].size, r.nbytes = items[k].nbytes;
    return r;
  };
  for (size_t a = 0; a < nargs; ++a) {
    const TensorArg& arg = args[a];
    PyObject* o = arg.obj.ptr();
    start[a] = items.size();
    if (o == nullptr || o == Py_None) {
      if (arg.required) type_error(fn, "{arg} is required (got None)", arg.name);
      continue;
    }
    present_[a] = true;
    PyObject* const* objs = &o;
    size_t n = 1;
    if (!api.PyArray_Check_(o)) {
      if (!PyList_Check(o) && !PyTuple_Check(o))
        type_error(fn, "{arg} must be a numpy.ndarray or a list of them, got " + type_name(o), arg.name);
      is_list[a] = true;
      n = static_cast<size_t>(PySequence_Fast_GET_SIZE(o));
      objs = PySequence_Fast_ITEMS(o);
    }
    if (first_list == nullptr) {
      count = n, first_list = arg.name, first = a;
      items.reserve(count * nargs);
      keep_.reserve(count * nargs);
      written.reserve(count * nargs);
      read.reserve(count);
    } else if (n != count) {
      value_error(fn, "{arg} has " + std::to_string(n) + " arrays but {other} has " + std::to_string(count), arg.name,
                  -1, first_list);
    }
    for (size_t i = 0; i < n; ++i) {
      // Filled in place, field by field: copying small structs through the stack here stalled on
      // store-to-load forwarding (measured: 12 ns per array).
      Checked& c = items.emplace_back();
      check_array(fn, objs[i], arg.rule, dtypes_, arg.name, is_list[a] ? static_cast<int64_t>(i) : -1, arg.written, c);
      keep_.push_back(py::reinterpret_borrow<py::object>(objs[i]));
      if (c.nbytes > 0) {
        Span& sp = (arg.written ? written : read).emplace_back();
        sp.begin = c.data, sp.end = c.data + c.nbytes, sp.ref = items.size() - 1;
      }
    }
  }
  start[nargs] = items.size();

  // Shapes: the i-th array of every list has the shape of the first list's i-th (one list: free).
  for (size_t a = first + 1; a < nargs; ++a) {
    if (!present_[a]) continue;
    for (size_t i = 0; i < count; ++i)
      if (items[start[a] + i].shape != items[start[first] + i].shape) {
        const ArrayArg item = get(start[a] + i), ref = get(start[first] + i);
        value_error(fn, "{arg} has shape " + shape_str(item.shape) + " but {other} has shape " + shape_str(ref.shape),
                    item.name, item.index, ref.name, ref.index);
      }
  }
  check_spans(fn, written, read, get);
  if (check_only) return;

  // Coalesce: array i joins the open segment when, in every present list, it starts where the
  // segment's previous array ended. Empty arrays are dropped.
  std::vector<size_t> lists;
  for (size_t a = 0; a < nargs; ++a)
    if (present_[a]) lists.push_back(a), base_[a].reserve(count);
  std::vector<int64_t> itemsize(nargs);
  for (size_t a = 0; a < nargs; ++a) itemsize[a] = args[a].rule.kind == 'b' ? 2 : bind::itemsize(dtypes_.dtype);
  std::vector<const char*> seg_end(nargs, nullptr);
  offset_.reserve(count + 1);
  for (size_t i = 0; i < count; ++i) {
    const int64_t size = items[start[first] + i].size;
    if (size == 0) continue;
    bool joins = merge && offset_.size() > 1;
    for (size_t k = 0; joins && k < lists.size(); ++k) joins = items[start[lists[k]] + i].data == seg_end[lists[k]];
    if (!joins) {
      offset_.push_back(offset_.back());
      for (size_t a : lists) base_[a].push_back(items[start[a] + i].data);
    }
    offset_.back() += size;
    for (size_t a : lists) seg_end[a] = items[start[a] + i].data + size * itemsize[a];
  }
}

const ArrayArg& ArgSet::add(const char* name, py::handle obj, bool written, DtypeRule rule, bool optional) {
  args_.push_back(std::make_unique<ArrayArg>());
  ArrayArg& a = *args_.back();
  a.name = name;
  a.written = written;
  PyObject* o = obj.ptr();
  if (o == nullptr || o == Py_None) {
    if (!optional) type_error(fn_, "{arg} is required (got None)", name);
    return a;
  }
  Checked c;
  check_array(fn_, o, rule, dtypes_, name, -1, written, c);
  a.present = true, a.data = c.data, a.shape = c.shape, a.size = c.size, a.nbytes = c.nbytes;
  keep_.push_back(py::reinterpret_borrow<py::object>(o));
  return a;
}

void ArgSet::require_shape(const ArrayArg& a, const std::vector<int64_t>& shape, const std::string& what) const {
  if (a.present && a.shape != shape)
    value_error(fn_, "{arg} has shape " + shape_str(a.shape) + " but " + what + " " + shape_str(shape), a.name);
}

void ArgSet::require_like(const ArrayArg& a, const ArrayArg& other) const {
  if (a.present && other.present && a.shape != other.shape)
    value_error(fn_, "{arg} has shape " + shape_str(a.shape) + " but {other} has shape " + shape_str(other.shape),
                a.name, -1, other.name);
}

namespace {

// (N, C, ...) / (2,): a rule as the messages write it.
std::string rule_str(std::initializer_list<Dim> rule) {
  std::string s = "(";
  for (const Dim& d : rule)
    s += (s.size() > 1 ? ", " : "") + (d.symbol ? std::string(d.symbol) : std::to_string(d.size));
  return s + (rule.size() == 1 ? ",)" : ")");
}

}  // namespace

void ArgSet::require_dims(const ArrayArg& a, std::initializer_list<Dim> rule) {
  if (!a.present) return;
  const Dim* r = rule.begin();
  const int n = static_cast<int>(rule.size());
  int at = -1;  // the position of "..."
  for (int k = 0; k < n; ++k)
    if (r[k].rest()) at = k;
  const int fixed = at < 0 ? n : n - 1;
  if (at < 0 && a.ndim() != n)
    fail(a, "{arg} must be " + std::to_string(n) + "-D " + rule_str(rule) + ", got shape " + shape_str(a.shape));
  if (at >= 0 && a.ndim() < fixed)
    fail(a, "{arg} must have at least " + std::to_string(fixed) + (fixed == 1 ? " dimension " : " dimensions ") +
                rule_str(rule) + ", got shape " + shape_str(a.shape));
  const auto axis = [&](int k) { return at < 0 || k < at ? k : a.ndim() - (n - k); };  // rule k -> axis
  if (at >= 0) {
    const Shape rest{a.shape.dims + at, a.ndim() - fixed};
    if (rest_source_ && rest_ != rest) dims_mismatch(a, rule);
    if (!rest_source_) rest_ = rest, rest_source_ = a.name;
  }
  for (int k = 0; k < n; ++k) {
    if (k == at) continue;
    const int64_t size = a.shape[axis(k)];
    if (!r[k].symbol) {
      if (size != r[k].size) dims_mismatch(a, rule);
      continue;
    }
    for (const Bound& b : bound_)
      if (std::strcmp(b.symbol, r[k].symbol) == 0 && b.size != size) dims_mismatch(a, rule);
  }
  for (int k = 0; k < n; ++k)
    if (k != at && r[k].symbol && dim(r[k].symbol) < 0) bound_.push_back({r[k].symbol, a.shape[axis(k)], a.name});
}

int64_t ArgSet::dim(const char* symbol) const {
  for (const Bound& b : bound_)
    if (std::strcmp(b.symbol, symbol) == 0) return b.size;
  return -1;
}

// "x has shape (4, 5) but must be (N, C) = (4, 3) (C from weight)": the rule with the sizes known
// so far, and which array bound them.
void ArgSet::dims_mismatch(const ArrayArg& a, std::initializer_list<Dim> rule) const {
  const Dim* r = rule.begin();
  const int n = static_cast<int>(rule.size());
  int at = n;  // the position of "..."
  for (int k = 0; k < n; ++k)
    if (r[k].rest()) at = k;
  std::string want, known;
  size_t count = 0;
  const auto add = [&](const std::string& v) { want += (count++ ? ", " : "") + v; };
  const auto from = [&](const char* symbol, const char* source) {
    if (std::strcmp(source, a.name) != 0)
      known += (known.empty() ? "" : ", ") + std::string(symbol) + " from " + source;
  };
  for (int k = 0; k < n; ++k) {
    const Dim& d = r[k];
    if (d.rest()) {
      if (!rest_source_) add("...");
      for (int64_t v : rest_) add(std::to_string(v));
      if (rest_source_) from(d.symbol, rest_source_);
    } else if (!d.symbol) {
      add(std::to_string(d.size));
    } else {
      const int64_t v = dim(d.symbol);  // else the size this array would bind
      add(std::to_string(v >= 0 ? v : a.shape[k < at ? k : a.ndim() - (n - k)]));
      for (const Bound& b : bound_)
        if (std::strcmp(b.symbol, d.symbol) == 0) from(d.symbol, b.source);
    }
  }
  fail(a, "{arg} has shape " + shape_str(a.shape) + " but must be " + rule_str(rule) + " = (" + want +
              (count == 1 ? ",)" : ")") + (known.empty() ? "" : " (" + known + ")"));
}

void ArgSet::allow_in_place(const ArrayArg& out, const ArrayArg& in) { const_cast<ArrayArg&>(out).in_place = in.name; }

void ArgSet::check_aliasing() const {
  std::vector<const ArrayArg*> all;
  for (const auto& a : args_) all.push_back(a.get());
  bind::check_aliasing(fn_, all);
}

void ArgSet::fail(const ArrayArg& a, const std::string& tmpl) const { value_error(fn_, tmpl, a.name, a.index); }

}  // namespace bind
}  // namespace gf
