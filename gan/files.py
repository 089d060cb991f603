"""File helpers with no heavy imports (the bot's CLI uses them before torch is loaded)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def atomic_write(path: str | Path, data: bytes | Callable[[Path], object],
                 suffix: str = "") -> Path:
    """Write `data` (bytes, or a function that writes the file it is given) to a temporary file
    beside `path`, then rename it over `path`: a reader, or a crash, never sees half a file.
    The folder is made if missing; the temporary file never outlives the call. `suffix` ends
    the temporary name, for writers that would append their own (numpy's .npz)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
