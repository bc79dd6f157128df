// The emulated CUDA runtime (emulation/runtime.h) in place of the CUDA toolkit's.
#pragma once

#include "emulation/runtime.h"
