// activation_args.hpp: parsing and checking activation arguments, shared by the activation and
// dense bindings.
#pragma once

#include <string>

#include "arrays.hpp"
#include "gradfuse/activation.hpp"

namespace gf {
namespace bind {

// "relu" -> Act::relu; ValueError naming fn for an unknown name or a non-finite slope.
Act parse_activation(const std::string& fn, const std::string& name, double slope);
ActNeeds activation_needs(Act act);
// ValueError unless the saved tensors the activation's backward reads are given.
void check_saved(const ArgSet& args, const std::string& act_name, Act act, double slope, const ArrayArg& x,
                 const ArrayArg& y);

}  // namespace bind
}  // namespace gf
