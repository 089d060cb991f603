"""A daemon start posts at once only when the last post is older than the schedule: a crash
loop (systemd restarting a daemon that dies) must not flood the account. Real daemons on a
real database."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from bot.config import load_settings
from bot.db import open_database
from bot.models import Post, utcnow
from helpers import daemon


def _posts(tmp_path: Path) -> int:
    return len(list((tmp_path / "data" / "outbox").glob("post-*.json")))


def test_restarts_post_at_start_only_when_the_last_post_is_old(write_config, tmp_path):
    cfg = write_config(schedule={"interval_minutes": 60, "post_at_start": True})
    log = tmp_path / "daemon.log"

    with daemon(tmp_path, log) as d:
        d.wait_for("posted post 1 to outbox")
    assert "no post yet: posting at start" in d.text()

    # Restarted (as by systemd after a crash) minutes later: no second post.
    with daemon(tmp_path, log) as d:
        d.wait_for("next post due at")
    assert _posts(tmp_path) == 1
    assert "no post at start: the last post, at 20" in d.text()
    assert "is more recent than the schedule's interval" in d.text()

    # The last post is now older than the interval: the start posts again.
    sessions = open_database(load_settings(cfg).database_url)
    with sessions.begin() as s:
        s.execute(update(Post).values(created_at=utcnow() - timedelta(minutes=61)))
    with daemon(tmp_path, log) as d:
        d.wait_for("posted post 2 to outbox")
    assert "is older than the schedule: posting at start" in d.text()
    assert _posts(tmp_path) == 2
