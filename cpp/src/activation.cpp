// activation.cpp: (being written) the activation kernel bodies, compiled once per ISA into gf::<isa>.
#include "gradfuse/activation.hpp"
