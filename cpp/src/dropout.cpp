// dropout.cpp: (being written) the dropout kernel bodies, compiled once per ISA into gf::<isa>.
#include "gradfuse/dropout.hpp"
