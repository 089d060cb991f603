"""One post, crash-safe: the database is the state machine, not memory.

Order of events for a post:
1. draw a seed never posted with this checkpoint; render; re-draw if the image's perceptual
   hash is close to an earlier post's, or (memorisation guard) if it is close to a training face;
2. save the PNG under the data folder;
3. commit the `posts` row and one `pending` delivery per enabled channel, in one transaction;
4. deliver each; every outcome is committed before the next delivery starts.
A crash anywhere leaves either nothing (before 3) or pending deliveries (after 3), which the
next run or tick finishes first. A delivery's attempt is committed before its network call,
so a crash mid-call still counts; so is the fact that the request creating the remote post
was (maybe) sent, so that every later attempt looks for that post before posting.

Transient failures are retried with capped exponential backoff, counted from the end of each
attempt, until `retry.give_up_after_h` after the first of them; permanent ones fail at once.
A rate limit (429) pauses the whole channel until the server's reset, without spending the
delivery's attempt; the pause is in the database, so a restart keeps it too.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import signal
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot import BotError, locks, store
from bot.phash import distance as hash_distance
from bot.phash import phash as perceptual_hash
from bot.channels.base import (Channel, DeliveryError, Outgoing, Permanent, RateLimited,
                               template_fields)
from bot.ahead import COUNT, Ahead
from bot.animation import gif_bytes, gif_frames, write_mp4
from bot.render import worker
from bot.checkpoints import (CheckpointUnavailable, load_published, problem, render,
                             render_candidates, render_walk)
from bot.config import Curate, Dedup, Memorisation, Settings
from bot.curate import critic_file, critic_key
from bot.etiquette import check_daily_cap
from bot.guard import load_guard
from bot.models import (Attempted, ChannelState, Checkpoint, Delivery, DeliveryState, Post,
                        Reply, utcnow)
from bot.secret import redact
from gan import atomic_write, pick

log = logging.getLogger(__name__)

SEED_SPACE = 2**31  # fits the database's integer column everywhere


def _crash_point(name: str) -> None:
    # Fault injection for the crash-safety tests: die here the way `kill -9` would.
    if os.environ.get("BOT_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Draft:
    checkpoint: Checkpoint
    seed: int
    png: bytes
    phash: str
    score: float | None = None  # the realism critic's, when the post is curated
    # A curated post's every candidate, in the order drawn: {"seed", "score"}, and "refused":
    # "dedup" or "memorisation" for one that scored higher but failed a check.
    candidates: list[dict[str, Any]] | None = None


def pick_seed(rng: random.Random, used: set[int]) -> int:
    while (seed := rng.randrange(SEED_SPACE)) in used:
        pass
    return seed


class SeedRefused(BotError):
    """A seed asked for (`post --seed`, or kept by a dry run) that cannot be posted."""


def draw(s: Session, dedup: Dedup, rng: random.Random,
         memorisation: Memorisation | None = None, data_dir: Path | None = None,
         seed: int | None = None, keep_ahead: bool = False,
         curate: Curate | None = None) -> Draft:
    """A fresh seed and its image, unlike any earlier post and (with the memorisation guard
    on) not a near-copy of a training face. `data_dir` holds the guard's own index of
    `memorisation.faces`. With `seed`: exactly that seed, or SeedRefused saying why not.
    With `curate` (bot.curate) and a critic file, and no `seed`: `curate.candidates` fresh
    seeds, drawn and scored together, and the best-scoring one that passes those checks
    (`gan.pick`); all of them refused, as many again, up to dedup.max_draws checked.

    Images drawn ahead (bot/ahead.py) are taken first, for random seeds (not a scripted
    `rng`'s) and kept ones; `keep_ahead` (a dry run) leaves the one it shows for the post."""
    row = store.active_checkpoint(s)
    if row is None:
        raise BotError("no active checkpoint: publish one with `python -m bot publish PATH`")
    why = problem(row)  # the file is there and unchanged, whether drawn now or ahead
    if why is not None:
        raise CheckpointUnavailable(why)
    ck = None  # loaded (torch) only if a seed has no image drawn ahead
    ahead = (Ahead(data_dir, row.sha256) if data_dir is not None and
             (seed is not None or isinstance(rng, random.SystemRandom)) else None)
    guard = load_guard(memorisation, data_dir)
    critic = critic_file(curate) if seed is None else None
    key = critic_key(critic) if critic is not None else None
    per_round = curate.candidates if critic is not None else 1
    used = store.used_seeds(s, row.id)
    if seed is not None and seed in used:
        raise SeedRefused(f"seed {seed} was already posted with checkpoint #{row.id} "
                          f"({Path(row.path).name}): a seed is never posted twice")
    earlier = store.phashes(s)
    wanted = seed
    limit = 1 if wanted is not None else dedup.max_draws  # candidates checked at most
    queue = ahead.unposted(used) if ahead and wanted is None else []
    checked = copies = 0
    records: list[dict[str, Any]] = []
    while checked < limit:
        seeds = []
        for _ in range(per_round):
            seeds.append(wanted if wanted is not None else
                         queue.pop(0) if queue else pick_seed(rng, used))
            used.add(seeds[-1])
        images, scores = {}, {}
        for k in seeds:
            image, score = ahead.get_scored(k, key) if ahead is not None else (None, None)
            if image is not None and (key is None or score is not None):
                images[k], scores[k] = image, score
        if fresh := [k for k in seeds if k not in images]:
            ck = ck or load_published(row)
            drawn, drawn_scores = render_candidates(ck, fresh, critic)
            for i, k in enumerate(fresh):
                images[k], scores[k] = drawn[i], drawn_scores[i] if drawn_scores else None
        batch = [{"seed": k, "score": scores[k]} for k in seeds]
        hashes: dict[int, str] = {}

        def accept(i: int) -> bool:
            nonlocal checked, copies
            if checked == limit:
                return False
            checked += 1
            k, image = seeds[i], images[seeds[i]]
            hashes[k] = perceptual_hash(image)  # not imagehash's: that one imports scipy
            distance = min((hash_distance(hashes[k], e) for e in earlier), default=None)
            if distance is not None and distance <= dedup.max_distance:
                log.info("seed %d looks like an earlier post (hash distance %d); not posted",
                         k, distance)
                batch[i]["refused"] = "dedup"
                return False
            if guard is not None:
                near, face = guard.nearest_face(np.asarray(image))
                if near < memorisation.min_distance:
                    copies += 1
                    log.warning("seed %d is too close to the training face %s (distance "
                                "%.3f, below memorisation.min_distance %.2f); not posted",
                                k, face, near, memorisation.min_distance)
                    batch[i]["refused"] = "memorisation"
                    return False
            return True

        chosen = pick([scores[k] or 0.0 for k in seeds], accept,
                      curate.min_score if critic is not None else None)
        records += batch
        if ahead is not None:  # taken: posted now, or not at all (a dry run keeps its own)
            for k in seeds:
                if not (keep_ahead and chosen is not None and k == seeds[chosen]):
                    ahead.drop(k)
        if chosen is None:
            continue
        k = seeds[chosen]
        if ck is not None and ahead is not None:  # loaded anyway: draw for the next posts
            ahead.fill(lambda ks: render_candidates(ck, ks, critic), random.SystemRandom(),
                       used, pick_seed, count=COUNT * per_round, critic=key)
        if critic is None:
            return Draft(row, k, png_bytes(images[k]), hashes[k])
        log.info("seed %d: the best of %d candidates (realism score %.3f)%s", k, len(records),
                 scores[k], f", {len(records) - len(batch)} in earlier rounds"
                 if len(records) > len(batch) else "")
        return Draft(row, k, png_bytes(images[k]), hashes[k], scores[k], records)
    if wanted is not None:
        why = ("too close to a training face (memorisation.min_distance)" if copies else
               "too like an earlier post (dedup.max_distance)")
        raise SeedRefused(f"seed {wanted} is not posted: its image is {why}")
    if copies == dedup.max_draws:
        raise BotError(f"all {copies} draws were too close to a training face (memorisation."
                       "min_distance): the checkpoint copies its training data; publish "
                       "another checkpoint")
    also = f" ({copies} too close to a training face)" if copies else ""
    raise BotError(f"no image unlike the earlier posts in {dedup.max_draws} draws{also}; "
                   "lower dedup.max_distance or publish another checkpoint")


def quality_text(ck: Checkpoint, quality_metric: str) -> str:
    """The caption's {quality}: e.g. "FLD 1450", or empty when the checkpoint lacks it."""
    value = (ck.metrics or {}).get(quality_metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    # FLD 1450, FID 31.2, FHD 4.87, KID_MEAN 0.00931: three significant digits below 10.
    shown = (f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10
             else f"{value:.3g}")
    return f"{quality_metric.upper()} {shown}"


def texts(settings: Settings, draft: Draft, number: int, caption: str | None = None,
          alt_text: str | None = None) -> tuple[str, str]:
    """(caption, alt text) of a draft numbered `number`: the templates `caption` and
    `alt_text` (default: bot.caption, bot.alt_text), filled in."""
    ck = draft.checkpoint
    fields = template_fields(number, draft.seed, Path(ck.path).name, ck.variant, ck.step,
                             ck.images_seen, quality_text(ck, settings.quality_metric),
                             draft.score)
    return ((caption or settings.caption).format(**fields).strip(),
            (alt_text or settings.alt_text).format(**fields).strip())


NEXT_SEED = "next-seed.json"  # in data_dir: the seed the last dry run showed


def keep_seed(data_dir: Path, draft: Draft) -> None:
    """Remember the draft a dry run showed (its seed, and how curation chose it)."""
    atomic_write(data_dir / NEXT_SEED, json.dumps(
        {"seed": draft.seed, "checkpoint_sha256": draft.checkpoint.sha256,
         "score": draft.score, "candidates": draft.candidates}).encode())


def kept_seed(data_dir: Path, checkpoint_sha256: str) -> dict[str, Any] | None:
    """What `post --dry-run` showed ("seed", and "score" and "candidates" when curated),
    while the active checkpoint is the one it drew from."""
    try:
        kept = json.loads((data_dir / NEXT_SEED).read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(kept, dict) or kept.get("checkpoint_sha256") != checkpoint_sha256
            or not isinstance(kept.get("seed"), int)):
        return None
    return kept


def _draw_for_post(s: Session, settings: Settings, rng: random.Random,
                   seed: int | None) -> Draft:
    """`seed` exactly; else the seed a dry run showed (the image a person approved, with the
    candidates it was chosen from); else a fresh one (curated: bot.curate)."""
    draw_with = (settings.dedup, rng, settings.memorisation, settings.data_dir)
    if seed is not None:
        return draw(s, *draw_with, seed=seed)
    row = store.active_checkpoint(s)
    kept = kept_seed(settings.data_dir, row.sha256) if row is not None else None
    if kept is None:
        return draw(s, *draw_with, curate=settings.curate)
    (settings.data_dir / NEXT_SEED).unlink(missing_ok=True)  # used once, posted or not
    try:
        draft = draw(s, *draw_with, seed=kept["seed"])
    except SeedRefused as e:
        log.warning("the seed the last dry run showed is not used: %s; drawing another", e)
        return draw(s, *draw_with, curate=settings.curate)
    log.info("seed %d: the one the last dry run showed", kept["seed"])
    score, candidates = kept.get("score"), kept.get("candidates")
    if isinstance(score, (int, float)) and isinstance(candidates, list):
        draft.score, draft.candidates = float(score), candidates
    return draft


def _record(sessions: sessionmaker[Session], settings: Settings, channels: list[str],
            rng: random.Random, seed: int | None = None) -> int:
    with sessions() as s:
        return _commit_post(s, settings, channels, _draw_for_post(s, settings, rng, seed))


def _commit_post(s: Session, settings: Settings, channels: list[str], draft: Draft,
                 data: bytes | None = None, name: str | None = None,
                 templates: tuple[str, str] | None = None, **fields: Any) -> int:
    """Save the post's file (the draft's PNG, or `data` named `name`: an animation's GIF) and
    commit its row with one pending delivery per channel; returns the post's id."""
    data = draft.png if data is None else data
    rel = Path("images") / (name or f"{draft.checkpoint.sha256[:12]}-{draft.seed}.png")
    atomic_write(settings.data_dir / rel, data)
    now = utcnow()
    post = Post(created_at=now, checkpoint=draft.checkpoint, seed=draft.seed,
                image_path=str(rel), image_sha256=hashlib.sha256(data).hexdigest(),
                phash=draft.phash, caption="", alt_text="", score=draft.score,
                candidates=draft.candidates, **fields)
    s.add(post)
    s.flush()  # assigns the id: the post number in the caption
    post.caption, post.alt_text = texts(settings, draft, post.id, *(templates or ()))
    for channel in channels:
        s.add(Delivery(post=post, channel=channel, idempotency_key=uuid.uuid4().hex,
                       updated_at=now))
    s.commit()
    log.info("post %d: %s %s from %s, to %s", post.id,
             "seeds" if post.seeds else "seed",
             " → ".join(map(str, post.seeds)) if post.seeds else post.seed,
             Path(draft.checkpoint.path).name, ", ".join(channels))
    return post.id


def _record_animation(sessions: sessionmaker[Session], settings: Settings,
                      channels: list[str], rng: random.Random) -> int:
    """A walk through bot.animation.seeds fresh faces, each drawn and checked like a still's
    (a seed never posted, unlike earlier posts, not a training face), and back to the first."""
    a = settings.animation
    with sessions() as s:
        drafts: list[Draft] = []
        while len(drafts) < a.seeds:
            draft = draw(s, settings.dedup, rng, settings.memorisation, settings.data_dir)
            if all(draft.seed != d.seed for d in drafts):
                drafts.append(draft)
        seeds = [d.seed for d in drafts]
        frames = render_walk(load_published(drafts[0].checkpoint), seeds, a.frames_per_seed)
        return _commit_post(
            s, settings, channels, drafts[0], gif_bytes(frames, a.fps),
            f"{drafts[0].checkpoint.sha256[:12]}-walk-{seeds[0]}.gif", (a.caption, a.alt_text),
            kind="animation", seeds=seeds, frames=len(frames), fps=a.fps)


RESAMPLE = {"nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


def delivered_image(settings: Settings, post: Post | Reply) -> Path:
    """What channels get: the stored image enlarged bot.image.scale times (64x64 is a smudge
    on Mastodon and X), made once per post and setting under data_dir/delivered/. The stored
    original itself when the scale is 1 or the original is gone (the channel then says so).
    An animation's GIF is enlarged frame by frame, always nearest-neighbour."""
    scale, resample = settings.image.scale, settings.image.resample
    original = settings.data_dir / post.image_path
    if scale == 1 or not original.is_file():
        return original
    if getattr(post, "kind", "image") == "animation":
        out = settings.data_dir / "delivered" / f"{original.stem}-x{scale}.gif"
        if not out.is_file():
            atomic_write(out, gif_bytes(gif_frames(original), post.fps, scale))
        return out
    out = settings.data_dir / "delivered" / f"{original.stem}-x{scale}-{resample}.png"
    if not out.is_file():
        with Image.open(original) as im:
            big = im.resize((im.width * scale, im.height * scale), RESAMPLE[resample])
        atomic_write(out, png_bytes(big))
    return out


def delivered_video(settings: Settings, post: Post | Reply) -> Path | None:
    """An animation's MP4 for the channels (made once, from the stored GIF's frames, enlarged
    bot.image.scale times); None for a still, or when the stored GIF is gone."""
    original = settings.data_dir / post.image_path
    if getattr(post, "kind", "image") != "animation" or not original.is_file():
        return None
    out = settings.data_dir / "delivered" / f"{original.stem}-x{settings.image.scale}.mp4"
    if not out.is_file():
        if (w := worker()) is not None:  # the daemon: the encoder stays in the worker
            w.mp4(original, post.fps, settings.image.scale, out)
        else:
            write_mp4(gif_frames(original), post.fps, settings.image.scale, out)
    return out


def _size(path: Path) -> str | None:
    try:
        with Image.open(path) as im:  # reads the header only
            return f"{im.width}x{im.height}"
    except OSError:
        return None


def outgoing(s: Session, settings: Settings, row: Attempted, made: Post | Reply,
             **extra: Any) -> Outgoing:
    """What a channel gets to send `row` (a delivery, or a reply): the image and texts of
    `made` (the delivery's post, or the reply itself), what earlier attempts of `row` did, and
    the callbacks that record what this one does, each committed at once. `extra`: the other
    fields of Outgoing (hashtags; a reply's)."""
    ck = made.checkpoint

    def sending() -> None:
        if row.maybe_sent_at is None:
            row.maybe_sent_at = utcnow()
            s.commit()  # before the request: a crash during it must not forget it was sent

    def uploaded(media_id: str) -> None:
        row.media_id = media_id
        s.commit()

    return Outgoing(post_id=made.id, idempotency_key=row.idempotency_key,
                    image_path=delivered_image(settings, made), caption=made.caption,
                    alt_text=made.alt_text, seed=made.seed, checkpoint=Path(ck.path).name,
                    variant=ck.variant, step=ck.step, images_seen=ck.images_seen,
                    created_at=made.created_at,
                    quality=quality_text(ck, settings.quality_metric), attempt=row.attempts,
                    maybe_sent=row.maybe_sent_at is not None, media_id=row.media_id,
                    on_sending=sending, on_media=uploaded,
                    video_path=delivered_video(settings, made),
                    score=getattr(made, "score", None),
                    seeds=tuple(getattr(made, "seeds", None) or ()),
                    frames=getattr(made, "frames", None), **extra)


JITTER = 0.1
FAILING_WARNING = timedelta(hours=1)


def backoff(settings: Settings, attempts: int, retry_after: float | None) -> timedelta:
    r = settings.retry
    delay = min(r.max_delay_s, r.base_delay_s * 2 ** min(attempts - 1, 64))
    # A server's own wait (429) wins even past max_delay_s: retrying earlier only fails again.
    wait = max(delay, retry_after or 0)
    # Up to 10% more at random, so deliveries that failed together (one outage, one rate-limit
    # window) do not all come back in the same second.
    return timedelta(seconds=wait * (1 + JITTER * random.random()))


def pause(settings: Settings, state: ChannelState, e: RateLimited, now: datetime) -> None:
    """A 429: no request goes to the channel (for any post or reply) before the server's
    reset; the pause is in the database, so a restart keeps it."""
    wait = e.retry_after if e.retry_after else settings.retry.base_delay_s
    state.paused_until = now + timedelta(seconds=wait)
    state.pause_reason = redact(str(e) or type(e).__name__)
    log.warning("%s: %s; paused until %s", state.channel, state.pause_reason,
                state.paused_until.isoformat(timespec="seconds"))


def paused(state: ChannelState, now: datetime) -> bool:
    return state.paused_until is not None and state.paused_until > now


def _failed(settings: Settings, d: Attempted, state: ChannelState, e: Exception) -> None:
    """Record a failed attempt (of a delivery or a reply): retry later, pause the channel, or
    give up."""
    # From the end of the attempt: a 30 s timeout must not use up a 30 s backoff.
    ended = utcnow()
    reason = redact(str(e) or type(e).__name__)
    if not isinstance(e, DeliveryError):
        # Unclassified (a library's own exception, a bug): retried like a network error,
        # with the traceback in the log.
        log.exception("%s: unexpected error", d.label)
    d.last_error = reason
    if isinstance(e, Permanent):
        d.state = DeliveryState.FAILED
        log.error("%s: failed for good: %s", d.label, reason)
        return
    if isinstance(e, RateLimited):
        # The server did not look at the request: the attempt does not count.
        d.attempts -= 1
        pause(settings, state, e, ended)
        d.next_attempt_at = ended + backoff(settings, 1,
                                            (state.paused_until - ended).total_seconds())
        return
    d.failing_since = d.failing_since or ended
    state.failing_since = state.failing_since or ended
    r = settings.retry
    horizon = timedelta(hours=r.give_up_after_h)
    if ended - d.failing_since >= horizon or (r.max_attempts and d.attempts >= r.max_attempts):
        # Say why a retryable error ended as failed, and that `retry` revives it.
        limit = (f"{d.attempts} attempts (retry.max_attempts)"
                 if r.max_attempts and d.attempts >= r.max_attempts else
                 f"{(ended - d.failing_since) / timedelta(hours=1):.1f} h of failures "
                 "(retry.give_up_after_h)")
        d.state, d.last_error = DeliveryState.FAILED, f"{reason}; gave up after {limit}"
        log.error("%s: %s; `retry` tries again", d.label, d.last_error)
    else:
        d.next_attempt_at = ended + backoff(settings, d.attempts,
                                            getattr(e, "retry_after", None))
        log.warning("%s: %s; attempt %d, next at %s", d.label, reason, d.attempts,
                    d.next_attempt_at.isoformat(timespec="seconds"))
    if ended - state.failing_since >= FAILING_WARNING and state.warned_at is None:
        state.warned_at = ended
        log.warning("%s has been failing since %s: %s", d.channel,
                    state.failing_since.isoformat(timespec="seconds"), reason)


def _attempt(s: Session, settings: Settings, channel: Channel | None, row: Attempted,
             state: ChannelState, make: Callable[[], Outgoing]) -> None:
    """One attempt to send `row` (a delivery or a reply) to `channel`, its outcome recorded
    on `row` and the channel's `state`: posted, retried later (backoff, a rate-limit pause),
    or failed. The attempt is committed before the network call; the caller commits the
    outcome."""
    if channel is None:
        row.state = DeliveryState.FAILED
        row.last_error = f"channel '{row.channel}' is not enabled in the config"
        log.error("%s: %s", row.label, row.last_error)
        return
    row.attempts += 1
    row.updated_at = utcnow()
    s.commit()
    try:
        out = make()
        receipt = channel.deliver(out)
    except Exception as e:
        _failed(settings, row, state, e)
        return
    row.state, row.remote_id, row.remote_url = DeliveryState.POSTED, receipt.remote_id, receipt.url
    row.last_error = None
    row.failing_since = state.failing_since = state.warned_at = None
    row.image_size = _size(out.image_path)
    log.info("posted %s to %s: %s (%s)", row.what, row.channel, receipt.url or receipt.remote_id,
             row.image_size)


def send_due(s: Session, settings: Settings, channels: dict[str, Channel],
             rows: list[Attempted], make: Callable[[Attempted], Outgoing]) -> int:
    """One attempt for each of `rows` (due deliveries, or replies: oldest first) whose channel
    is not paused by a rate limit, each outcome committed before the next; `make` gives a
    row's Outgoing. Returns how many were tried."""
    tried = 0
    for row in rows:
        state = store.channel_state(s, row.channel)
        if paused(state, utcnow()):
            continue  # rate limited: it waits, and keeps its attempts
        _attempt(s, settings, channels.get(row.channel), row, state, lambda: make(row))
        tried += 1
        row.updated_at = utcnow()
        s.commit()
        _crash_point("after_delivery")
    return tried


def _deliver_due(sessions: sessionmaker[Session], settings: Settings,
                 channels: dict[str, Channel]) -> int:
    with sessions() as s:
        return send_due(s, settings, channels, store.due_deliveries(s, utcnow()),
                        lambda d: outgoing(s, settings, d, d.post,
                                           hashtags=tuple(settings.hashtags)))


def post_once(sessions: sessionmaker[Session], settings: Settings,
              channels: dict[str, Channel], rng: random.Random | None = None,
              seed: int | None = None, animated: bool = False) -> int:
    """Finish what an earlier run left pending, then make one new post and deliver it: of
    `seed` when given, else of the seed the last dry run showed, else of a fresh one. With
    `animated`: a looping walk between fresh faces instead (bot.animation)."""
    if not channels:
        raise BotError("no channel is enabled: enable one under bot.channels")
    rng = rng or random.SystemRandom()
    with locks.hold(locks.lock_path(settings, "post")):
        _deliver_due(sessions, settings, channels)
        with sessions() as s:  # what was pending is delivered all the same
            check_daily_cap(s, settings.max_posts_per_day, utcnow())
        post_id = (_record_animation(sessions, settings, list(channels), rng) if animated else
                   _record(sessions, settings, list(channels), rng, seed))
        _crash_point("after_post_row")
        _deliver_due(sessions, settings, channels)
    return post_id


def deliver_pending(sessions: sessionmaker[Session], settings: Settings,
                    channels: dict[str, Channel]) -> int:
    """Deliver every pending delivery whose backoff has run out and whose channel is not
    paused by a rate limit; returns how many were tried."""
    with locks.hold(locks.lock_path(settings, "post")):
        return _deliver_due(sessions, settings, channels)


def retry_failed(sessions: sessionmaker[Session], settings: Settings,
                 channels: dict[str, Channel]) -> tuple[int, int]:
    """Failed deliveries get a fresh attempt budget and are tried now; returns how many were
    tried, and how many of them are posted now."""
    return retry_rows(sessions, settings, Delivery,
                      lambda: _deliver_due(sessions, settings, channels))


def retry_rows(sessions: sessionmaker[Session], settings: Settings,
               table: type[Delivery] | type[Reply], send: Callable[[], object]) -> tuple[int, int]:
    """The failed rows of `table` (deliveries, or replies) get a fresh attempt budget and are
    sent now by `send`; returns how many were tried, and how many of them are posted now."""
    with locks.hold(locks.lock_path(settings, "post")):
        with sessions.begin() as s:
            failed = store.reset_failed(s, table)
        send()
    with sessions() as s:
        posted = s.scalar(select(func.count()).select_from(table)
                          .where(table.id.in_(failed), table.state == DeliveryState.POSTED))
    return len(failed), posted


@dataclass
class Preview:
    image_path: Path
    seed: int
    checkpoint: str
    caption: str
    alt_text: str
    channels: list[str]
    score: float | None = None  # curated: the realism score of the best of `candidates`
    candidates: int = 0


def dry_run(sessions: sessionmaker[Session], settings: Settings, channels: list[str],
            rng: random.Random | None = None, seed: int | None = None) -> Preview:
    """What `post_once` would post now, without recording or delivering anything. The seed
    is kept: the next post (by hand or by the daemon) is this very image."""
    with sessions() as s:
        draft = draw(s, settings.dedup, rng or random.SystemRandom(), settings.memorisation,
                     settings.data_dir, seed=seed, keep_ahead=True, curate=settings.curate)
        number = (store.last_post_id(s) or 0) + 1
    keep_seed(settings.data_dir, draft)
    path = settings.data_dir / "dry-run" / f"{draft.checkpoint.sha256[:12]}-{draft.seed}.png"
    atomic_write(path, draft.png)
    caption, alt_text = texts(settings, draft, number)
    return Preview(path, draft.seed, Path(draft.checkpoint.path).name, caption, alt_text,
                   channels, draft.score, len(draft.candidates or ()))


def regenerate(sessions: sessionmaker[Session], settings: Settings, post_id: int,
               out: Path | None = None) -> tuple[Path, bool]:
    """Re-create a post's image from its checkpoint and seed; True if it is bit for bit equal.

    When the original file is gone and the new one matches, it is put back too.
    """
    with sessions() as s:
        post = store.post(s, post_id)
        if post is None:
            raise BotError(f"no post {post_id}")
        ck = load_published(post.checkpoint)
        if post.kind == "animation":  # the walk again, as the same GIF
            png = gif_bytes(render_walk(ck, post.seeds, post.frames // len(post.seeds)),
                            post.fps)
        else:
            png = png_bytes(render(ck, post.seed))
    suffix = Path(post.image_path).suffix or ".png"
    out = out or settings.data_dir / "regenerated" / f"post-{post_id:06d}{suffix}"
    atomic_write(out, png)
    same = hashlib.sha256(png).hexdigest() == post.image_sha256
    original = settings.data_dir / post.image_path
    if same and not original.exists():
        atomic_write(original, png)
    return out, same
