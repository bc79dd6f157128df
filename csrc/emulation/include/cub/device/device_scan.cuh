// The emulated CUB (emulation/cub.h) in place of CUB's <cub/device/device_scan.cuh>.
#pragma once

#include "emulation/cub.h"
