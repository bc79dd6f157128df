// The emulated CUB (emulation/cub.h) in place of CUB's <cub/device/device_segmented_radix_sort.cuh>.
#pragma once

#include "emulation/cub.h"
