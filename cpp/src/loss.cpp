// loss.cpp: (being written) the loss kernel bodies, compiled once per ISA into gf::<isa>.
#include "gradfuse/loss.hpp"
