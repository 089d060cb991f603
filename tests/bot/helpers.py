"""Small helpers shared by the bot's tests."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from sqlalchemy import update

from bot import store
from bot.channels import build_channels
from bot.checkpoints import ensure_active
from bot.db import open_database
from bot.models import ChannelState, Delivery, Reply, utcnow

REPO = Path(__file__).resolve().parents[2]


class Seeds(random.Random):
    """An rng that hands out the given seeds in order."""

    def __init__(self, *seeds: int):
        super().__init__()
        self.seeds = list(seeds)

    def randrange(self, *_args):
        return self.seeds.pop(0)


def draw_with(monkeypatch, image_of) -> None:
    """The bot draws `image_of(ck, seed)` for each seed instead of the generator's image
    (and scores nothing: for uncurated posts)."""
    from bot import posting
    monkeypatch.setattr(posting, "render_candidates",
                        lambda ck, seeds, critic: ([image_of(ck, k) for k in seeds], None))


def post_in_a_worker(cfg: Path, seeds: list[int], animated: bool = False) -> list[str]:
    """One post made as the daemon makes it (in a render worker's context), in a new
    interpreter, from the scripted `seeds`; returns whether that interpreter imported torch
    and PyAV: ["False", "False"] when both stayed in the worker."""
    code = (
        "import sys, random\n"
        "from bot import posting\n"
        "from bot.channels import build_channels\n"
        "from bot.config import load_settings\n"
        "from bot.db import open_database\n"
        "from bot.render import in_worker\n"
        f"settings = load_settings({str(cfg)!r})\n"
        "class Seeds(random.Random):\n"
        "    def randrange(self, *a): return seeds.pop(0)\n"
        f"seeds = {list(seeds)!r}\n"
        "with in_worker():\n"
        "    posting.post_once(open_database(settings.database_url), settings,\n"
        "                      build_channels(settings.channels, settings.data_dir),\n"
        f"                      rng=Seeds(), animated={animated!r})\n"
        "print('torch' in sys.modules, 'av' in sys.modules)\n")
    return _python(code).split()


def post_in_a_fresh_process(cfg: Path) -> str:
    """`python -m bot post` with `cfg` in a new interpreter: "<exit code> <torch imported>"."""
    code = ("import sys\n"
            "from bot.cli import main\n"
            f"rc = main(['--config', {str(cfg)!r}, 'post'])\n"
            "print(rc, 'torch' in sys.modules)")
    return _python(code).split("\n")[-2]


def _python(code: str) -> str:
    """What `code` printed, run by a new interpreter in the repository (it must succeed)."""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def started(settings):
    """The database of `settings`, upgraded, with the default checkpoint active."""
    sessions = open_database(settings.database_url)
    ensure_active(sessions, settings)
    return sessions


def bot_parts(settings):
    """(settings, sessions, channels) of a bot started from `settings`."""
    return settings, started(settings), build_channels(settings.channels, settings.data_dir)


def delivery(sessions, post_id: int, channel: str) -> Delivery:
    with sessions() as s:
        return next(d for d in store.post(s, post_id).deliveries if d.channel == channel)


def scheduled_jobs(sched) -> list:
    """The jobs of a (Blocking) scheduler once started (paused), as it really keeps them:
    before start, replaced jobs still wait in a list."""
    import threading
    from apscheduler.events import EVENT_SCHEDULER_STARTED
    started = threading.Event()
    sched.add_listener(lambda e: started.set(), EVENT_SCHEDULER_STARTED)
    thread = threading.Thread(target=sched.start, kwargs={"paused": True})
    thread.start()
    try:
        assert started.wait(10)
        return sched.get_jobs()
    finally:
        sched.shutdown(wait=True)
        thread.join(10)


def make_due(sessions) -> None:
    """Every delivery's and reply's backoff and every channel's rate-limit pause is over: the
    next tick tries them again."""
    past = utcnow() - timedelta(seconds=1)
    with sessions.begin() as s:
        s.execute(update(Delivery).values(next_attempt_at=past))
        s.execute(update(Reply).values(next_attempt_at=past))
        s.execute(update(ChannelState).where(ChannelState.paused_until.is_not(None))
                  .values(paused_until=past))


def is_enlarged(data: bytes, original: Path, scale: int = 8) -> bool:
    """`data` (a delivered PNG) is the stored image `original` enlarged `scale` times,
    nearest-neighbour: every scale-th pixel is the original's."""
    with Image.open(io.BytesIO(data)) as big, Image.open(original) as small:
        return (big.size == (small.width * scale, small.height * scale) and np.array_equal(
            np.asarray(big.convert("RGB"))[::scale, ::scale], np.asarray(small.convert("RGB"))))


class Daemon:
    """`python -m bot run` in `cwd`, its log appended to `log`."""

    def __init__(self, cwd: Path, log: Path, *options: str):
        self.log = log
        self.start = len(log.read_text()) if log.exists() else 0
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with log.open("a") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "bot", *options, "run"],
                                            cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                            stderr=err)

    def text(self) -> str:
        """What this daemon logged."""
        return self.log.read_text()[self.start:]

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text():
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no '{text}' in:\n{self.text()}"
            time.sleep(0.1)


@contextmanager
def daemon(cwd: Path, log: Path, *options: str) -> Iterator[Daemon]:
    """A daemon for the block; stopped with SIGTERM after it, which must end it cleanly."""
    d = Daemon(cwd, log, *options)
    try:
        yield d
        d.process.send_signal(signal.SIGTERM)
        assert d.process.wait(60) == 0, d.text()
    finally:
        if d.process.poll() is None:
            d.process.kill()
            d.process.wait(30)
