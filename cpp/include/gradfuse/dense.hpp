// dense.hpp: (being written) the contract of the dense kernels and their per-ISA declarations.
#pragma once

#include "gradfuse/kernels.hpp"
