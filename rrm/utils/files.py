"""Atomic file writes: a reader never sees a partial file, even if the writer is killed."""

from __future__ import annotations

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
