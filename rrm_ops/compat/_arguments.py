"""Argument checks shared by the compat modules."""

from __future__ import annotations

import numpy as np


def integer_at_least(value: object, minimum: int, name: str) -> int:
    """``value`` as an int, refused unless it is an integer (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
