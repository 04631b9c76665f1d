// batchnorm.cpp: (being written) the batchnorm kernel bodies, compiled once per ISA into gf::<isa>.
#include "gradfuse/batchnorm.hpp"
