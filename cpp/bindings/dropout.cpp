// dropout.cpp (bindings): (being written)
#include <pybind11/pybind11.h>

#include "arrays.hpp"
#include "gradfuse/dropout.hpp"

namespace gf {
namespace bind {

void bind_dropout(py::module_& m) { (void)m; }

}  // namespace bind
}  // namespace gf
