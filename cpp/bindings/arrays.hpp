// arrays.hpp: argument checking shared by every binding.
//
// No silent copies: arrays are taken as they are (never py::array_t, which would convert a wrong
// dtype or layout into a temporary that an in-place update then writes into and drops). Each one is
// checked and refused with TypeError (not an ndarray, wrong dtype, byte-swapped) or ValueError
// (not C-contiguous, misaligned, read-only where written, wrong shape, list lengths, memory shared
// between a written array and any other), the message naming the function and the argument.
// Every check runs before any kernel writes anything.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gradfuse/optim.hpp"

namespace gf {
namespace bind {

namespace py = pybind11;

enum class DType : int { f32 = 0, f64 = 1 };

// One tensor-list argument of a multi-tensor call. `obj` is an ndarray or a list/tuple of them;
// None means absent (allowed only when required is false).
struct TensorArg {
  const char* name;
  py::handle obj;
  bool written;
  bool required = true;
};

// The validated, coalesced tensor lists of one multi-tensor call. args[0] is the parameter list:
// every other list must have the same length, and its i-th array the shape and dtype of args[0][i].
// Arrays that are adjacent in memory in every list (an arena) are merged into one segment.
class TensorLists {
 public:
  TensorLists(const std::string& fn, std::vector<TensorArg> args);

  bool empty() const { return offset_.size() <= 1; }
  DType dtype() const { return dtype_; }
  int64_t num_elements() const { return offset_.back(); }

  // args[0] -> param, args[1] -> grad, args[2..] -> state[0..]; an absent argument -> null.
  template <class T>
  TensorList<T> view() const {
    TensorList<T> list;
    list.count = static_cast<int64_t>(offset_.size()) - 1;
    list.offset = offset_.data();
    list.param = reinterpret_cast<T* const*>(base_[0].data());
    list.grad = reinterpret_cast<const T* const*>(base_[1].data());
    for (int k = 0; k < kMaxStates; ++k)
      list.state[k] = present_[k + 2] ? reinterpret_cast<T* const*>(base_[k + 2].data()) : nullptr;
    return list;
  }

 private:
  std::vector<py::object> keep_;             // the arrays stay alive while the GIL is released
  std::vector<int64_t> offset_{0};           // prefix sums of segment sizes (elements)
  std::vector<std::vector<char*>> base_;     // per argument: the start of each segment
  std::vector<bool> present_;
  DType dtype_ = DType::f32;
};

// One array argument of a kernel that takes single arrays (batch norm, dropout, dense, losses).
struct ArrayArg {
  const char* name = nullptr;
  bool present = false;  // false: an optional argument given None
  char* data = nullptr;
  std::vector<int64_t> shape;
  int64_t size = 0;
  int64_t nbytes = 0;
  bool written = false;
  int ndim() const { return static_cast<int>(shape.size()); }
  template <class T>
  T* ptr() const { return reinterpret_cast<T*>(data); }
};

// The array arguments of one call. Floating arrays share one dtype (float32 or float64, native,
// set by the first one); typed arrays have the dtype asked for (uint8 masks, int64 labels). Every
// array is C-contiguous and aligned, written ones writeable; check_aliasing() then refuses a
// written array that shares memory with any other argument. Errors name fn and the argument.
class ArgSet {
 public:
  explicit ArgSet(std::string fn) : fn_(std::move(fn)) {}
  const ArrayArg& floating(const char* name, py::handle obj, bool written, bool optional = false);
  const ArrayArg& typed(const char* name, py::handle obj, bool written, char kind, int itemsize,
                        const char* type_name, bool optional = false);
  DType dtype() const { return dtype_; }
  bool has_dtype() const { return have_dtype_; }
  const std::string& fn() const { return fn_; }
  // ValueError "fn: <name> has shape (a, b) but <what> (c, d)" unless a's shape equals `shape`.
  void require_shape(const ArrayArg& a, const std::vector<int64_t>& shape, const std::string& what) const;
  // Lets `out` be exactly `in` (same start, same shape: an element-wise kernel updating in place,
  // each element read before it is written); any other overlap is still refused by check_aliasing().
  void allow_in_place(const ArrayArg& out, const ArrayArg& in);
  void check_aliasing() const;
  [[noreturn]] void fail(const std::string& msg) const;  // ValueError "fn: msg"

 private:
  ArrayArg& add(const char* name, py::handle obj, bool written, bool optional);
  std::string fn_;
  std::vector<std::unique_ptr<ArrayArg>> args_;
  std::vector<py::object> keep_;
  DType dtype_ = DType::f32;
  bool have_dtype_ = false;
  const char* first_floating_ = nullptr;
  std::vector<std::pair<const ArrayArg*, const ArrayArg*>> in_place_;
};

std::string shape_str(const std::vector<int64_t>& shape);

[[noreturn]] void raise_type(const std::string& msg);
[[noreturn]] void raise_value(const std::string& msg);

// Scalar-argument checks (ValueError naming the function and the argument).
void check_nonneg(const std::string& fn, const char* name, double x);          // finite and >= 0
void check_finite(const std::string& fn, const char* name, double x);
void check_unit(const std::string& fn, const char* name, double x);            // in [0, 1)
void check_closed_unit(const std::string& fn, const char* name, double x);     // in [0, 1]
void check_step(const std::string& fn, int64_t step);                          // >= 1
// None -> no scaling; else a finite number > 0.
void parse_grad_scale(const std::string& fn, py::handle grad_scale, OptimArgs& args);

}  // namespace bind
}  // namespace gf
