#!/usr/bin/env python3
"""Soak: N posts through the real bot against the fake Mastodon server (tests/bot/
fake_mastodon.py, on 127.0.0.1) with random faults and random `kill -9`s of the posting
process, then the database compared with what the server holds.

    python bench/soak.py                     # 60 posts, a few minutes on 2 cores
    python bench/soak.py --posts 200 --kill-every 3 --seed 7

The posting process (this file with --worker) calls what the daemon calls, `post_once` and
`deliver_pending`, never `retry`, and is killed with SIGKILL at random moments. Every request
draws a fault (503, a status stored then a 500, a dropped connection, an answer past the
client's timeout, a 429 window) and uploads take a few polls to process. Once N posts are
recorded the faults and kills stop, and the last process must finish everything on its own.

Rows (targets from issue 10): lost (a post with no status), duplicated (statuses beyond one
per post), stuck (deliveries not posted at the end), wrong id (the database records another
status than the server holds), uploads per status (<= 1.1), requests into a 429 window the
server had already announced (0).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "bot")]

TOKEN = "soak-token-3f9a0c7d"


def worker(config: Path, posts: int) -> int:
    """Post until `posts` posts exist and nothing is pending (what the daemon's jobs do)."""
    from bot import posting, store
    from bot.channels import build_channels
    from bot.channels.mastodon import MastodonChannel
    from bot.config import load_settings
    from bot.db import open_database
    from bot.models import DeliveryState

    MastodonChannel.POLL_FIRST_S = 0.05  # the fake processes in polls, not seconds
    settings = load_settings(config)
    sessions = open_database(settings.database_url)
    channels = build_channels(settings.channels, settings.data_dir)
    # Load the checkpoint and render once before saying "ready" (seconds, the first time):
    # kills should land in deliveries, not in start-up.
    with sessions() as s:
        posting.render(posting.load_published(store.active_checkpoint(s)), 0)
    print("ready", flush=True)
    while True:
        with sessions() as s:
            made = store.last_post_id(s) or 0
            pending = store.delivery_counts(s).get(DeliveryState.PENDING, 0)
        if made < posts:
            posting.post_once(sessions, settings, channels)
        elif pending:
            posting.deliver_pending(sessions, settings, channels)
            time.sleep(0.05)
        else:
            return 0


def write_config(folder: Path, url: str) -> Path:
    import yaml
    cfg = folder / "config.yaml"
    cfg.write_text(yaml.safe_dump({"bot": {
        "database_url": "sqlite:///bot.db", "data_dir": "data",
        "default_checkpoint": str(REPO / "checkpoints" / "default.pt"),
        "memorisation": {"index": None, "faces": None},
        "retry": {"base_delay_s": 0.2, "max_delay_s": 2.0},
        "max_posts_per_day": None,  # 120 posts in minutes
        "channels": {"mastodon": {"instance_url": url, "request_timeout_s": 1.0,
                                  "processing_deadline_s": 3.0}}}}))
    return cfg


def compare(settings, server) -> list[tuple[str, str, str]]:
    """(row, value, target) from the database and the server's statuses."""
    from bot import store
    from bot.db import open_database
    from bot.models import DeliveryState
    with open_database(settings.database_url)() as s:
        posts = store.recent_posts(s, 10**6)
    number = re.compile(r"Face #(\d+) ")
    on_server = Counter(int(m.group(1)) for st in server.statuses
                        if (m := number.search(st["content"])))
    ids = {int(m.group(1)): st["id"] for st in server.statuses
           if (m := number.search(st["content"]))}
    deliveries = [d for p in posts for d in p.deliveries]
    lost = sum(1 for p in posts if on_server[p.id] == 0)
    duplicated = sum(n - 1 for n in on_server.values() if n > 1)
    stuck = sum(1 for d in deliveries if d.state != DeliveryState.POSTED)
    wrong = sum(1 for d in deliveries
                if d.state == DeliveryState.POSTED and d.remote_id != ids.get(d.post_id))
    statuses = len(server.statuses)
    # Uploads the server made but whose answer never reached the bot: it cannot reuse those.
    lost_answer = ("commit_then_500", "drop", "slow")
    unanswered = sum(1 for r in server.requests if r.method == "POST"
                     and r.path.endswith("/media") and r.fault in lost_answer)
    return [("posts recorded", str(len(posts)), ""),
            ("statuses on the server", str(statuses), "= posts"),
            ("lost", str(lost), "0"), ("duplicated", str(duplicated), "0"),
            ("stuck (not posted at the end)", str(stuck), "0"),
            ("wrong remote id", str(wrong), "0"),
            ("uploads per status", f"{len(server.media) / max(statuses, 1):.3f}", "<= 1.1"),
            ("  of which answers lost to a fault", f"{unanswered / max(statuses, 1):.3f}", ""),
            ("requests into an announced 429 window", str(server.into_window), "0")]


def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def soak(args: argparse.Namespace) -> int:
    from bot.checkpoints import ensure_active
    from bot.config import load_settings
    from bot.db import open_database
    from bot import store
    from fake_mastodon import Chaos, FakeMastodon

    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="waifu-soak-"))
    env = {**os.environ, "MASTODON_ACCESS_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    deadline = start + args.time_limit
    kills = starts = 0
    log = open(folder / "worker.log", "a")
    with FakeMastodon(token=TOKEN) as server:
        settings = load_settings(write_config(folder, server.url))
        sessions = open_database(settings.database_url)
        ensure_active(sessions, settings)  # once, so the workers never race to publish
        server.chaos = Chaos(rng=random.Random(args.seed + 1))
        drain_start = None
        outcome = "time limit reached"
        while time.monotonic() < deadline:
            proc = subprocess.Popen(
                [sys.executable, __file__, "--worker", str(folder / "config.yaml"),
                 str(args.posts)], cwd=folder, env=env, stdout=subprocess.PIPE,
                stderr=log, text=True)
            starts += 1
            proc.stdout.readline()  # "ready": imports done, the interesting part starts
            try:
                wait = None if server.chaos is None else rng.uniform(0, 2 * args.kill_every)
                proc.wait(timeout=min(wait or 1e9, max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += server.chaos is not None
            if proc.returncode == 0:
                outcome = "finished"
                break
            if proc.returncode != -signal.SIGKILL:
                outcome = f"the worker failed (exit {proc.returncode}, see {folder}/worker.log)"
                break
            with sessions() as s:
                if server.chaos is not None and (store.last_post_id(s) or 0) >= args.posts:
                    server.chaos = None  # the faults end; the bot must heal by itself
                    drain_start = time.monotonic()
        else:
            proc.kill()
        server.settle()
        end = time.monotonic()
        rows = compare(settings, server)
        injected = ", ".join(f"{k} {v}" for k, v in sorted(server.injected.items()))
        rows += [("requests served", str(len(server.requests)), ""),
                 ("faults injected", injected or "none", ""),
                 ("kill -9 of the posting process", str(kills), ""),
                 ("posting processes started", str(starts), ""),
                 ("time after the faults ended (s)",
                  f"{end - drain_start:.1f}" if drain_start else "-", ""),
                 ("wall time (s)", f"{end - start:.0f}", f"<= {args.time_limit:g}"),
                 ("outcome", outcome, "finished")]
    print(table([("", "value", "target")] + rows))
    print(f"(database and logs in {folder})")
    failed = [r for r in rows if r[2] == "0" and r[1] != "0"]
    return 0 if outcome == "finished" and not failed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=60)
    parser.add_argument("--kill-every", type=float, default=3.0,
                        help="mean seconds between kill -9s of the posting process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds, at most")
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "POSTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(Path(args.worker[0]), int(args.worker[1]))
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
