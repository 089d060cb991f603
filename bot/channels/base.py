"""The channel interface: `deliver(post) -> Receipt`, and the two kinds of delivery error.

A channel gets everything it needs in an `Outgoing` (no database objects), so a channel is a
plain class that can be tested alone. It must be safe to call twice with the same
`idempotency_key`: after a crash between the remote call and the database commit, the bot
delivers again, and the channel should make that a no-op (outbox: same file names; Mastodon:
the Idempotency-Key header; both social channels: a look-up of the account's latest posts once
an earlier attempt may have reached the server, which the channel reports with
`Outgoing.on_sending` before the request that creates the post).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from bot.fields import template_fields


class ChannelSettings(BaseModel):
    """Settings every channel has; a channel subclasses this for its own keys."""

    model_config = ConfigDict(extra="forbid")

    type: str  # filled from the channel's name in the config when not given
    enabled: bool = True


# How far a server's clock may lag ours, when a channel matches an earlier attempt's post by its
# time (it must not be older than the post's row).
CLOCK_SKEW = timedelta(minutes=2)


@dataclass(frozen=True)
class Outgoing:
    post_id: int
    idempotency_key: str
    image_path: Path
    caption: str
    alt_text: str
    seed: int
    checkpoint: str  # the checkpoint file's name
    variant: str
    step: int
    images_seen: int
    created_at: datetime
    quality: str = ""  # "FLD 1450" (bot.quality_metric), or empty
    score: float | None = None  # a curated post's realism score (bot.curate); None: uncurated
    hashtags: tuple[str, ...] = ()  # bot.hashtags: the channel appends those that fit
    attempt: int = 1  # 1 on the first try (`retry` starts again at 1)
    # An earlier attempt sent the request that creates the post, and may have posted before
    # it died or lost the answer: the channel looks for that post first.
    maybe_sent: bool = False
    media_id: str | None = None  # the image as an earlier attempt uploaded it, to reuse
    # The channel calls these; each is committed to the database before it returns.
    on_sending: Callable[[], None] = lambda: None  # just before the request creating the post
    on_media: Callable[[str], None] = lambda media_id: None  # an upload's id, to reuse later
    # A reply to a mention (bot/replies.py; Mastodon only): the status answered, the account
    # to mention at the start of the text, and the reply's visibility (the channel's own
    # setting otherwise). A reply gets no hashtags and no channel caption template.
    in_reply_to_id: str | None = None
    mention: str | None = None
    visibility: str | None = None
    # An animated post: image_path is its GIF, video_path the same walk as an MP4; the seeds
    # it walks through and its number of frames.
    video_path: Path | None = None
    seeds: tuple[int, ...] = ()
    frames: int | None = None

    def render(self, template: str) -> str:
        """A channel's own caption template, filled like the bot-wide one."""
        return template.format(**template_fields(
            self.post_id, self.seed, self.checkpoint, self.variant, self.step,
            self.images_seen, self.quality, self.score)).strip()

    def png(self) -> bytes:
        try:
            return self.image_path.read_bytes()
        except FileNotFoundError:
            raise Permanent(f"image {self.image_path} is missing; "
                            f"`regenerate {self.post_id}` re-creates it") from None


@dataclass(frozen=True)
class Advice:
    """A point of bot etiquette about the account (`check` shows it); `fixed`: `check --fix`
    has just mended it."""
    text: str
    fixed: bool = False


@dataclass(frozen=True)
class Receipt:
    remote_id: str
    url: str | None = None


class DeliveryError(Exception):
    pass


class Retryable(DeliveryError):
    """Try again later: network trouble, a timeout, 5xx, or 429 (with the server's wait)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after  # seconds the server asked us to wait, if it said


class RateLimited(Retryable):
    """A 429: the whole channel waits `retry_after` seconds (the server's reset), and the
    delivery's attempt does not count."""


class Permanent(DeliveryError):
    """Retrying cannot help (401/403/422, bad config): the delivery is marked failed."""


T = TypeVar("T")


def wait_for(ready: Callable[[], T | None], deadline_s: float, what: str,
             first_wait_s: float) -> T:
    """Call `ready` until it returns something, waiting twice as long each time (at most 5 s);
    Retryable when `deadline_s` has passed (the next attempt starts over)."""
    deadline = time.monotonic() + deadline_s
    wait = first_wait_s
    while (result := ready()) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Retryable(f"{what}: still not done after {deadline_s:g} s")
        time.sleep(min(wait, left))
        wait = min(wait * 2, 5.0)
    return result


def error_for_status(status: int, message: str,
                     retry_after: float | None = None) -> DeliveryError:
    """Classify an HTTP error response, for channels that talk HTTP."""
    if status == 429:
        return RateLimited(f"HTTP {status}: {message}", retry_after)
    if status == 408 or status >= 500:
        return Retryable(f"HTTP {status}: {message}", retry_after)
    return Permanent(f"HTTP {status}: {message}")


class Channel(ABC):
    """One place posts go. Subclasses set `Settings` and implement `deliver`."""

    Settings: ClassVar[type[ChannelSettings]] = ChannelSettings

    def __init__(self, name: str, settings: ChannelSettings, data_dir: Path):
        self.name = name
        self.settings = settings
        self.data_dir = data_dir

    def where(self) -> str:
        """Where a person can see the posts (a URL), for log lines."""
        return self.name

    def check(self) -> str:
        """Verify the settings and credentials without posting; say where posts would go.
        Raises DeliveryError (or BotError) with what is wrong."""
        return f"posts to {self.where()}"

    def etiquette(self, fix: bool = False) -> list[Advice]:
        """What the account lacks as a bot's account; with `fix`, mended where the API can.
        Raises DeliveryError when it cannot look or the fix is refused."""
        return []

    @abstractmethod
    def deliver(self, post: Outgoing) -> Receipt:
        """Publish the post; raise Retryable or Permanent when it did not happen."""
