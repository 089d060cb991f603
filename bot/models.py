"""The tables. Alembic migrations in migrations/ create them; a test checks the two agree."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import (JSON, CheckConstraint, DateTime, Float, ForeignKey, Index, MetaData,
                        String, Text, UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Named constraints: SQLite's batch migrations can only alter constraints that have a name.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}



class DeliveryState(StrEnum):
    """A delivery's state; the values are what the `deliveries.state` column holds (a StrEnum
    equals its string, so rows read back as plain strings compare equal)."""

    PENDING = "pending"  # not yet delivered: the next delivery pass tries it
    POSTED = "posted"
    FAILED = "failed"  # gave up (or permanent); `retry` makes it pending again


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out; SQLite would otherwise hand back naive ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC time")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (
        # At most one active checkpoint, enforced by the database itself.
        Index("uq_checkpoints_one_active", "active", unique=True,
              sqlite_where=text("active"), postgresql_where=text("active")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    variant: Mapped[str] = mapped_column(String(64))
    step: Mapped[int]
    images_seen: Mapped[int]
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    active: Mapped[bool] = mapped_column(default=False)

    posts: Mapped[list[Post]] = relationship(back_populates="checkpoint")


class Post(Base):
    __tablename__ = "posts"
    __table_args__ = (UniqueConstraint("checkpoint_id", "seed"),)  # a seed is never reused

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id"))
    seed: Mapped[int]
    image_path: Mapped[str] = mapped_column(Text)  # relative to the data folder
    image_sha256: Mapped[str] = mapped_column(String(64))
    phash: Mapped[str] = mapped_column(String(16))  # 64-bit perceptual hash, hex
    caption: Mapped[str] = mapped_column(Text)
    alt_text: Mapped[str] = mapped_column(Text)
    # "image"; or "animation": a looping walk through `seeds` (`seed` is the first), `frames`
    # frames in all at `fps`, stored as a 64x64 GIF at image_path (its hash: image_sha256; its
    # first frame's perceptual hash: phash).
    kind: Mapped[str] = mapped_column(String(16), default="image", server_default="image")
    seeds: Mapped[list[int] | None] = mapped_column(JSON(none_as_null=True))
    frames: Mapped[int | None]
    fps: Mapped[float | None] = mapped_column(Float)
    # Curated (bot.curate): the chosen seed's realism score, and every candidate drawn for the
    # post as {"seed", "score"} ("refused": "dedup" or "memorisation" for one that failed a
    # check); both null for an uncurated post. `seed` is the one posted.
    score: Mapped[float | None] = mapped_column(Float)
    candidates: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))

    checkpoint: Mapped[Checkpoint] = relationship(back_populates="posts")
    deliveries: Mapped[list[Delivery]] = relationship(back_populates="post",
                                                      order_by="Delivery.id")


class Attempted:
    """The columns of something sent to a channel with attempts, backoff and the "maybe sent"
    marker: a post's delivery, or a reply to a mention. bot.posting.attempt drives both."""

    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    remote_id: Mapped[str | None] = mapped_column(Text)
    remote_url: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    # The image as delivered, e.g. "512x512" (bot.image.scale; the stored one is 64x64).
    image_size: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set and committed just before the request that may create the remote post (a status,
    # a tweet): from then on an attempt first looks for that post on the server. Unlike
    # `attempts`, `retry` never resets it, and no server-side key expiry makes it forget.
    maybe_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The image as uploaded by an earlier attempt, reused while the server still has it.
    media_id: Mapped[str | None] = mapped_column(Text)
    # The first of the transient failures in a row; past retry.give_up_after_h it fails.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)

    channel: str
    what: str  # "post 12", "reply 3": how log lines name it

    @property
    def label(self) -> str:
        return f"{self.what} → {self.channel}"


def _state_check() -> CheckConstraint:
    return CheckConstraint(f"state IN ({', '.join(repr(s.value) for s in DeliveryState)})",
                           name="state")


class Delivery(Attempted, Base):
    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("post_id", "channel"), _state_check())

    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"))
    channel: Mapped[str] = mapped_column(String(64))

    post: Mapped[Post] = relationship(back_populates="deliveries")

    @property
    def what(self) -> str:
        return f"post {self.post_id}"


class Reply(Attempted, Base):
    """A reply to a mention that asked for a face (bot/replies.py): recorded, image and all,
    before it is sent, then sent like a delivery."""

    __tablename__ = "replies"
    __table_args__ = (UniqueConstraint("channel", "notification_id"),  # once per mention
                      UniqueConstraint("checkpoint_id", "seed"), _state_check())

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    notification_id: Mapped[str] = mapped_column(String(64))
    mention_id: Mapped[str] = mapped_column(String(64))  # the status replied to
    # Who asked: the account's URI (stable: its seeds derive from it) and its acct, which the
    # reply mentions ("alice" on the bot's server, "alice@example.org" elsewhere).
    account_uri: Mapped[str] = mapped_column(Text)
    account_acct: Mapped[str] = mapped_column(Text)
    counter: Mapped[int]  # this account's n-th face: the seed is derived from (uri, counter)
    visibility: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id"))
    seed: Mapped[int]
    image_path: Mapped[str] = mapped_column(Text)  # relative to the data folder
    image_sha256: Mapped[str] = mapped_column(String(64))
    phash: Mapped[str] = mapped_column(String(16))
    caption: Mapped[str] = mapped_column(Text)
    alt_text: Mapped[str] = mapped_column(Text)

    checkpoint: Mapped[Checkpoint] = relationship()

    @property
    def what(self) -> str:
        return f"reply {self.id}"


class ChannelState(Base):
    """What the bot knows about a channel as a whole, so that a restart knows it too."""

    __tablename__ = "channel_states"

    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    # A server's rate limit (429): no request to this channel before this time.
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pause_reason: Mapped[str | None] = mapped_column(Text)
    # The first transient failure since the channel last delivered; the daemon warns once
    # (warned_at) when that is an hour ago.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The newest mention notification handled (bot/replies.py): the next poll asks for newer
    # ones only, also after a restart.
    mentions_since_id: Mapped[str | None] = mapped_column(String(64))
