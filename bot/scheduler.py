"""The daemon: an APScheduler 3.11 BlockingScheduler that calls the plain functions in
bot.posting. All posting state lives in the database, so the scheduler keeps its jobs in
memory; a slot missed while the daemon was down is found from the last post's time instead.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

from apscheduler.events import (EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED,
                                EVENT_SCHEDULER_STARTED, JobEvent, SchedulerEvent)
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import undefined

from bot import BotError, locks, store
from bot.channels import build_channels
from bot.checkpoints import CheckpointUnavailable, ensure_active, usable_checkpoint
from bot.config import Schedule, Settings
from bot.db import open_database
from bot.etiquette import schedule_over_cap
from bot.models import utcnow
from bot.curate import log_curation
from bot.guard import log_guard
from bot.posting import deliver_pending, post_once
from bot.render import in_worker

log = logging.getLogger(__name__)

POST_JOB, DELIVER_JOB, REPLIES_JOB, ANIMATION_JOB = "post", "deliver", "replies", "animation"


def make_trigger(schedule: Schedule) -> BaseTrigger:
    tz = ZoneInfo(schedule.timezone)
    if schedule.cron is not None:
        return CronTrigger.from_crontab(schedule.cron, timezone=tz)
    return IntervalTrigger(minutes=schedule.interval_minutes, timezone=tz)


def first_run_time(schedule: Schedule, trigger: BaseTrigger, last_post_at: datetime | None,
                   now: datetime) -> tuple[datetime | None, str]:
    """When the first post is due, and why (for the log). The slot after the last post may lie
    in the past (missed while down): APScheduler then runs it once if it is within
    misfire_grace_s. post_at_start posts now only when that slot has passed, i.e. the last post
    is older than the interval, so a crash loop under systemd does not flood the account.
    None: no post yet and none at start, the trigger alone decides."""
    if last_post_at is None:
        if schedule.post_at_start:
            return now, "no post yet: posting at start"
        return None, "no post yet"
    if schedule.cron is not None:
        slot = trigger.get_next_fire_time(None, last_post_at)
    else:
        slot = last_post_at + timedelta(minutes=schedule.interval_minutes)
    last = last_post_at.isoformat(sep=" ", timespec="seconds")
    if not schedule.post_at_start:
        return slot, f"the last post was at {last}"
    if slot <= now:
        return now, f"the last post, at {last}, is older than the schedule: posting at start"
    return slot, (f"no post at start: the last post, at {last}, is more recent than the "
                  "schedule's interval")


def build_scheduler(settings: Settings, trigger: BaseTrigger, post_job: Callable[[], None],
                    deliver_job: Callable[[], None],
                    first_run: datetime | None) -> BlockingScheduler:
    schedule = settings.schedule
    sched = BlockingScheduler(
        timezone=ZoneInfo(schedule.timezone),
        # coalesce: ten missed slots make one post, not ten. The grace (APScheduler's default
        # is 1 s) decides how late a slot may still run, e.g. after a suspend.
        job_defaults={"coalesce": True, "max_instances": 1,
                      "misfire_grace_time": schedule.misfire_grace_s})
    sched.add_job(post_job, trigger, id=POST_JOB, name="post",
                  replace_existing=True, next_run_time=first_run or undefined)
    # Also at once on start: deliveries an earlier run left pending (it crashed or was killed
    # mid-delivery) are reconciled now, not poll_s later. Each channel makes the repeat safe
    # (Mastodon's idempotency key, a look-up of recent posts).
    sched.add_job(deliver_job, IntervalTrigger(seconds=settings.retry.poll_s), id=DELIVER_JOB,
                  name="deliver pending", replace_existing=True, next_run_time=utcnow())
    return sched


def add_replies_job(sched: BlockingScheduler, settings: Settings,
                    job: Callable[[], None]) -> None:
    """Poll the mentions every bot.replies.poll_s (bot/replies.py), the first time at once."""
    sched.add_job(job, IntervalTrigger(seconds=settings.replies.poll_s), id=REPLIES_JOB,
                  name="replies to mentions", replace_existing=True, next_run_time=utcnow())


def add_animation_job(sched: BlockingScheduler, settings: Settings,
                      job: Callable[[], None]) -> None:
    """An animated post at each bot.animation.cron slot (in bot.schedule.timezone)."""
    trigger = CronTrigger.from_crontab(settings.animation.cron,
                                       timezone=ZoneInfo(settings.schedule.timezone))
    sched.add_job(job, trigger, id=ANIMATION_JOB, name="animated post", replace_existing=True)


def _due_text(when: datetime | None) -> str:
    if when is None:
        return "not scheduled"
    wait = max(timedelta(0), when - utcnow())
    return f"{when.isoformat(sep=' ', timespec='seconds')} (in {str(wait).split('.')[0]})"


@contextmanager
def _daemon_lock(settings: Settings) -> Iterator[int]:
    path = locks.lock_path(settings, "daemon")
    with ExitStack() as stack:
        try:
            fd = stack.enter_context(locks.hold(path, wait=False))
        except locks.Locked:
            pid = (locks.holder_info(path) or {}).get("pid", "unknown")
            raise BotError(f"another daemon is already running on this database "
                           f"(pid {pid}, lock {path})") from None
        yield fd


def _stop(sched: BlockingScheduler) -> None:
    while not sched.running:  # a signal just before start(): stop as soon as it has started
        time.sleep(0.05)
    sched.pause()
    sched.shutdown(wait=True)


def _stop_on_signals(sched: BlockingScheduler) -> list[threading.Thread]:
    """SIGTERM and SIGINT: pause, then shut down once the running post is done."""
    stopping: list[threading.Thread] = []

    def stop(signum: int, _frame: object) -> None:
        if stopping:
            return
        log.info("%s: finishing any post in progress, then stopping",
                 signal.Signals(signum).name)
        # pause first: shutdown alone can still hand a due job to the closed executor.
        # In a thread, because a signal handler interrupts the main thread wherever it is,
        # possibly inside the scheduler holding a lock that shutdown needs.
        stopper = threading.Thread(target=_stop, args=(sched,), name="stop", daemon=True)
        stopping.append(stopper)
        stopper.start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return stopping


def run_daemon(settings: Settings) -> None:
    """Post on the schedule until SIGTERM or SIGINT. One daemon per database."""
    # torch stays out of the daemon: a worker process draws, and exits when idle (bot/render.py).
    with _daemon_lock(settings) as fd, in_worker():
        channels = build_channels(settings.channels, settings.data_dir)
        if not channels:
            raise BotError("no channel is enabled: enable one under bot.channels")
        # The first line, before the database, the default checkpoint and the memorisation
        # index have their say: where to look (the outbox's gallery page).
        log.info("posts go to %s",
                 "; ".join(f"{name}: {ch.where()}" for name, ch in channels.items()))
        sessions = open_database(settings.database_url)
        ensure_active(sessions, settings)
        log_guard(settings.memorisation, settings.data_dir)
        log_curation(settings.curate)

        owed = threading.Event()  # a post failed for want of a checkpoint file: retry soon

        def post_job() -> None:
            try:
                usable_checkpoint(sessions, settings)
                post_once(sessions, settings, channels)
                owed.clear()
            except CheckpointUnavailable as e:
                # A file put back or re-published should not wait for the next slot, hours away.
                owed.set()
                log.error("no post this time: %s; trying again in %g s (retry.poll_s)", e,
                          settings.retry.poll_s)
            except BotError as e:
                log.error("no post this time: %s", e)

        def deliver_job() -> None:
            deliver_pending(sessions, settings, channels)
            if owed.is_set():
                post_job()

        with sessions() as s:
            last = store.last_post_time(s)
        schedule = settings.schedule
        trigger = make_trigger(schedule)
        if over := schedule_over_cap(trigger, settings.max_posts_per_day, utcnow()):
            log.warning("%s", over)
        first, why = first_run_time(schedule, trigger, last, utcnow())
        log.info("%s", why)
        sched = build_scheduler(settings, trigger, post_job, deliver_job, first)
        if settings.replies.enabled:
            from bot import replies  # Mastodon.py: only when replies are on
            mastodon = channels[settings.replies.channel]  # checked by the settings

            def replies_job() -> None:
                try:
                    replies.poll(sessions, settings, mastodon)
                except BotError as e:
                    log.error("replies: %s", e)

            add_replies_job(sched, settings, replies_job)
        if settings.animation.cron is not None:

            def animation_job() -> None:
                try:
                    usable_checkpoint(sessions, settings)
                    post_once(sessions, settings, channels, animated=True)
                except BotError as e:
                    log.error("no animated post this time: %s", e)

            add_animation_job(sched, settings, animation_job)
        started = utcnow().isoformat(timespec="seconds")

        def report_next(when: datetime | None) -> None:
            log.info("next post due at %s", _due_text(when))
            locks.write_info(fd, {"pid": os.getpid(), "started_at": started,
                                  "next_post_at": when.isoformat() if when else None})

        def on_start(_event: SchedulerEvent) -> None:
            report_next(sched.get_job(POST_JOB).next_run_time)

        def on_job(event: JobEvent) -> None:
            if event.job_id != POST_JOB:
                return
            if event.code == EVENT_JOB_MISSED:
                log.warning("the post due at %s was missed by more than %d s; skipped",
                            event.scheduled_run_time, schedule.misfire_grace_s)
            # Computed the way APScheduler does, not read from the scheduler: this runs in a
            # worker thread, and asking the scheduler deadlocks while shutdown() waits for it.
            report_next(trigger.get_next_fire_time(event.scheduled_run_time, utcnow()))

        sched.add_listener(on_start, EVENT_SCHEDULER_STARTED)
        sched.add_listener(on_job, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        stopping = _stop_on_signals(sched)
        log.info("daemon %d started", os.getpid())
        sched.start()
        for stopper in stopping:
            stopper.join()
        log.info("daemon stopped")
