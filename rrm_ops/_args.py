"""Python arguments of the wrappers as the registered ops take them, with errors that name the
argument (the ops' own messages name the schema, not the argument, for a Python object of the
wrong kind). Dtypes, shapes and values are checked by the ops in C++."""

from __future__ import annotations

import numbers

from torch import Tensor


def tensor(value: object, name: str) -> Tensor:
    """``value`` detached, or TypeError if it is not a tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value.detach()


def optional_tensor(value: object, name: str) -> Tensor | None:
    return None if value is None else tensor(value, name)


def number(value: object, name: str) -> float:
    """``value`` as a float, or TypeError if it is not a real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def integer(value: object, name: str) -> int:
    """``value`` as an int, or TypeError if it is not an integer (a float is refused, not truncated)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    return int(value)

