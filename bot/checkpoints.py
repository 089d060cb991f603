"""Publishing checkpoints to the bot, and loading a published one safely.

A checkpoint is recorded with its sha256. Every later load checks the file still has that
hash: a post is only reproducible (`regenerate`) if its checkpoint file is unchanged.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from bot import BotError, store
from bot.config import Settings
from bot.models import Checkpoint, utcnow
from bot.render import RemoteCheckpoint, draw_candidates, walk_frames, worker
from gan import CheckpointError, LoadedCheckpoint, file_sha256, load_checkpoint, read_metrics

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


def _load(path: Path) -> LoadedCheckpoint | RemoteCheckpoint:
    if worker() is not None:  # the daemon: torch stays in the render worker
        return worker().describe(path)
    try:
        return load_checkpoint(path)  # imports torch
    except CheckpointError as e:
        raise BotError(str(e)) from None


def render(ck: LoadedCheckpoint | RemoteCheckpoint, seed: int) -> Image.Image:
    """The 64x64 image for (checkpoint, seed): the same pixels every time, on any machine."""
    if isinstance(ck, RemoteCheckpoint):
        return worker().render(ck.path, seed)
    from gan import generate  # here: it imports torch, which the daemon leaves to the worker
    return generate(ck, [seed])[0]


def render_walk(ck: LoadedCheckpoint | RemoteCheckpoint, seeds: list[int], per_leg: int):
    """The frames of a looping walk between `seeds` (bot.render.walk_frames): the same pixels
    every time, drawn by the render worker in the daemon."""
    if isinstance(ck, RemoteCheckpoint):
        return worker().walk(ck.path, seeds, per_leg)
    return walk_frames(ck, seeds, per_leg)


def render_candidates(ck: LoadedCheckpoint | RemoteCheckpoint, seeds: list[int],
                      critic: Path | None) -> tuple[list[Image.Image], list[float] | None]:
    """The images of a post's candidate `seeds` (the pixels `render` gives each) and their
    realism scores by the critic file `critic` (None without one), all in one request to
    the render worker in the daemon."""
    from PIL import Image
    if isinstance(ck, RemoteCheckpoint):
        images, scores = worker().candidates(ck.path, seeds, critic)
    else:
        images, scores = draw_candidates(ck, seeds, critic)
    return [Image.fromarray(a) for a in images], scores


class CheckpointUnavailable(BotError):
    """A published checkpoint's file is missing or changed: worth trying again soon."""


def problem(row: Checkpoint) -> str | None:
    """Why a published checkpoint cannot be used now (its file missing or changed), or None."""
    path = Path(row.path)
    if not path.is_file():
        return f"checkpoint #{row.id} is missing: {path}"
    if file_sha256(path) != row.sha256:
        return (f"checkpoint #{row.id} ({path}) changed since it was published; publish it "
                "again to use it")
    return None


def load_published(row: Checkpoint) -> LoadedCheckpoint:
    why = problem(row)
    if why is not None:
        raise CheckpointUnavailable(why)
    return _published(row.path, row.sha256, worker())


@lru_cache(maxsize=2)
def _published(path: str, sha256: str, worker: object) -> LoadedCheckpoint | RemoteCheckpoint:
    # Once per file content (the hash was just checked) and render worker, not once per draw.
    return _load(Path(path))


def publish(sessions: sessionmaker[Session], path: Path) -> Checkpoint:
    """Validate a checkpoint (safe load, one image), record it, and make it the active one."""
    path = Path(path).resolve()
    if path.is_dir():
        raise BotError(f"{path}: a folder, not a checkpoint file")
    if not path.is_file():
        raise BotError(f"checkpoint not found: {path}")
    sha = file_sha256(path)
    ck = _load(path)
    render(ck, 0)  # a checkpoint that loads but cannot draw must not go live
    # `python train.py evaluate` leaves <stem>.metrics.json beside the file it measured; an
    # exported checkpoint may carry them inside.
    metrics = read_metrics(path, sha, warn=ck.metrics is None) or ck.metrics
    with sessions.begin() as s:
        row = store.checkpoint_by_sha(s, sha)
        if row is None:
            row = Checkpoint(sha256=sha)
            s.add(row)
        row.path = str(path)
        row.variant = ck.variant
        row.step = ck.step
        row.images_seen = ck.images_seen
        row.metrics = metrics
        row.published_at = utcnow()
        store.activate(s, row)
    log.info("published %s (%s, step %d, %d images seen%s) as checkpoint #%d, now active",
             path.name, row.variant, row.step, row.images_seen,
             ", with metrics" if metrics else ", no metrics", row.id)
    return row


def ensure_active(sessions: sessionmaker[Session], settings: Settings) -> Checkpoint:
    """The active checkpoint; on first start, the shipped default gets published."""
    with sessions() as s:
        row = store.active_checkpoint(s)
    if row is not None:
        return row
    default = settings.default_checkpoint
    if not default.is_file():
        raise BotError(f"no checkpoint is published and the default {default} is missing: "
                       "publish one with `python -m bot publish PATH`")
    log.info("no checkpoint published yet: publishing the default %s", default)
    return publish(sessions, default)


def usable_checkpoint(sessions: sessionmaker[Session], settings: Settings) -> Checkpoint:
    """The active checkpoint when its file is usable. When it is missing or changed:
    with bot.fallback_to_default, the shipped default is published and made active (so the
    account goes on posting; logged as an error), else CheckpointUnavailable."""
    row = ensure_active(sessions, settings)
    why = problem(row)
    if why is None:
        return row
    default = settings.default_checkpoint.resolve()
    if not settings.fallback_to_default:
        raise CheckpointUnavailable(why)
    if Path(row.path) == default or not default.is_file():
        raise CheckpointUnavailable(f"{why}; the fallback, the default {default}, is not "
                                    "usable either")
    log.error("%s: FALLING BACK to the shipped default %s (bot.fallback_to_default), which is "
              "now the active checkpoint; publish yours again once it is fixed", why, default)
    return publish(sessions, default)
