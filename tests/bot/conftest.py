"""Fixtures for the bot: a tiny real checkpoint, a config file, a migrated SQLite database."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gan.testing import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture
def write_config(tmp_path: Path, tiny_checkpoint: Path):
    """write_config(**bot_section) -> path of a config.yaml in tmp_path (paths relative to it)."""
    def write(**bot) -> Path:
        # Uncurated unless a test says otherwise: the tiny checkpoint has no critic of its
        # own, and the default one would be looked for beside this config file.
        section = {"default_checkpoint": str(tiny_checkpoint), "data_dir": "data",
                   "database_url": "sqlite:///data/bot.db",
                   "schedule": {"post_at_start": True}, "curate": {"critic": None}, **bot}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({"bot": section}, sort_keys=False))
        return path
    return write


@pytest.fixture
def mastodon_server(monkeypatch):
    """A fake Mastodon server (fake_mastodon.py) whose token is in $MASTODON_ACCESS_TOKEN, with
    the channel polling media processing every 10 ms."""
    from bot.channels.mastodon import MastodonChannel
    from fake_mastodon import FakeMastodon
    token = "mtok-5d0e7c21b9a4f386"
    monkeypatch.setenv("MASTODON_ACCESS_TOKEN", token)
    monkeypatch.setattr(MastodonChannel, "POLL_FIRST_S", 0.01)
    with FakeMastodon(token=token) as server:
        yield server


@pytest.fixture
def settings(write_config):
    from bot.config import load_settings
    return load_settings(write_config())


@pytest.fixture
def sessions(settings):
    from bot.db import open_database
    return open_database(settings.database_url)


@pytest.fixture
def restore_logging():
    """Undo the CLI's logging setup after a test that runs it in-process."""
    loggers = [logging.getLogger(name) for name in ("", "apscheduler", "alembic")]
    saved = [(lg, lg.handlers[:], lg.level) for lg in loggers]
    yield
    for lg, handlers, level in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)


@pytest.fixture
def run_bot(tmp_path: Path):
    """run_bot(*args, env=None, **popen) -> CompletedProcess of `python -m bot` in tmp_path."""
    def run(*args: str, env: dict | None = None, timeout: float = 120, **kw):
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        return subprocess.run([sys.executable, "-m", "bot", *args], cwd=tmp_path,
                              env=full_env, capture_output=True, text=True, timeout=timeout,
                              **kw)
    return run
