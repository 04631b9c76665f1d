// loss.hpp: (being written) the contract of the loss kernels and their per-ISA declarations.
#pragma once

#include "gradfuse/kernels.hpp"
