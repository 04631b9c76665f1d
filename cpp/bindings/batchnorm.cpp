// batchnorm.cpp (bindings): (being written)
#include <pybind11/pybind11.h>

#include "arrays.hpp"
#include "gradfuse/batchnorm.hpp"

namespace gf {
namespace bind {

void bind_batchnorm(py::module_& m) { (void)m; }

}  // namespace bind
}  // namespace gf
