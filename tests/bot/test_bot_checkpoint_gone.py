"""The active checkpoint's file goes missing or changes: `status` says so, the daemon tries
again at the next poll (not the next slot, hours away), and bot.fallback_to_default publishes
the shipped default so the account goes on posting."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot import posting, store
from bot.checkpoints import CheckpointUnavailable, publish, usable_checkpoint
from bot.cli import main
from bot.config import load_settings
from gan.testing import make_tiny_checkpoint
from helpers import bot_parts, daemon


@pytest.fixture
def mine(tmp_path: Path) -> Path:
    """A checkpoint of our own (not the default), ours to delete or change."""
    return make_tiny_checkpoint(tmp_path / "mine.pt", seed=3)


def _published(settings, path: Path):
    settings, sessions, channels = bot_parts(settings)
    publish(sessions, path)
    return sessions, channels


def test_status_reports_a_missing_or_changed_checkpoint(write_config, mine, capsys,
                                                        restore_logging):
    cfg = write_config(fallback_to_default=False)
    _published(load_settings(cfg), mine)
    assert main(["--config", str(cfg), "status"]) == 0
    assert "PROBLEM" not in capsys.readouterr().out

    make_tiny_checkpoint(mine, seed=9)  # other weights under the same name
    main(["--config", str(cfg), "status"])
    out = capsys.readouterr().out
    assert f"CHECKPOINT PROBLEM: checkpoint #2 ({mine}) changed since it was published" in out
    assert "no posts until it is fixed (the daemon tries every 60 s)" in out

    mine.unlink()
    main(["--config", str(cfg), "status", "bot.fallback_to_default=true"])
    out = capsys.readouterr().out
    assert f"CHECKPOINT PROBLEM: checkpoint #2 is missing: {mine}" in out
    assert "the next post publishes the default" in out


def test_fallback_publishes_the_default_and_posts(write_config, mine, tiny_checkpoint,
                                                  caplog):
    settings = load_settings(write_config())
    assert settings.fallback_to_default is True  # on unless switched off
    sessions, channels = _published(settings, mine)
    mine.unlink()
    with caplog.at_level(logging.ERROR, logger="bot.checkpoints"):
        row = usable_checkpoint(sessions, settings)
    assert Path(row.path) == tiny_checkpoint.resolve() and row.active
    assert "is missing" in caplog.text and "FALLING BACK to the shipped default" in caplog.text
    post_id = posting.post_once(sessions, settings, channels)
    with sessions() as s:
        assert Path(store.post(s, post_id).checkpoint.path) == tiny_checkpoint.resolve()


def test_without_fallback_it_is_refused(write_config, mine):
    settings = load_settings(write_config(fallback_to_default=False))
    sessions, _ = _published(settings, mine)
    mine.unlink()
    with pytest.raises(CheckpointUnavailable, match="is missing"):
        usable_checkpoint(sessions, settings)


def test_the_daemon_tries_again_at_the_next_poll(write_config, mine, tmp_path):
    cfg = write_config(fallback_to_default=False, retry={"poll_s": 0.5},
                       schedule={"interval_minutes": 600, "post_at_start": True})
    _published(load_settings(cfg), mine)
    aside = mine.rename(tmp_path / "aside.pt")
    with daemon(tmp_path, tmp_path / "daemon.log") as d:
        d.wait_for("trying again in 0.5 s (retry.poll_s)")
        assert "checkpoint #2 is missing" in d.text()
        aside.rename(mine)  # put back: the next poll posts, not the slot ten hours away
        d.wait_for("posted post 1 to outbox")
    assert "Traceback" not in d.text()
