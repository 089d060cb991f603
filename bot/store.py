"""Queries. Callers own the session and decide when to commit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from bot.models import ChannelState, Checkpoint, Delivery, DeliveryState, Post, Reply, utcnow


def active_checkpoint(s: Session) -> Checkpoint | None:
    return s.scalar(select(Checkpoint).where(Checkpoint.active))


def checkpoint_by_sha(s: Session, sha256: str) -> Checkpoint | None:
    return s.scalar(select(Checkpoint).where(Checkpoint.sha256 == sha256))


def checkpoints(s: Session) -> list[Checkpoint]:
    return list(s.scalars(select(Checkpoint).order_by(Checkpoint.id)))


def activate(s: Session, ck: Checkpoint) -> None:
    # Clear first: the unique index allows one active row at any moment.
    s.execute(update(Checkpoint).where(Checkpoint.id != ck.id).values(active=False))
    s.flush()
    ck.active = True


def used_seeds(s: Session, checkpoint_id: int) -> set[int]:
    """The seeds posted (an animation's every face too), or sent as replies, with this
    checkpoint."""
    walks = s.scalars(select(Post.seeds).where(Post.checkpoint_id == checkpoint_id,
                                               Post.seeds.is_not(None)))
    return (set(s.scalars(select(Post.seed).where(Post.checkpoint_id == checkpoint_id)))
            | set(s.scalars(select(Reply.seed).where(Reply.checkpoint_id == checkpoint_id)))
            | {seed for seeds in walks for seed in seeds})


def phashes(s: Session) -> list[str]:
    """The perceptual hashes of every image posted or sent as a reply."""
    return list(s.scalars(select(Post.phash).union_all(select(Reply.phash))))


def post(s: Session, post_id: int) -> Post | None:
    return s.get(Post, post_id)


def recent_posts(s: Session, limit: int) -> list[Post]:
    return list(s.scalars(select(Post).options(selectinload(Post.deliveries),
                                               selectinload(Post.checkpoint))
                          .order_by(Post.id.desc()).limit(limit)))


def last_post_id(s: Session) -> int | None:
    return s.scalar(select(func.max(Post.id)))


def last_post_time(s: Session) -> datetime | None:
    return s.scalar(select(func.max(Post.created_at)))


def due_deliveries(s: Session, now: datetime) -> list[Delivery]:
    """Pending deliveries whose backoff has run out, oldest first."""
    return list(s.scalars(
        select(Delivery).options(selectinload(Delivery.post).selectinload(Post.checkpoint))
        .where(Delivery.state == DeliveryState.PENDING)
        .where((Delivery.next_attempt_at.is_(None)) | (Delivery.next_attempt_at <= now))
        .order_by(Delivery.id)))


def due_replies(s: Session, now: datetime) -> list[Reply]:
    """Pending replies whose backoff has run out, oldest first."""
    return list(s.scalars(
        select(Reply).options(selectinload(Reply.checkpoint))
        .where(Reply.state == DeliveryState.PENDING)
        .where((Reply.next_attempt_at.is_(None)) | (Reply.next_attempt_at <= now))
        .order_by(Reply.id)))


def replies_since(s: Session, since: datetime, account_uri: str | None = None) -> int:
    """Replies recorded since `since` (whatever became of them), to one account if given."""
    q = select(func.count()).select_from(Reply).where(Reply.created_at >= since)
    if account_uri is not None:
        q = q.where(Reply.account_uri == account_uri)
    return s.scalar(q)


def next_counter(s: Session, account_uri: str) -> int:
    """The counter of the next face for this account: one past its last reply's, from 0."""
    last = s.scalar(select(func.max(Reply.counter)).where(Reply.account_uri == account_uri))
    return 0 if last is None else last + 1


def reply_counts(s: Session) -> dict[str, int]:
    return dict(s.execute(select(Reply.state, func.count()).group_by(Reply.state)).all())


def delivery_counts(s: Session) -> dict[str, int]:
    return dict(s.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all())


def last_error(s: Session) -> Delivery | None:
    return s.scalar(select(Delivery).where(Delivery.last_error.is_not(None))
                    .order_by(Delivery.updated_at.desc()).limit(1))


def reset_failed(s: Session, table: type[Delivery] | type[Reply] = Delivery) -> list[int]:
    """Failed deliveries (or replies) back to pending with a fresh attempt budget; returns
    their ids. What they know of earlier attempts (maybe sent, the uploaded image) stays."""
    failed = list(s.scalars(select(table.id).where(table.state == DeliveryState.FAILED)))
    s.execute(update(table).where(table.id.in_(failed))
              .values(state=DeliveryState.PENDING, attempts=0, next_attempt_at=None,
                      failing_since=None, updated_at=utcnow()))
    return failed


def channel_state(s: Session, channel: str) -> ChannelState:
    """The channel's row, made (unsaved until the caller commits) when it has none yet."""
    state = s.get(ChannelState, channel)
    if state is None:
        state = ChannelState(channel=channel)
        s.add(state)
    return state


def paused_channels(s: Session, now: datetime) -> list[ChannelState]:
    return list(s.scalars(select(ChannelState).where(ChannelState.paused_until > now)
                          .order_by(ChannelState.channel)))


def failing_channels(s: Session) -> list[ChannelState]:
    return list(s.scalars(select(ChannelState).where(ChannelState.failing_since.is_not(None))
                          .order_by(ChannelState.channel)))
