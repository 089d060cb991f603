"""The CLI, in-process where that is enough and as real processes where the process matters:
crashes (SIGKILL at a chosen point), the daemon lock, signals."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.cli import main

REPO = Path(__file__).resolve().parents[2]

TWO_CHANNELS = {"outbox": {}, "mirror": {"type": "outbox", "folder": "mirror"}}


def _run_main(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("bot, expected", [
    ({"schedule": {"cron": "0 9 * * 0", "interval_minutes": None}}, "write weekdays as names"),
    ({"colour": "blue"}, "bot.colour: unknown key"),
    ({"default_checkpoint": "missing.pt"}, "the default"),
])
def test_errors_are_one_line_with_status_2(write_config, capsys, restore_logging, bot,
                                           expected):
    cfg = write_config(**bot)
    rc, out, err = _run_main(capsys, "--config", str(cfg), "post")
    assert rc == 2 and out == ""
    *_logged, last = err.splitlines()  # a log line may come first (database created)
    assert last.startswith("error: ") and expected in last
    assert "Traceback" not in err and err.count("error:") == 1


def test_publishing_a_corrupt_file_is_a_clear_error(write_config, capsys, restore_logging,
                                                    tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    rc, _, err = _run_main(capsys, "--config", str(write_config()), "publish", str(bad))
    last = err.splitlines()[-1]
    assert rc == 2 and last == f"error: {bad}: not a checkpoint file (not a zip/pickle; " \
        "it looks like text)"
    rc, _, err = _run_main(capsys, "--config", str(write_config()), "publish", str(tmp_path))
    assert rc == 2 and err.splitlines()[-1] == f"error: {tmp_path}: a folder, not a checkpoint file"


def test_invalid_yaml_in_a_real_process(run_bot, tmp_path):
    (tmp_path / "config.yaml").write_text("bot:\n  schedule: {cron: [\n")
    result = run_bot("status")
    assert result.returncode == 2
    assert result.stderr.startswith("error: config.yaml: invalid YAML at line")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_help_does_not_import_heavy_modules():
    code = ("import sys, contextlib, io\n"
            "from bot.cli import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['--help'])\n"
            "print(sorted(m for m in sys.modules if m in ('torch', 'sqlalchemy', 'apscheduler') "
            "or m.startswith('gan.') and m not in "
            # Light: the UserError base, the version, the command-line grammar (yaml, pydantic).
            "('gan.errors', 'gan.version', 'gan.configfile')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_commands_show_posts_checkpoints_status(write_config, capsys, restore_logging):
    cfg = str(write_config())
    rc, out, _ = _run_main(capsys, "--config", cfg, "post")
    assert rc == 0 and "post 1 → outbox: posted file://" in out
    rc, out, _ = _run_main(capsys, "--config", cfg, "history")
    assert rc == 0 and "tiny.pt" in out and "outbox:posted" in out
    rc, out, _ = _run_main(capsys, "--config", cfg, "checkpoints")
    assert rc == 0 and out.splitlines()[1].startswith("*") and "forcecore" in out
    rc, out, _ = _run_main(capsys, "--config", cfg, "status")
    assert "active checkpoint: #1 tiny.pt" in out and "daemon: not running" in out
    assert "1 posted, 0 pending, 0 failed" in out
    rc, out, _ = _run_main(capsys, "--config", cfg, "regenerate", "1")
    assert rc == 0 and "post 1: identical image" in out
    rc, out, _ = _run_main(capsys, "--config", cfg, "post", "--dry-run")
    assert rc == 0 and "Face #2" in out and "would go to: outbox" in out


def _db(tmp_path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(tmp_path / "data" / "bot.db") as conn:
        return conn.execute(sql).fetchall()


def _entries(folder: Path, stem: str) -> int:
    index = folder / "index.html"
    return index.read_text().count(f'id="{stem}"') if index.exists() else 0


def test_killed_post_then_restart_delivers_each_channel_once(write_config, run_bot, tmp_path):
    write_config(channels=TWO_CHANNELS)  # outbox first, then mirror
    outbox, mirror = tmp_path / "data" / "outbox", tmp_path / "mirror"
    deliveries = "SELECT post_id, channel, state, attempts FROM deliveries ORDER BY id"

    # Killed right after the posts row and its pending deliveries were committed.
    killed = run_bot("post", env={"BOT_CRASH_AT": "after_post_row"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _db(tmp_path, deliveries) == [(1, "outbox", "pending", 0), (1, "mirror", "pending", 0)]
    assert not outbox.exists() and not mirror.exists()

    # The restart finishes post 1 first, and is killed after its first delivery is recorded.
    killed = run_bot("post", env={"BOT_CRASH_AT": "after_delivery"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _db(tmp_path, deliveries) == [(1, "outbox", "posted", 1), (1, "mirror", "pending", 0)]
    before = (outbox / "post-000001.json").stat()

    restarted = run_bot("post")
    assert restarted.returncode == 0, restarted.stderr
    assert _db(tmp_path, deliveries) == [
        (1, "outbox", "posted", 1), (1, "mirror", "posted", 1),
        (2, "outbox", "posted", 1), (2, "mirror", "posted", 1)]
    after = (outbox / "post-000001.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # untouched
    for folder in (outbox, mirror):
        assert _entries(folder, "post-000001") == 1 and _entries(folder, "post-000002") == 1
        assert len(list(folder.glob("post-*.png"))) == 2


def _wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_daemon_posts_on_schedule_holds_the_lock_and_stops_on_sigterm(write_config, run_bot,
                                                                      tmp_path):
    write_config(schedule={"interval_minutes": 0.03, "post_at_start": True})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = tmp_path / "daemon.log"

    def start(*overrides: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "bot", "run", *overrides], cwd=tmp_path,
                                env=env, stdout=subprocess.DEVNULL, stderr=log.open("a"))

    first = start()
    try:
        outbox = tmp_path / "data" / "outbox"
        _wait_for(lambda: len(list(outbox.glob("post-*.json"))) >= 2, what="two posts")
        second = run_bot("run", timeout=60)
        assert second.returncode == 2
        assert second.stderr.startswith("error: another daemon is already running")
        assert f"pid {first.pid}" in second.stderr and second.stderr.count("\n") == 1
        status = run_bot("status")
        assert f"daemon: running, pid {first.pid}, next post due 20" in status.stdout
    finally:
        first.kill()  # SIGKILL: no clean-up of any kind
        first.wait(30)
    text = log.read_text()
    assert "posted post 1 to outbox: file://" in text
    assert "next post due at" in text

    # The dead daemon's lock went with it. No post at start: this one only has to start and stop.
    third = start("bot.schedule.post_at_start=false")
    try:
        _wait_for(lambda: f"daemon {third.pid} started" in log.read_text(), what="restart")
        third.send_signal(signal.SIGTERM)
        assert third.wait(60) == 0
    finally:
        if third.poll() is None:
            third.kill()
    text = log.read_text()
    assert "SIGTERM: finishing any post in progress, then stopping" in text
    assert text.rstrip().endswith("daemon stopped")
    assert "Traceback" not in text
