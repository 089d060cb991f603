"""A daemon start posts at once only when the last post is older than the schedule: a crash
loop (systemd restarting a daemon that dies) must not flood the account. Real daemons on a
real database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from bot.config import load_settings
from bot.db import open_database
from bot.models import Post, utcnow

REPO = Path(__file__).resolve().parents[2]


def _daemon_until(tmp_path: Path, log: Path, done) -> None:
    """Start `python -m bot run`, wait until done(log text), then SIGTERM it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = log.read_text() if log.exists() else ""
    with log.open("a") as err:
        p = subprocess.Popen([sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 90
        while not done(log.read_text()[len(start):]):
            assert p.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()


def _posts(tmp_path: Path) -> int:
    return len(list((tmp_path / "data" / "outbox").glob("post-*.json")))


def test_restarts_post_at_start_only_when_the_last_post_is_old(write_config, tmp_path):
    cfg = write_config(schedule={"interval_minutes": 60, "post_at_start": True})
    log = tmp_path / "daemon.log"

    _daemon_until(tmp_path, log, lambda text: "posted post 1 to outbox" in text)
    assert "no post yet: posting at start" in log.read_text()

    # Restarted (as by systemd after a crash) minutes later: no second post.
    _daemon_until(tmp_path, log, lambda text: "next post due at" in text)
    assert _posts(tmp_path) == 1
    assert "no post at start: the last post, at 20" in log.read_text()
    assert "is more recent than the schedule's interval" in log.read_text()

    # The last post is now older than the interval: the start posts again.
    sessions = open_database(load_settings(cfg).database_url)
    with sessions.begin() as s:
        s.execute(update(Post).values(created_at=utcnow() - timedelta(minutes=61)))
    _daemon_until(tmp_path, log, lambda text: "posted post 2 to outbox" in text)
    assert "is older than the schedule: posting at start" in log.read_text()
    assert _posts(tmp_path) == 2
