// dense.cpp: (being written) the dense kernel bodies, compiled once per ISA into gf::<isa>.
#include "gradfuse/dense.hpp"
