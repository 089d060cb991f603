"""Bot etiquette: hashtags where they fit, and a cap on posts per day.

The account's bot flag is the channels' part (`Channel.etiquette`, `python -m bot check --fix`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot import BotError
from bot.models import Post


class DailyCapReached(BotError):
    pass


def with_hashtags(caption: str, hashtags: Sequence[str], fits: Callable[[str], bool]) -> str:
    """The caption with each of `hashtags` appended, in order, while the text still `fits` the
    channel's limit. A tag that does not fit is left out (a shorter later one may still fit);
    the caption itself is never cut. Tags the caption already has are not repeated."""
    text = caption
    present = {t.lower() for t in re.findall(r"#\w+", caption)}
    for tag in hashtags:
        longer = f"{text} {tag}" if text else tag
        if tag.lower() not in present and fits(longer):
            text = longer
            present.add(tag.lower())
    return text


def _utc_day(now: datetime) -> datetime:
    return now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def check_daily_cap(s: Session, cap: int | None, now: datetime) -> None:
    """DailyCapReached when `cap` posts were already made on the UTC day of `now`."""
    if cap is None:
        return
    day = _utc_day(now)
    made = s.scalar(select(func.count()).select_from(Post).where(Post.created_at >= day))
    if made >= cap:
        raise DailyCapReached(
            f"not posting: {made} posts today (UTC), and bot.max_posts_per_day is {cap}; the "
            f"next can go after {day + timedelta(days=1):%Y-%m-%d %H:%M} UTC")


def schedule_over_cap(trigger: Any, cap: int | None, now: datetime) -> str | None:
    """A warning when the schedule (an APScheduler trigger) has more slots in one of the next
    seven UTC days than `cap` allows: those slots would post nothing."""
    if cap is None:
        return None
    most = 0
    for n in range(1, 8):
        start = _utc_day(now) + timedelta(days=n)
        slots, t = 0, trigger.get_next_fire_time(None, start)
        while t is not None and t < start + timedelta(days=1) and slots <= cap:
            slots += 1
            t = trigger.get_next_fire_time(t, t + timedelta(microseconds=1))
        most = max(most, slots)
    if most <= cap:
        return None
    return (f"the schedule has more than {cap} slots in a UTC day, and bot.max_posts_per_day "
            f"is {cap}: the slots beyond it post nothing; raise the cap or thin the schedule")
