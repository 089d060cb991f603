#!/usr/bin/env python3
"""The bot's memory (the daemon's RSS) and the wall time of one `python -m bot post`.

    python bench/bot_memory.py                          # 100 posts, 1,000 dry-run draws, 3 posts
    python bench/bot_memory.py --posts 1000             # growth over 1,000 posts
    python bench/bot_memory.py --posts 10 --draws 20 --runs 1   # a quick look
    python bench/bot_memory.py --faces none             # without the memorisation guard
    python bench/bot_memory.py --candidates 1           # uncurated posts (bot.curate)

Everything runs in a temporary data folder with the outbox channel and the shipped checkpoint
(checkpoints/default.pt); the memorisation guard indexes --faces (default: the shared anime
faces beside the repository, when they are there) on the daemon's first start, as a real first
start does.

Daemon table: a fresh interpreter does what `python -m bot run` does at start (database,
active checkpoint, channels, the guard's index), then what its post job does, and reports its
RSS (VmRSS) and peak (VmHWM) after start, after --posts posts and after --draws dry-run draws.

Post table: `python -m bot post` run --runs times as a command (the daemon's posts before it
published the checkpoint and left images drawn ahead, bot/ahead.py: one post in 9 loads the
checkpoint, the slowest row shows it), its wall and CPU time from the shell, and where the time
goes, measured in a copy of the command that wraps the bot's own functions with timers: import
(interpreter start and the CLI's imports), database (open and migrate), checkpoint (find, hash,
load, build the generator), guard (the memorisation index), render (draw the candidates and
score them with the critic: bot.curate, --candidates; PNG), delivery, other
(the rest: hashes, the post's records). Imports done lazily inside a step count towards that step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()  # a child's `import` step starts here

REPO = Path(__file__).resolve().parents[1]
SHARED_FACES = REPO.parent / "shared" / "data" / "animefaces"


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process (this one by default) in MB."""
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                vals[key] = int(rest.split()[0]) / 1024
    return vals["VmRSS"], vals["VmHWM"]


def write_config(folder: Path, faces: Path | None, candidates: int) -> Path:
    import yaml
    cfg = folder / "config.yaml"
    bot = {"data_dir": "data", "database_url": "sqlite:///data/bot.db",
           "default_checkpoint": str(REPO / "checkpoints" / "default.pt"),
           "channels": {"outbox": {}}, "max_posts_per_day": None,  # hundreds of posts
           "memorisation": {"faces": str(faces) if faces else None, "index": None},
           "curate": {"candidates": candidates,
                      "critic": str(REPO / "checkpoints" / "critic.npz")}}
    cfg.write_text(yaml.safe_dump({"bot": bot}, sort_keys=False))
    return cfg


# --- the child processes -----------------------------------------------------------------

def child_daemon(cfg: Path, posts: int, draws: int) -> None:
    def report(phase: str, start: float) -> None:
        rss, peak = rss_mb()
        render = sys.modules.get("bot.render")
        w = render.worker() if render else None
        alive = w is not None and w.proc is not None and w.proc.poll() is None
        print(json.dumps({"phase": phase, "rss": rss, "peak": peak,
                          "worker": rss_mb(w.proc.pid)[0] if alive else None,
                          "s": time.perf_counter() - start}), flush=True)

    t = time.perf_counter()
    import bot.scheduler  # noqa: F401  (what `run` imports)
    from bot import guard, posting
    from bot.channels import build_channels
    from bot.checkpoints import ensure_active
    from bot.cli import setup_logging
    from bot.config import load_settings
    from bot.db import open_database
    setup_logging(False)
    settings = load_settings(cfg)
    in_worker = getattr(bot.scheduler, "in_worker", None)  # the daemon's render worker
    worker = in_worker() if in_worker is not None else None
    if worker is not None:
        worker.__enter__()  # kept (and so open) until this function returns
    sessions = open_database(settings.database_url)
    ensure_active(sessions, settings)
    channels = build_channels(settings.channels, settings.data_dir)
    guard.log_guard(settings.memorisation, settings.data_dir)
    report("start", t)
    import logging
    logging.getLogger().setLevel(logging.WARNING)  # a thousand "posted" lines say nothing
    t = time.perf_counter()
    for _ in range(posts):
        posting.post_once(sessions, settings, channels)
    report(f"after {posts} posts", t)
    t = time.perf_counter()
    for _ in range(draws):
        posting.dry_run(sessions, settings, list(channels))
    report(f"after {draws} dry-run draws", t)


# (module, function, step): the bot's functions a `post` spends its time in.
STEPS = [("bot.db", "open_database", "database"),
         ("bot.checkpoints", "ensure_active", "checkpoint"),
         ("bot.posting", "load_published", "checkpoint"),
         ("bot.checkpoints", "usable_checkpoint", "checkpoint"),
         ("bot.posting", "load_guard", "guard"),
         ("bot.posting", "render_candidates", "render"),
         ("bot.posting", "png_bytes", "render"),
         ("bot.posting", "_deliver_due", "delivery")]


def child_post(cfg: Path) -> None:
    import importlib
    import bot.cli
    spent: dict[str, float] = {"import": time.perf_counter() - T0}
    depth = [0]

    def timed(fn, step):
        def wrapper(*a, **k):
            depth[0] += 1
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:  # a step's inner steps are its own time
                    spent[step] = spent.get(step, 0.0) + time.perf_counter() - t
        return wrapper

    def patch():
        for mod, name, step in STEPS:
            m = importlib.import_module(mod)
            if hasattr(m, name):
                setattr(m, name, timed(getattr(m, name), step))

    t = time.perf_counter()
    patch()  # imports bot.posting etc. as the command would on its way
    spent["import"] += time.perf_counter() - t
    rc = bot.cli.main(["--config", str(cfg), "post"])
    spent["total"] = time.perf_counter() - T0
    spent["peak"] = rss_mb()[1]
    print(json.dumps({"rc": rc, **spent}), flush=True)


# --- the parent ----------------------------------------------------------------------------

def run_child(*args: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True,
                         text=True)
    if out.returncode:
        sys.exit(f"child {args[:2]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]


def table(headers: list[str], rows: list[list[str]]) -> str:
    cells = [headers] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths))) for r in cells)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--posts", type=int, default=100)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3, help="`python -m bot post` runs to time")
    p.add_argument("--faces", default=None,
                   help="training faces for the guard ('none': guard off; default: "
                        f"{SHARED_FACES} if present)")
    p.add_argument("--candidates", type=int, default=8,
                   help="bot.curate.candidates (1: uncurated; default 8, the bot's)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        if a.child[0] == "daemon":
            child_daemon(Path(a.child[1]), int(a.child[2]), int(a.child[3]))
        else:
            child_post(Path(a.child[1]))
        return

    faces = (None if a.faces == "none" else Path(a.faces) if a.faces else
             SHARED_FACES if SHARED_FACES.is_dir() else None)
    with tempfile.TemporaryDirectory(prefix="bot-memory-") as tmp:
        cfg = write_config(Path(tmp), faces, a.candidates)
        print(f"guard: {'index of ' + str(faces) if faces else 'off'}; curation: "
              f"{f'best of {a.candidates}' if a.candidates > 1 else 'off'}; "
              f"CPUs: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}\n")
        rows = run_child("--child", "daemon", str(cfg), str(a.posts), str(a.draws))
        base = rows[0]["rss"]
        print(table(["daemon", "RSS MB", "growth MB", "peak MB", "render worker MB", "seconds"],
                    [[r["phase"], f"{r['rss']:.0f}", f"{r['rss'] - base:+.0f}",
                      f"{r['peak']:.0f}", f"{r['worker']:.0f}" if r.get("worker") else "-",
                      f"{r['s']:.1f}"] for r in rows]))

        walls, cpus, splits = [], [], []
        for _ in range(a.runs):
            t, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            out = subprocess.run([sys.executable, "-m", "bot", "--config", str(cfg), "post"],
                                 cwd=REPO, capture_output=True, text=True)
            walls.append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            if out.returncode:
                sys.exit(f"`python -m bot post` failed:\n{out.stderr[-3000:]}")
            t = time.perf_counter()
            split = run_child("--child", "post", str(cfg))[0]
            wall = time.perf_counter() - t
            # The interpreter's own start (before the child's clock) counts as import.
            split["import"] += wall - split["total"]
            split["total"] = wall
            splits.append(split)
        steps = ["import", "database", "checkpoint", "guard", "render", "delivery"]
        rows = []
        for s in splits:
            s["other"] = s["total"] - sum(s.get(k, 0.0) for k in steps)
        for k in steps + ["other", "total"]:
            rows.append([k, f"{statistics.median(s.get(k, 0.0) for s in splits):.2f}"])
        rows.append(["`python -m bot post` wall", f"{statistics.median(walls):.2f}"])
        rows.append(["  slowest of the runs", f"{max(walls):.2f}"])
        # On a busy machine wall time waits for other processes; CPU time is what it costs.
        rows.append(["`python -m bot post` CPU", f"{statistics.median(cpus):.2f}"])
        rows.append(["peak RSS MB", f"{statistics.median(s['peak'] for s in splits):.0f}"])
        print()
        print(table([f"post (median of {a.runs})", "seconds"], rows))


if __name__ == "__main__":
    main()
