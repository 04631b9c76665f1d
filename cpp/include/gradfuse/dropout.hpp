// dropout.hpp: (being written) the contract of the dropout kernels and their per-ISA declarations.
#pragma once

#include "gradfuse/kernels.hpp"
