"""`python -m bot`: one subcommand per library function.

Heavy modules (SQLAlchemy, APScheduler, torch) are imported inside the commands, so `--help`
answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from bot import BotError
from gan import Override, UserError, find_config, parse_command_line, read_config

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from bot.channels.base import Channel
    from bot.config import Settings

EXAMPLES = """examples:
  python -m bot run                          the daemon: posts on the schedule in config.yaml
  python -m bot post --dry-run               show what the next post would be, post nothing
  python -m bot publish runs/x/export.pt     make a newly trained checkpoint the active one
  python -m bot history -n 5                 the last five posts and where they went
  python -m bot check                        test each enabled channel's credentials
  python -m bot run bot.schedule.interval_minutes=1    any setting, after the command

settings: config.yaml (--config FILE); relative paths in it are relative to its folder.
overrides: key=value words after the command, keys from the top of config.yaml like every
command's (bot.schedule.interval_minutes=1, bot.data_dir=/srv/bot); values are YAML; a
relative path typed here is relative to the working directory.
"""


def _sessions(settings: Settings) -> sessionmaker[Session]:
    from bot.db import open_database
    return open_database(settings.database_url)


def _ready(settings: Settings) -> tuple[sessionmaker[Session], dict[str, Channel]]:
    from bot.channels import build_channels
    from bot.checkpoints import ensure_active
    sessions = _sessions(settings)
    ensure_active(sessions, settings)
    return sessions, build_channels(settings.channels, settings.data_dir)


def _table(headers: Sequence[str], rows: list[Sequence[object]]) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _when(dt: datetime | None) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if dt else "-"


def _seed(text: str) -> int:
    from bot.posting import SEED_SPACE
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed < SEED_SPACE:
        raise argparse.ArgumentTypeError(f"'{text}' is not a seed: a whole number from 0 to "
                                         f"{SEED_SPACE - 1}")
    return seed


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from bot.scheduler import run_daemon
    run_daemon(settings)
    return 0


def cmd_post(settings: Settings, args: argparse.Namespace) -> int:
    from bot import posting, store
    from bot.checkpoints import usable_checkpoint
    from bot.models import DeliveryState
    if args.animated and (args.dry_run or args.seed is not None):
        raise BotError("post --animated draws its own faces and posts at once: no --dry-run "
                       "or --seed with it")
    sessions, channels = _ready(settings)
    usable_checkpoint(sessions, settings)  # falls back to the default, or says what is wrong
    if args.dry_run:
        p = posting.dry_run(sessions, settings, list(channels), seed=args.seed)
        print(f"dry run: nothing recorded, nothing delivered; the next post is this image "
              f"(seed {p.seed} kept)\n"
              f"image:      {p.image_path}\nseed:       {p.seed}\n"
              f"checkpoint: {p.checkpoint}\n"
              + (f"score:      {p.score:.3f} (realism, the best of {p.candidates} candidates)\n"
                 if p.score is not None else "")
              + f"caption:    {p.caption}\n"
              f"alt text:   {p.alt_text}\nwould go to: {', '.join(p.channels) or 'nowhere'}")
        return 0
    post_id = posting.post_once(sessions, settings, channels, seed=args.seed,
                                animated=args.animated)
    with sessions() as s:
        deliveries = store.post(s, post_id).deliveries
        for d in deliveries:
            print(f"post {post_id} → {d.channel}: {d.state}"
                  + (f" {d.remote_url or d.remote_id}" if d.remote_id else "")
                  + (f" ({d.last_error})" if d.last_error else ""))
    return 0 if all(d.state == DeliveryState.POSTED for d in deliveries) else 1


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from bot.checkpoints import publish
    row = publish(_sessions(settings), args.path)
    print(f"checkpoint #{row.id} {Path(row.path).name} ({row.variant}, step {row.step}) "
          "is now active")
    return 0


# metrics.json bookkeeping (counts, settings) left out of the `checkpoints` table.
_NOT_SHOWN = {"samples", "reference_images", "feature_dim", "kid_subsets", "kid_subset_size",
              "pr_k", "pr_images", "seconds", "resolution"}


def _metrics_text(metrics: dict | None) -> str:
    """The headline numbers: 'fhd=4.87 kid_mean=0.00931 precision=0.62 recall=0.31 nn_min=0.47'."""
    if not metrics:
        return "-"
    parts = [f"{k}={v:.3g}" for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _NOT_SHOWN]
    nn = metrics.get("nn_distance")
    if isinstance(nn, dict) and isinstance(nn.get("min"), (int, float)):
        parts.append(f"nn_min={nn['min']:.3g}")
    return " ".join(parts) or "-"


def cmd_checkpoints(settings: Settings, args: argparse.Namespace) -> int:
    from bot import store
    with _sessions(settings)() as s:
        rows = [("*" if c.active else "", c.id, Path(c.path).name, c.variant, c.step,
                 c.images_seen, _metrics_text(c.metrics),
                 _when(c.published_at)) for c in store.checkpoints(s)]
    print(_table(("active", "id", "file", "variant", "step", "images seen", "metrics",
                  "published"), rows) if rows else "no checkpoints published yet")
    return 0


def cmd_history(settings: Settings, args: argparse.Namespace) -> int:
    from bot import store
    if args.n < 1:
        raise BotError(f"history -n {args.n}: show at least one post (-n 1 or more)")
    with _sessions(settings)() as s:
        rows = [(p.id, _when(p.created_at), Path(p.checkpoint.path).name,
                 "→".join(map(str, p.seeds)) if p.seeds else p.seed,
                 (f"{p.score:.3f} (best of {len(p.candidates or ())})" if p.score is not None
                  else "-"),
                 " ".join(f"{d.channel}:{d.state}" for d in p.deliveries) or "-")
                for p in store.recent_posts(s, args.n)]
    print(_table(("post", "time", "checkpoint", "seed", "score", "deliveries"), rows)
          if rows else "no posts yet")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from bot import locks, store
    from bot.checkpoints import problem
    from bot.models import DeliveryState
    from bot.curate import describe_curation
    from bot.guard import describe_guard
    with _sessions(settings)() as s:
        ck = store.active_checkpoint(s)
        counts = store.delivery_counts(s)
        reply_counts = store.reply_counts(s)
        err = store.last_error(s)
        last = store.last_post_time(s)
        paused = store.paused_channels(s, datetime.now(timezone.utc))
        failing = store.failing_channels(s)
    daemon = locks.holder_info(locks.lock_path(settings, "daemon"))
    due = daemon and daemon.get("next_post_at")
    print("active checkpoint: " + (f"#{ck.id} {Path(ck.path).name} ({ck.variant}, step "
                                   f"{ck.step}, {ck.images_seen} images seen)" if ck else
                                   "none (the default is published on first run or post)"))
    why = ck and problem(ck)
    if why:
        print(f"CHECKPOINT PROBLEM: {why}; " + (
            f"the next post publishes the default {settings.default_checkpoint} instead "
            "(bot.fallback_to_default)" if settings.fallback_to_default else
            f"no posts until it is fixed (the daemon tries every {settings.retry.poll_s:g} s)"))
    print("daemon: " + (f"running, pid {daemon.get('pid', '?')}, next post due "
                        f"{_when(datetime.fromisoformat(due)) if due else 'unknown'}"
                        if daemon is not None else "not running"))
    print(f"last post: {_when(last)}")
    print("memorisation guard: " + describe_guard(settings.memorisation, settings.data_dir))
    print("curation: " + describe_curation(settings.curate))
    print("deliveries: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in (
        DeliveryState.POSTED, DeliveryState.PENDING, DeliveryState.FAILED)))
    if settings.replies.enabled or reply_counts:
        print(f"replies to mentions: {'on' if settings.replies.enabled else 'off'}, " + ", ".join(
            f"{reply_counts.get(k, 0)} {k}" for k in (
                DeliveryState.POSTED, DeliveryState.PENDING, DeliveryState.FAILED)))
    for c in paused:
        print(f"channel {c.channel}: paused until {_when(c.paused_until)} ({c.pause_reason})")
    for c in failing:
        print(f"channel {c.channel}: failing since {_when(c.failing_since)}, retried by itself")
    if err is not None:
        print(f"last error: post {err.post_id} → {err.channel} ({err.state}, "
              f"{_when(err.updated_at)}): {err.last_error}")
    return 0


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from bot.channels import channel_class
    from bot.channels.base import DeliveryError
    from bot.secret import redact
    enabled = {name: cs for name, cs in settings.channels.items() if cs.enabled}
    if not enabled:
        raise BotError("no channel is enabled: enable one under bot.channels")
    failed = 0
    for name, cs in enabled.items():  # every channel, so one run shows everything to fix
        try:
            channel = channel_class(cs.type)(name, cs, settings.data_dir)
            print(f"{name}: {channel.check()}")
            if settings.replies.enabled and name == settings.replies.channel:
                print(f"{name}: {channel.check_replies()}")
            for advice in channel.etiquette(fix=args.fix):  # a warning, not a failure
                if advice.fixed:
                    print(f"{name}: fixed: {advice.text}")
                else:
                    print(f"warning: {name}: {advice.text}", file=sys.stderr)
        except (BotError, DeliveryError) as e:
            failed += 1
            print(f"error: {name}: {redact(' '.join(str(e).split()))}", file=sys.stderr)
    return 2 if failed else 0


def cmd_retry(settings: Settings, args: argparse.Namespace) -> int:
    from bot.posting import retry_failed
    sessions, channels = _ready(settings)
    results = {"deliveries": retry_failed(sessions, settings, channels)}
    if settings.replies.enabled:
        from bot import replies  # Mastodon.py: only when replies are on
        results["replies"] = replies.retry_failed(sessions, settings,
                                                  channels[settings.replies.channel])
    if not any(tried for tried, _ in results.values()):
        print("no failed deliveries to try again")
        return 0
    for what, (tried, posted) in results.items():
        if tried:
            print(f"{tried} failed {what} tried again: {posted} posted, {tried - posted} not "
                  "(pending a retry or failed again); see `status` or `history`")
    return 0 if all(posted == tried for tried, posted in results.values()) else 1


def cmd_regenerate(settings: Settings, args: argparse.Namespace) -> int:
    from bot.posting import regenerate
    out, same = regenerate(_sessions(settings), settings, args.post_id, args.out)
    print(f"post {args.post_id}: {'identical' if same else 'DIFFERENT'} image written to {out}")
    return 0 if same else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot", description="Post GAN faces on a schedule; every post recorded.",
        usage="%(prog)s [-h] [--config FILE] [-v] COMMAND [options] [key=value ...]",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="YAML file with a bot: section (default: ./config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="deprecated: the same as bot.KEY=VALUE after the command")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, summary: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=summary,
                           epilog=f"example: {example}")
        p.set_defaults(func=func)
        return p

    add("run", cmd_run, "run the daemon: post on the schedule until SIGTERM or Ctrl-C",
        "python -m bot run")
    p = add("post", cmd_post, "post once now (after finishing any pending deliveries)",
            "python -m bot post --dry-run")
    p.add_argument("--dry-run", action="store_true",
                   help="generate and show the post, record and send nothing; the next post "
                   "(by hand or by the daemon) uses the same seed")
    p.add_argument("--seed", type=_seed, default=None,
                   help="post exactly this seed (refused if it was posted before)")
    p.add_argument("--animated", action="store_true",
                   help="an animated post: a looping walk between fresh faces (bot.animation)")
    add("publish", cmd_publish, "validate a checkpoint and make it the active one",
        "python -m bot publish checkpoints/default.pt").add_argument("path", type=Path)
    add("checkpoints", cmd_checkpoints, "list published checkpoints with their metrics",
        "python -m bot checkpoints")
    add("history", cmd_history, "recent posts and their deliveries",
        "python -m bot history -n 50").add_argument(
        "-n", type=int, default=20, help="how many posts (default 20)")
    add("status", cmd_status,
        "active checkpoint, daemon and next post, delivery counts, last error",
        "python -m bot status")
    add("check", cmd_check,
        "verify each enabled channel's settings and credentials, posting nothing; "
        "shows who the bot posts as, and warns when the account is not flagged as a bot",
        "python -m bot check").add_argument(
        "--fix", action="store_true",
        help="flag the account as a bot where the API can (Mastodon; X: in its settings)")
    add("retry", cmd_retry, "try failed deliveries again", "python -m bot retry")
    p = add("regenerate", cmd_regenerate,
            "re-create a post's image from its checkpoint and seed and compare hashes",
            "python -m bot regenerate 12")
    p.add_argument("post_id", type=int)
    p.add_argument("--out", type=Path, default=None,
                   help="where to write it (default: <data_dir>/regenerated/)")
    return parser


def setup_logging(verbose: bool) -> None:
    from bot.secret import RedactingFilter
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler],
                        force=True)
    # Their INFO lines ("Added job", "Context impl") repeat what ours say in plainer words.
    for noisy in ("apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def _quiet_broken_pipe() -> int:
    # The reader of stdout went away (`status | head -3`): nothing left to say. stdout goes to
    # /dev/null so that the interpreter's last flush does not complain either.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it


def main(argv: Sequence[str] | None = None) -> int:
    # key=value words after the command are overrides (argparse ignores a closed pipe: --help).
    args, overrides = parse_command_line(build_parser(), argv)
    setup_logging(args.verbose)
    if args.set:
        print(f"warning: --set is deprecated: write bot.{args.set[0]} after the command "
              "(overrides start at the top of config.yaml, as train.py's do)", file=sys.stderr)
    try:
        from bot.config import settings_of
        aliases = [Override.parse(f"bot.{item}", label=f"--set {item}") for item in args.set]
        settings = settings_of(read_config(find_config(args.config), [*aliases, *overrides]))
        rc = args.func(settings, args)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at exit
        return rc
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except UserError as e:  # the bot's, the gan's (a checkpoint); anything else is a bug
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
