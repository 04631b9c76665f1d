// arrays.hpp: argument checking shared by every binding, and the errors it raises.
//
// No silent copies: arrays are taken as they are (never py::array_t, which would convert a wrong
// dtype or layout into a temporary that an in-place update then writes into and drops). Each one is
// checked once, by check_array(), and refused with TypeError (not an ndarray, wrong dtype,
// byte-swapped) or ValueError (not C-contiguous, misaligned, read-only where written); then shapes,
// and memory shared between a written array and any other argument (check_aliasing()). Every check
// runs before any kernel writes anything.
//
// The rules, the order of the checks and the arguments an error names are those of the Python
// checker (python/gradfuse/_checks.py, driven by the kernel table), so both backends refuse the same
// calls naming the same arguments. Errors are gradfuse.errors.KernelTypeError / KernelValueError:
// TypeError / ValueError subclasses carrying the kernel, the argument, its index in a list and a
// second argument the message names.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gradfuse/bf16.hpp"
#include "gradfuse/parallel.hpp"

namespace gf {
namespace bind {

namespace py = pybind11;

enum class DType : int { f32 = 0, f64 = 1, bf16 = 2 };

// Calls f(float{}) or f(double{}): the one place where a call's floating dtype becomes a C++ type.
// Only for calls whose arrays are all kFloating (bf16 refused by check_array).
template <class F>
decltype(auto) with_dtype(DType t, F&& f) {
  if (t == DType::f32) return f(float{});
  return f(double{});
}

// ... and f(gf::bf16{}) too, for the kernels whose arrays are kReal (bf16 storage, float32 math).
template <class F>
decltype(auto) with_real_dtype(DType t, F&& f) {
  if (t == DType::bf16) return f(gf::bf16{});
  return with_dtype(t, std::forward<F>(f));
}

inline int64_t itemsize(DType t) { return t == DType::f64 ? 8 : t == DType::f32 ? 4 : 2; }

// ---- errors --------------------------------------------------------------------------------------------
// `tmpl` is the message after "fn: ", with {arg} and {other} standing for the arguments' labels
// ("grads[3]": index >= 0 is a position in a list argument).
[[noreturn]] void type_error(const std::string& fn, const std::string& tmpl, const char* arg = nullptr,
                             int64_t index = -1, const char* other = nullptr, int64_t other_index = -1);
[[noreturn]] void value_error(const std::string& fn, const std::string& tmpl, const char* arg = nullptr,
                              int64_t index = -1, const char* other = nullptr, int64_t other_index = -1);

std::string shape_str(const std::vector<int64_t>& shape);
std::string num(double x);  // as Python's repr of a float

// Scalar conversions with the Python checker's rules (python/gradfuse/_checks.py: real, integer,
// flag, _string), so that both backends refuse the same values with the same TypeError naming the
// argument (the pybind11 casters would raise their own, unnamed, and take more: bytes for a str).
// real: a number (anything with __float__ or __index__; not a str, nor an array with axes).
double real(const std::string& fn, const char* name, py::handle x);
// integer: an int or an object with __index__ (not a float) that fits in int64.
int64_t integer(const std::string& fn, const char* name, py::handle x);
// flag: a bool, a number (Python's or NumPy's) or None (False).
bool flag(const std::string& fn, const char* name, py::handle x);
// text: a str.
std::string text(const std::string& fn, const char* name, py::handle x);

// Scalar checks (ValueError naming the function and the argument), with the kernel table's ranges.
void check_nonneg(const std::string& fn, const char* name, double x);       // finite and >= 0
void check_finite(const std::string& fn, const char* name, double x);
void check_closed_unit(const std::string& fn, const char* name, double x);  // in [0, 1]

// ---- arrays --------------------------------------------------------------------------------------------
// What an argument's dtype must be (the kernel table's Array.dtype):
//   kFloating  "float": the call's floating dtype, float32 or float64 (one per call; set by the
//              first floating array)
//   kReal      "real": the same, or bfloat16 (ml_dtypes.bfloat16: bf16 storage, float32 math)
//   kWide      "wide": the call's dtype, but float32 beside a bfloat16 call (statistics,
//              accumulators, fp32 masters); the table puts a real array before any wide one
//   kBf16      "bfloat16": always ml_dtypes.bfloat16, and only beside a float32 call (the bf16
//              compute copies of fp32 masters); TypeError beside float64
// or a fixed one (kind and itemsize, e.g. 'u', 1 for uint8).
struct DtypeRule {
  char kind = 'f';  // 'f': the call's floating dtype; 'w': wide; 'b': bfloat16
  int itemsize = 0;
  const char* name = "float32 or float64";
  bool bf16 = false;  // 'f' only: bfloat16 accepted
};
constexpr DtypeRule kFloating{};
constexpr DtypeRule kReal{'f', 0, "float32, float64 or bfloat16", true};
constexpr DtypeRule kWide{'w', 0, "float32 or float64"};
constexpr DtypeRule kBf16{'b', 2, "bfloat16"};
constexpr DtypeRule kUint8{'u', 1, "uint8"};
constexpr DtypeRule kUint32{'u', 4, "uint32"};
constexpr DtypeRule kInt64{'i', 8, "int64"};

// An array's shape, read in place from the ndarray (no copy: checks run on every call).
struct Shape {
  const int64_t* dims = nullptr;
  int nd = 0;
  int64_t operator[](int i) const { return dims[i]; }
  int64_t back() const { return dims[nd - 1]; }
  const int64_t* begin() const { return dims; }
  const int64_t* end() const { return dims + nd; }
  size_t size() const { return static_cast<size_t>(nd); }
  operator std::vector<int64_t>() const { return std::vector<int64_t>(dims, dims + nd); }
  bool operator==(const Shape& o) const { return nd == o.nd && std::equal(dims, dims + nd, o.dims); }
  bool operator!=(const Shape& o) const { return !(*this == o); }
  bool operator==(const std::vector<int64_t>& v) const {
    return static_cast<size_t>(nd) == v.size() && std::equal(dims, dims + nd, v.begin());
  }
  bool operator!=(const std::vector<int64_t>& v) const { return !(*this == v); }
};

inline std::string shape_str(const Shape& shape) { return shape_str(std::vector<int64_t>(shape)); }

// One checked array.
struct ArrayArg {
  const char* name = nullptr;
  int64_t index = -1;              // position in a list argument, or -1
  bool present = false;            // false: an optional argument given None
  bool written = false;
  const char* in_place = nullptr;  // the argument this one may be exactly
  char* data = nullptr;
  Shape shape;
  int64_t size = 0;
  int64_t nbytes = 0;
  int ndim() const { return shape.nd; }
  template <class T>
  T* ptr() const {
    return reinterpret_cast<T*>(data);
  }
  template <class T>
  T* ptr_or_null() const {
    return present ? reinterpret_cast<T*>(data) : nullptr;
  }
};

// The call-wide state of dtype checking: the floating dtype, set by the first floating array.
struct DtypeState {
  DType dtype = DType::f32;
  bool set = false;
  const char* first = nullptr;
  int64_t first_index = -1;
};

// What check_array learns of an array.
struct Checked {
  char* data = nullptr;
  Shape shape;
  int64_t size = 0;
  int64_t nbytes = 0;
};

// The one array check: `o` is an ndarray of the rule's dtype, C-contiguous, aligned, writeable when
// written; fills `out` (in place: this runs for every array of every call). Errors name the
// argument (name, index).
void check_array(const std::string& fn, PyObject* o, DtypeRule rule, DtypeState& dtypes, const char* name,
                 int64_t index, bool written, Checked& out);

// Refuses a written array that shares memory with any other argument, unless it is exactly (same
// start, bytes and shape) its in-place partner. arrays: the call's arrays in signature order (list
// items in list order); absent and empty ones are skipped.
void check_aliasing(const std::string& fn, const std::vector<const ArrayArg*>& arrays);

// ---- multi-tensor calls ----------------------------------------------------------------------------------
// One list argument of a multi-tensor call: an ndarray or a list/tuple of them; None means absent.
// rule: kFloating, or kReal where the row's list is "real" (bf16 lists too: every list of a call
// has the call's one dtype, so one itemsize serves the coalescing).
struct TensorArg {
  const char* name;
  py::handle obj;
  bool written;
  bool required = true;
  DtypeRule rule = kFloating;  // kFloating; kReal for bf16 data lists; kBf16 for a list of bf16 copies
};

// The validated, coalesced lists of one multi-tensor call. args[0] is the first list: every other
// list has its length, and its i-th array the shape of args[0][i] (unless shapes are free, as for
// clipping's one list). Arrays adjacent in memory in every list (an arena) are merged into one
// segment, each list by its own itemsize (an arena of bf16 copies beside an fp32 arena); empty
// arrays are dropped.
class TensorLists {
 public:
  // merge = false: one segment per non-empty array (kernels that reduce over each array on its own).
  TensorLists(const std::string& fn, std::vector<TensorArg> args, bool check_only = false, bool merge = true);

  bool empty() const { return offset_.size() <= 1; }
  DType dtype() const { return dtypes_.dtype; }
  // list[j] <- the j-th floating argument's segment starts (null when absent); copy <- those of the
  // kBf16 argument, if any.
  template <class T>
  Segments<T> segments() const {
    Segments<T> s;
    s.count = static_cast<int64_t>(offset_.size()) - 1;
    s.offset = offset_.data();
    size_t j = 0;
    for (size_t k = 0; k < base_.size(); ++k) {
      if (rules_[k].kind == 'b') s.copy = starts<bf16>(k);
      else if (j < static_cast<size_t>(kMaxLists)) s.list[j++] = starts<T>(k);
    }
    return s;
  }
  // Argument k's segment starts as U*, or null when absent.
  template <class U>
  U* const* starts(size_t k) const {
    return present_[k] ? reinterpret_cast<U* const*>(base_[k].data()) : nullptr;
  }

 private:
  std::vector<py::object> keep_;          // the arrays stay alive while the GIL is released
  std::vector<int64_t> offset_{0};        // prefix sums of segment sizes (elements)
  std::vector<std::vector<char*>> base_;  // per argument: the start of each segment
  std::vector<bool> present_;
  std::vector<DtypeRule> rules_;
  DtypeState dtypes_;
};

// ---- single-array calls ----------------------------------------------------------------------------------
// One dimension of a shape rule: a symbol ("N", bound by the first array that has it), a fixed size,
// or "..." (any number of dimensions, at most one per rule). The kernel table's shape tuples.
struct Dim {
  const char* symbol = nullptr;  // null: a fixed size
  int64_t size = 0;
  constexpr Dim(const char* s) : symbol(s) {}  // NOLINT: {"N", "C"} reads as the table's rule
  constexpr Dim(int n) : size(n) {}            // NOLINT
  bool rest() const { return symbol != nullptr && symbol[0] == '.'; }
};

// The array arguments of one call (batch norm, dropout, dense, losses), added in signature order.
class ArgSet {
 public:
  explicit ArgSet(std::string fn) : fn_(std::move(fn)) {}
  const ArrayArg& add(const char* name, py::handle obj, bool written, DtypeRule rule = kFloating,
                      bool optional = false);
  const ArrayArg& floating(const char* name, py::handle obj, bool written, bool optional = false) {
    return add(name, obj, written, kFloating, optional);
  }
  const ArrayArg& real(const char* name, py::handle obj, bool written, bool optional = false) {
    return add(name, obj, written, kReal, optional);
  }
  const ArrayArg& wide(const char* name, py::handle obj, bool written, bool optional = false) {
    return add(name, obj, written, kWide, optional);
  }
  DType dtype() const { return dtypes_.dtype; }
  const std::string& fn() const { return fn_; }
  // ValueError "fn: <name> has shape (a, b) but <what> (c, d)" unless a's shape equals `shape`.
  void require_shape(const ArrayArg& a, const std::vector<int64_t>& shape, const std::string& what) const;
  // ValueError "fn: <name> has shape (a, b) but <other> has shape (c, d)" unless the shapes agree.
  void require_like(const ArrayArg& a, const ArrayArg& other) const;
  // Checks a's shape against a rule ({"N", "C", "..."}): its number of dimensions, then each
  // dimension against the fixed sizes and the symbols bound so far; then binds its new symbols.
  // The Python checker's steps and messages (_checks._Dims), so call it in the same order (the
  // row's shape_order, then signature order). Absent arrays pass.
  void require_dims(const ArrayArg& a, std::initializer_list<Dim> rule);
  int64_t dim(const char* symbol) const;  // a bound symbol's size, or -1
  // Lets `out` be exactly `in` (an element-wise kernel updating in place, each element read before
  // it is written); any other overlap is still refused by check_aliasing().
  void allow_in_place(const ArrayArg& out, const ArrayArg& in);
  void check_aliasing() const;
  [[noreturn]] void fail(const ArrayArg& a, const std::string& tmpl) const;  // ValueError naming a

 private:
  [[noreturn]] void dims_mismatch(const ArrayArg& a, std::initializer_list<Dim> rule) const;
  struct Bound {
    const char* symbol;
    int64_t size;
    const char* source;  // the array that bound it
  };

  std::string fn_;
  std::vector<std::unique_ptr<ArrayArg>> args_;
  std::vector<py::object> keep_;
  DtypeState dtypes_;
  std::vector<Bound> bound_;  // the symbols of require_dims; "..." is rest_
  Shape rest_;
  const char* rest_source_ = nullptr;
};

}  // namespace bind
}  // namespace gf
