"""File helpers with no heavy imports (the bot's CLI uses them before torch is loaded)."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


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


def while_unchanged(load: Callable[[str], T], size: int = 2) -> Callable[[str | Path], T]:
    """`load(path)`, remembered (for the last `size` files) until the file's mtime changes:
    for files read on every draw or post (a checkpoint, an index, a critic). The path keeps
    the caller's spelling, so error messages name the file as given."""
    @lru_cache(maxsize=size)
    def cached(path: str, mtime_ns: int) -> T:
        return load(path)

    def get(path: str | Path) -> T:
        p = Path(path)
        return cached(str(p), p.stat().st_mtime_ns if p.exists() else 0)
    return get
