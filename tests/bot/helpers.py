"""Small helpers shared by the bot's tests."""

from __future__ import annotations

import io
import random
from datetime import timedelta
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import update

from bot import store
from bot.channels import build_channels
from bot.checkpoints import ensure_active
from bot.db import open_database
from bot.models import ChannelState, Delivery, utcnow


class Seeds(random.Random):
    """An rng that hands out the given seeds in order."""

    def __init__(self, *seeds: int):
        super().__init__()
        self.seeds = list(seeds)

    def randrange(self, *_args):
        return self.seeds.pop(0)


def started(settings):
    """The database of `settings`, upgraded, with the default checkpoint active."""
    sessions = open_database(settings.database_url)
    ensure_active(sessions, settings)
    return sessions


def bot_parts(settings):
    """(settings, sessions, channels) of a bot started from `settings`."""
    return settings, started(settings), build_channels(settings.channels, settings.data_dir)


def delivery(sessions, post_id: int, channel: str) -> Delivery:
    with sessions() as s:
        return next(d for d in store.post(s, post_id).deliveries if d.channel == channel)


def make_due(sessions) -> None:
    """Every delivery's backoff and every channel's rate-limit pause is over: the next tick
    tries them again."""
    past = utcnow() - timedelta(seconds=1)
    with sessions.begin() as s:
        s.execute(update(Delivery).values(next_attempt_at=past))
        s.execute(update(ChannelState).where(ChannelState.paused_until.is_not(None))
                  .values(paused_until=past))


def is_enlarged(data: bytes, original: Path, scale: int = 8) -> bool:
    """`data` (a delivered PNG) is the stored image `original` enlarged `scale` times,
    nearest-neighbour: every scale-th pixel is the original's."""
    with Image.open(io.BytesIO(data)) as big, Image.open(original) as small:
        return (big.size == (small.width * scale, small.height * scale) and np.array_equal(
            np.asarray(big.convert("RGB"))[::scale, ::scale], np.asarray(small.convert("RGB"))))
