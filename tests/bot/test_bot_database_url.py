"""bot.database_url mistakes are one line naming the setting; PostgreSQL for real, on a
throw-away local server from the distribution's packages (skipped with the reason when the
server or the driver is not installed); a closed stdout pipe is a quiet exit."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bot import posting, store
from bot.cli import main
from bot.config import load_settings
from helpers import Seeds, bot_parts

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("url, expected", [
    ("notadb://x", "unknown database kind 'notadb'"),
    ("sqlite:////proc/nope/bot.db", "cannot create the folder /proc/nope for the SQLite file"),
    ("sqlite:////proc/bot.db", "cannot open the database sqlite:////proc/bot.db"),
])
def test_a_bad_database_url_is_one_line(write_config, capsys, restore_logging, url, expected):
    rc = main(["--config", str(write_config()), "status", f"bot.database_url={url}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: bot.database_url: ") and expected in err


def test_postgresql_without_its_driver_says_what_to_install(write_config, capsys,
                                                            restore_logging, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    rc = main(["--config", str(write_config()), "status",
               "bot.database_url=postgresql+psycopg://bot@localhost/bot"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "bot.database_url: the database driver 'psycopg' is not installed: " \
           "pip install -e '.[postgres]'" in err


def test_a_closed_stdout_pipe_is_a_quiet_exit(write_config, tmp_path):
    write_config()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for command in (["status"], ["history"], ["--help"]):
        p = subprocess.Popen([sys.executable, "-m", "bot", *command], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.close()  # `| head -0`: the reader is gone before the first line
        err = p.stderr.read().decode()
        p.wait(60)
        assert "Traceback" not in err and "BrokenPipeError" not in err, err
        assert "Exception ignored" not in err, err


def _server_binaries() -> tuple[str, str] | None:
    found = [shutil.which("initdb"), shutil.which("pg_ctl")]
    if None in found:  # Debian keeps them out of PATH
        found = [next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                  reverse=True)), None) for name in ("initdb", "pg_ctl")]
    return None if None in found else (found[0], found[1])


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of its own in a temporary folder (Unix socket only, trust login),
    stopped and removed afterwards; its SQLAlchemy URL."""
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed "
                        "(pip install -e '.[postgres]')")
    binaries = _server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): install the "
                    "distribution's postgresql package to run this test")
    initdb, pg_ctl = binaries
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres account
        if shutil.which("runuser") is None or subprocess.run(
                ["id", "postgres"], capture_output=True).returncode != 0:
            pytest.skip("running as root without a postgres account for the server")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="waifu-pg-"))
    base.chmod(0o777)  # the server's account writes here
    data = base / "data"
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", "bot", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(base / "log"), "-w",
                        "-o", f"-k {base} -c listen_addresses='' -F", "start"],
                       check=True, capture_output=True, timeout=60)
        yield f"postgresql+psycopg://bot@/postgres?host={base}"
    finally:
        if data.is_dir():
            subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True)
        time.sleep(0.2)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_postgresql_migrations_and_posts(postgres_url, write_config):
    settings, sessions, channels = bot_parts(load_settings(write_config(
        database_url=postgres_url)))
    first = posting.post_once(sessions, settings, channels, rng=Seeds(5))
    second = posting.post_once(sessions, settings, channels, rng=Seeds(5, 6))  # 5 is used
    with sessions() as s:
        posts = store.recent_posts(s, 10)
        assert [(p.id, p.seed) for p in posts] == [(second, 6), (first, 5)]
        assert [d.state for p in posts for d in p.deliveries] == ["posted", "posted"]
        assert store.active_checkpoint(s).path == str(settings.default_checkpoint.resolve())
    assert (settings.data_dir / "outbox" / f"post-{second:06d}.png").is_file()
