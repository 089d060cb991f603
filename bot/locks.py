"""Cross-process locks: flock on files beside the database.

The kernel drops an flock when its process dies, however it dies, so a crashed daemon never
leaves a stale lock behind. Two locks: `daemon` (held for the daemon's lifetime; one daemon per
database) and `post` (held while posting or delivering, so a manual `post` and the daemon's
tick never deliver the same pending row at once).
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from bot.config import Settings


class Locked(Exception):
    pass


def lock_path(settings: Settings, name: str) -> Path:
    db = settings.db_file
    # A server database has no file to sit beside; the data folder stands in.
    folder, stem = (db.parent, db.name) if db else (settings.data_dir, "bot")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{stem}.{name}.lock"


@contextmanager
def hold(path: Path, wait: bool = True) -> Iterator[int]:
    """Hold an exclusive lock on `path`; raise Locked at once if not `wait`ing and it is held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Locked(path) from None
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def write_info(fd: int, info: dict[str, Any]) -> None:
    """Record what the lock holder is doing (pid, next post), for `status` to read."""
    data = json.dumps(info).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def holder_info(path: Path) -> dict[str, Any] | None:
    """The holder's info if someone holds the lock at `path`, else None."""
    if not path.exists():
        return None
    # Probing takes the lock for a moment; a daemon starting in that same moment is refused
    # and can simply be started again.
    try:
        with hold(path, wait=False):
            return None
    except Locked:
        try:
            return json.loads(path.read_text() or "{}")
        except ValueError:
            return {}  # caught mid-write: held, details unknown
