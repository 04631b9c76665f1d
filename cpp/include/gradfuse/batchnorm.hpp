// batchnorm.hpp: (being written) the contract of the batchnorm kernels and their per-ISA declarations.
#pragma once

#include "gradfuse/kernels.hpp"
