// loss.cpp (bindings): (being written)
#include <pybind11/pybind11.h>

#include "arrays.hpp"
#include "gradfuse/loss.hpp"

namespace gf {
namespace bind {

void bind_loss(py::module_& m) { (void)m; }

}  // namespace bind
}  // namespace gf
