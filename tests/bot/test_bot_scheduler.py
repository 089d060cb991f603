"""The schedule without waiting: triggers as pure functions, and a real scheduler started with
its first slot already in the past (as after downtime or a suspend)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, EVENT_SCHEDULER_STARTED

from bot.config import Schedule, load_settings
from bot.models import utcnow
from bot.scheduler import (DELIVER_JOB, POST_JOB, build_scheduler, first_run_time,
                           make_trigger)

SUNDAY_NOON = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def test_cron_with_weekday_names_in_a_time_zone():
    schedule = Schedule(cron="0 9 * * mon,thu", interval_minutes=None, timezone="Europe/Berlin")
    trigger = make_trigger(schedule)
    monday = trigger.get_next_fire_time(None, SUNDAY_NOON)
    assert monday == datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)  # 09:00 CET
    thursday = trigger.get_next_fire_time(monday, monday + timedelta(seconds=1))
    assert thursday == datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc)


def test_first_run_time():
    interval = Schedule(interval_minutes=60, post_at_start=False)
    cron = Schedule(cron="30 * * * *", interval_minutes=None, post_at_start=False)
    now = SUNDAY_NOON
    last = now - timedelta(hours=3, minutes=10)

    def first(schedule: Schedule, last_post_at: datetime | None) -> datetime | None:
        return first_run_time(schedule, make_trigger(schedule), last_post_at, now)[0]

    assert first(Schedule(post_at_start=True), None) == now
    assert first(interval, None) is None
    assert first(interval, last) == last + timedelta(hours=1)
    assert first(cron, last) == datetime(2026, 11, 29, 9, 30, tzinfo=timezone.utc)
    # Posting at start only when the last post is older than the schedule.
    at_start = interval.model_copy(update={"post_at_start": True})
    assert first(at_start, last) == now
    recent = now - timedelta(minutes=20)
    when, why = first_run_time(at_start, make_trigger(at_start), recent, now)
    assert when == recent + timedelta(hours=1) and why.startswith("no post at start")
    cron_at_start = cron.model_copy(update={"post_at_start": True})
    assert first(cron_at_start, last) == now  # the 09:30 slot was missed
    assert first(cron_at_start, now - timedelta(minutes=1)) == datetime(
        2026, 11, 29, 12, 30, tzinfo=timezone.utc)


@contextmanager
def running(sched, paused: bool = False):
    """The BlockingScheduler in a thread, shut down on leaving."""
    thread = threading.Thread(target=sched.start, kwargs={"paused": paused})
    thread.start()
    try:
        yield
    finally:
        sched.shutdown(wait=True)
        thread.join(10)


def _scheduler(write_config, grace_s: int, first_run: datetime):
    settings = load_settings(write_config(schedule={"interval_minutes": 60,
                                                    "misfire_grace_s": grace_s}))
    runs: list[datetime] = []
    sched = build_scheduler(settings, make_trigger(settings.schedule),
                            lambda: runs.append(utcnow()), lambda: None, first_run)
    return sched, runs


def test_jobs_are_configured_for_catch_up(write_config):
    sched, _ = _scheduler(write_config, 1234, None)
    started = threading.Event()
    sched.add_listener(lambda e: started.set(), EVENT_SCHEDULER_STARTED)
    with running(sched, paused=True):
        assert started.wait(10)
        jobs = {job.id: job for job in sched.get_jobs()}
    assert set(jobs) == {"post", "deliver"}
    post = jobs[POST_JOB]
    assert post.coalesce is True and post.max_instances == 1
    assert post.misfire_grace_time == 1234
    assert jobs[DELIVER_JOB].next_run_time <= utcnow()  # reconciles at once on start


def test_missed_slots_coalesce_into_one_post(write_config):
    now = utcnow()
    # Three hours and a minute late, all within the grace time: four slots were missed, the
    # last a minute ago. Without coalesce all four would run.
    sched, runs = _scheduler(write_config, 5 * 3600, now - timedelta(hours=3, minutes=1))
    done = threading.Event()
    sched.add_listener(lambda e: e.job_id == POST_JOB and done.set(), EVENT_JOB_EXECUTED)
    with running(sched):
        assert done.wait(10)
        time.sleep(0.2)  # room for a wrong second run
        next_run = sched.get_job(POST_JOB).next_run_time
    assert len(runs) == 1
    assert now + timedelta(minutes=58) < next_run < now + timedelta(minutes=60)


def test_a_slot_older_than_the_grace_time_is_skipped(write_config):
    now = utcnow()
    sched, runs = _scheduler(write_config, 60, now - timedelta(minutes=10))
    missed = threading.Event()
    sched.add_listener(lambda e: missed.set(), EVENT_JOB_MISSED)
    with running(sched):
        assert missed.wait(10)
        next_run = sched.get_job(POST_JOB).next_run_time
    assert runs == []
    assert next_run == now + timedelta(minutes=50)
