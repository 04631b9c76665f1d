// activation.hpp: (being written) the contract of the activation kernels and their per-ISA declarations.
#pragma once

#include "gradfuse/kernels.hpp"
