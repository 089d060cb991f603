"""The memorisation guard's training faces: where they come from, their index, what to say.

The bot never posts a near-copy of a training face (docs/metrics.md). The faces come from an
index file (`bot.memorisation.index`), or from the bot's own index of the faces folder
(`bot.memorisation.faces`, indexed once into the data folder), or from nowhere (the guard is
off, with a warning when the folder named is not there). `posting.draw` asks `load_guard` for
the index on every draw; the daemon says at start which it is (`log_guard`), `status` too
(`describe_guard`, which reads and builds nothing).
"""

from __future__ import annotations

import logging
import time
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from bot import BotError, locks
from bot.config import Memorisation
from gan import DataError, NearestIndex, build_index, load_index

log = logging.getLogger(__name__)

INDEX_FILE = "faces-index.npz"  # the bot's own index of `memorisation.faces`, in data_dir
_warned: set[Path] = set()  # faces folders already warned about (once per process)


class Source(Enum):
    """Where the guard's training faces come from."""

    INDEX = "index"  # an index file the user names (bot.memorisation.index)
    FACES = "faces"  # the bot's own index file of the faces folder, in data_dir
    MISSING = "missing"  # the faces folder named is not there: off, with a warning
    OFF = "off"  # bot.memorisation.index and .faces are both null


@dataclass(frozen=True)
class GuardSource:
    """Where the memorisation guard's training faces come from, without reading anything."""

    kind: Source
    index: Path | None = None
    faces: Path | None = None


def guard_source(memorisation: Memorisation | None, data_dir: Path | None) -> GuardSource:
    if memorisation is None:
        return GuardSource(Source.OFF)
    if memorisation.index is not None:
        return GuardSource(Source.INDEX, index=memorisation.index)
    faces = memorisation.faces
    if faces is None:
        return GuardSource(Source.OFF)
    if not faces.expanduser().is_dir():
        return GuardSource(Source.MISSING, faces=faces)
    if data_dir is None:
        raise ValueError("the memorisation guard needs the data folder to keep its index in")
    return GuardSource(Source.FACES, index=data_dir / INDEX_FILE, faces=faces)


def _missing_text(faces: Path) -> str:
    return (f"memorisation guard off: the training faces folder {faces} "
            "(bot.memorisation.faces) is not there, so images are not checked against the "
            "training faces; set bot.memorisation.faces to the folder the checkpoint was "
            "trained on, or bot.memorisation.index to an index file (`python train.py index "
            "FACES --out PATH`), or faces: null to silence this (docs/metrics.md)")


def _built_from(index: NearestIndex, faces: Path) -> bool:
    return index.source == str(faces.expanduser().resolve())


def _index_of_faces(faces: Path, out: Path) -> NearestIndex:
    """The bot's own index of `faces` at `out`: read, or built (once) when it is missing,
    unreadable or of another folder. Cached by the file's mtime, so cheap on every draw."""
    try:
        index = load_index(out) if out.is_file() else None
    except DataError:
        index = None  # an old format or a broken file: ours to replace
    if index is not None and _built_from(index, faces):
        return index
    out.parent.mkdir(parents=True, exist_ok=True)
    with locks.hold(out.with_name(f"{out.name}.lock")):  # one builder at a time
        try:  # built by another process while this one waited?
            index = load_index(out) if out.is_file() else None
        except DataError:
            index = None
        if index is not None and _built_from(index, faces):
            return index
        why = ("" if not out.is_file() else
               " (the old one is unreadable)" if index is None else
               f" (the old one is of {index.source})")
        log.info("building the memorisation index of %s into %s (once)%s ...", faces, out, why)
        start = time.monotonic()
        try:
            # No decoded-image cache: ~250 MB for 20k faces, for an index built once.
            build_index(faces, out, cache_dir=None, progress=False)
        except DataError as e:
            raise BotError(f"bot.memorisation.faces: {e}") from None
        index = load_index(out)  # as stored (float16), the same on every draw
        log.info("memorisation index built: %d faces of %s in %.0f s", len(index), faces,
                 time.monotonic() - start)
        return index


def load_guard(memorisation: Memorisation | None,
               data_dir: Path | None = None) -> NearestIndex | None:
    """The training-face index of the memorisation guard; None when the guard is off.

    `memorisation.index` when set; otherwise the bot's own index of `memorisation.faces` in
    `data_dir` (built here the first time, and again when the folder changes)."""
    src = guard_source(memorisation, data_dir)
    if src.kind is Source.INDEX:
        try:
            return load_index(src.index)  # cached while the file is unchanged
        except DataError as e:
            raise BotError(f"bot.memorisation.index: {e}") from None
    if src.kind is Source.FACES:
        return _index_of_faces(src.faces, src.index)
    if src.kind is Source.MISSING and src.faces not in _warned:  # once, e.g. for one post
        _warned.add(src.faces)
        log.warning(_missing_text(src.faces))
    return None


def describe_guard(memorisation: Memorisation, data_dir: Path) -> str:
    """One line for `status`: which index the guard uses, or why it is off. Builds nothing."""
    src = guard_source(memorisation, data_dir)
    at = f"min distance {memorisation.min_distance}"
    if src.kind is Source.INDEX:
        missing = "" if src.index.is_file() else "; the file is missing: the bot will not start"
        return f"on (index {src.index}, {at}{missing})"
    if src.kind is Source.FACES:
        try:
            with np.load(src.index, allow_pickle=False) as z:
                source = str(z["source"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            source = None
        state = ("built" if source == str(src.faces.expanduser().resolve()) else
                 "built at the next start or post")
        return f"on (index of the training faces in {src.faces}: {src.index}, {state}; {at})"
    if src.kind is Source.MISSING:
        return (f"off (the training faces folder {src.faces} is not there: set "
                "bot.memorisation.faces or bot.memorisation.index)")
    return "off (bot.memorisation.index and bot.memorisation.faces are null)"


def log_guard(memorisation: Memorisation, data_dir: Path) -> None:
    """Say at start whether images are checked against the training faces, building the
    bot's own index now if it needs one (and fail now, not at the first post, when the index
    cannot be read or built)."""
    src = guard_source(memorisation, data_dir)
    if src.kind is Source.MISSING:
        _warned.add(src.faces)
        log.warning(_missing_text(src.faces))
        return
    guard = load_guard(memorisation, data_dir)
    if guard is None:
        log.warning("memorisation guard off (bot.memorisation.index and .faces are null): "
                    "images are not checked against the training faces (see docs/metrics.md)")
    else:
        log.info("memorisation guard on: images nearer than %.2f to one of the %d training "
                 "faces in %s are drawn again", memorisation.min_distance, len(guard), src.index)
