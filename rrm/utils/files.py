"""Atomic file writes (a reader never sees a partial file, even if the writer is killed), the
cleaning up after a killed writer, and strictly valid JSON text."""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None], durable: bool = False) -> None:
    """Call ``write(temporary_path)`` for a temporary file beside ``path``, then rename it
    over ``path`` (creating the parent folders). The temporary name is hidden (leading dot)
    and keeps ``path``'s suffix, so writers that choose the format by the suffix work; it
    is removed if ``write`` fails. ``durable`` flushes the file to disk before the rename,
    so a crash of the machine leaves the old file or the new one (for checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name the writer creates itself, so the file gets the usual permissions.
    temporary = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(temporary)
        if durable:
            with open(temporary, "rb") as stream:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files :func:`write_atomic` leaves beside ``path`` when its
    writer is killed (``kill -9``, power loss); returns them. Call it only where no other
    process writes ``path`` at the same time."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"))
    for temporary in stale:
        temporary.unlink(missing_ok=True)
    return stale


def strict_json(value: object, indent: int | None = None) -> str:
    """``value`` as strictly valid JSON: a float that is not finite (NaN where there was
    nothing to count) becomes ``null``; tensors and numpy scalars must be converted first."""
    return json.dumps(_finite_or_none(value), indent=indent, allow_nan=False)


def _finite_or_none(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value
