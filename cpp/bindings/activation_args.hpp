// activation_args.hpp: parsing and checking activation arguments, shared by the activation and
// dense bindings.
#pragma once

#include <string>

#include "arrays.hpp"
#include "gradfuse/activation.hpp"

namespace gf {
namespace bind {

// The activation scalars of a call, checked as the kernel table says (in signature order: the name,
// then negative_slope, a finite number).
struct ActArgs {
  Act act;
  std::string name;
  double slope;
};
ActArgs activation_args(const std::string& fn, py::handle activation, py::handle negative_slope);
ActNeeds activation_needs(Act act);
// ValueError unless the saved tensors the activation's backward reads are given: x (the
// activation's input; dense_backward's z) or y (its output).
void check_saved(const ArgSet& args, const ActArgs& a, const ArrayArg& x, const ArrayArg& y);

}  // namespace bind
}  // namespace gf
