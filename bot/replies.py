"""Replies to mentions that ask for a face (Mastodon): "@faces draw me" gets a face back.

Each asking account has its own faces: the seed of its n-th face is derived from the account's
URI and n (`account_seed`), so the same follower gets the same first face from any run or
database of the bot, and a new one each time it asks again. A seed that cannot be sent (used
already, too like an earlier image, too close to a training face) moves on to the next n.

One poll (the daemon's `replies` job, every bot.replies.poll_s):
1. send the replies still pending (an earlier poll's, a crash's, a backoff's);
2. read the mentions newer than the stored notification id (`channel_states.
   mentions_since_id`); on the very first poll, only note where to start: mentions from
   before the replies were switched on are not answered;
3. for each mention, oldest first, in one transaction: record its reply (image drawn, seed,
   caption, idempotency key: `pending`), or nothing when it is not answered (no trigger words,
   a bot, not followed with only_followed, a daily limit reached), and move the stored id past
   it. A mention is thus handled exactly once, whatever the moment of a crash;
4. send the new replies, through the same attempt, backoff, rate-limit pause and
   "look before posting again" machinery as a post's deliveries (bot.posting.send_due).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import uuid
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from bot import BotError, locks, store
from bot.channels.base import DeliveryError, Permanent, RateLimited
from bot.channels.mastodon import REPLY_SCOPES, MastodonChannel, Mention
from bot.config import Settings
from bot.models import Reply, utcnow
from bot.posting import (SEED_SPACE, Draft, SeedRefused, draw, outgoing, pause, paused,
                         retry_rows, send_due, texts)
from bot.secret import redact
from gan import atomic_write

log = logging.getLogger(__name__)

# Most public first.
VISIBILITIES = ("public", "unlisted", "private", "direct")


def account_seed(account_uri: str, counter: int) -> int:
    """The seed of an account's `counter`-th face: the same on every run and machine."""
    digest = hashlib.sha256(f"{account_uri}\n{counter}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_SPACE


def reply_visibility(mention: str, most_public: str) -> str:
    """The less public of the mention's visibility and bot.replies.visibility: a reply never
    shows more widely than what it answers."""
    rank = {v: i for i, v in enumerate(VISIBILITIES)}
    return max(mention if mention in rank else "direct", most_public, key=rank.__getitem__)


def asks(text: str, words: list[str]) -> bool:
    """The mention's text has one of the trigger words, as whole words (any case, any
    spacing): "draw me" is in "Please draw me!", not in "draw meadows"."""
    return any(re.search(r"(?<!\w)" + r"\s+".join(map(re.escape, w.split())) + r"(?!\w)",
                         text, re.IGNORECASE) for w in words)


def _why_not(s: Session, settings: Settings, m: Mention, followed: set[str] | None) -> str | None:
    """Why this mention gets no reply, or None."""
    r = settings.replies
    if not asks(m.text, r.words):
        return "it does not ask (bot.replies.words)"
    if m.bot:
        return "the account is a bot"
    if followed is not None and m.account_id not in followed:
        return "the bot does not follow the account (bot.replies.only_followed)"
    day = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)  # a UTC day
    if r.per_day is not None and store.replies_since(s, day) >= r.per_day:
        return f"{r.per_day} replies today already (bot.replies.per_day)"
    if (r.per_account_per_day is not None
            and store.replies_since(s, day, m.account_uri) >= r.per_account_per_day):
        return (f"{r.per_account_per_day} replies to this account today already "
                "(bot.replies.per_account_per_day)")
    return None


def _draw_for(s: Session, settings: Settings, account_uri: str) -> tuple[int, Draft]:
    """The account's next face that may be sent: (counter, draft)."""
    first = store.next_counter(s, account_uri)
    for counter in range(first, first + settings.dedup.max_draws):
        try:
            return counter, draw(s, settings.dedup, random.SystemRandom(),
                                 settings.memorisation, settings.data_dir,
                                 seed=account_seed(account_uri, counter))
        except SeedRefused as e:
            log.info("%s's face %d is not sent: %s; the next one", account_uri, counter, e)
    raise SeedRefused(f"none of the faces {first} to {counter} of {account_uri} may be sent "
                      "(dedup, memorisation guard)")


def _record(s: Session, settings: Settings, channel: str, m: Mention) -> Reply:
    counter, draft = _draw_for(s, settings, m.account_uri)
    rel = Path("images") / f"{draft.checkpoint.sha256[:12]}-{draft.seed}.png"
    atomic_write(settings.data_dir / rel, draft.png)
    now = utcnow()
    reply = Reply(channel=channel, notification_id=m.notification_id, mention_id=m.status_id,
                  account_uri=m.account_uri, account_acct=m.account_acct, counter=counter,
                  visibility=reply_visibility(m.visibility, settings.replies.visibility),
                  created_at=now, checkpoint=draft.checkpoint, seed=draft.seed,
                  image_path=str(rel), image_sha256=hashlib.sha256(draft.png).hexdigest(),
                  phash=draft.phash, caption="", alt_text="",
                  idempotency_key=uuid.uuid4().hex, updated_at=now)
    s.add(reply)
    s.flush()  # the id: {post_number} in the reply's caption
    reply.caption, reply.alt_text = texts(settings, draft, reply.id, settings.replies.caption)
    return reply


def _send_due(sessions: sessionmaker[Session], settings: Settings,
              channel: MastodonChannel) -> int:
    with sessions() as s:
        return send_due(s, settings, {channel.name: channel}, store.due_replies(s, utcnow()),
                        lambda r: outgoing(s, settings, r, r, in_reply_to_id=r.mention_id,
                                           mention=r.account_acct, visibility=r.visibility))


def _cannot_read(sessions: sessionmaker[Session], settings: Settings, name: str,
                 e: DeliveryError) -> None:
    if isinstance(e, RateLimited):
        with sessions.begin() as s:
            pause(settings, store.channel_state(s, name), e, utcnow())
        return
    how = (f"; replies need a token with the scopes {REPLY_SCOPES}"
           if isinstance(e, Permanent) else "; trying again at the next poll")
    log.error("replies: cannot read the mentions on %s: %s%s", name, redact(str(e)), how)


def retry_failed(sessions: sessionmaker[Session], settings: Settings,
                 channel: MastodonChannel) -> tuple[int, int]:
    """Failed replies get a fresh attempt budget and are sent now (`python -m bot retry`);
    returns how many were tried, and how many of them are posted now."""
    return retry_rows(sessions, settings, Reply, lambda: _send_due(sessions, settings, channel))


def poll(sessions: sessionmaker[Session], settings: Settings, channel: MastodonChannel) -> int:
    """One poll of the mentions (see the module's docstring); returns how many replies it
    recorded. Holds the post lock: posts and replies share the channel and the renderer."""
    name = channel.name
    with locks.hold(locks.lock_path(settings, "post")):
        _send_due(sessions, settings, channel)
        with sessions() as s:
            state = store.channel_state(s, name)
            if paused(state, utcnow()):
                return 0  # rate limited: no request before the reset
            since = state.mentions_since_id
        try:
            mentions = channel.mentions(since)
            followed = (channel.following(sorted({m.account_id for m in mentions}))
                        if settings.replies.only_followed and since is not None else None)
        except DeliveryError as e:
            _cannot_read(sessions, settings, name, e)
            return 0
        if since is None:
            start = mentions[-1].notification_id if mentions else "0"
            with sessions.begin() as s:
                store.channel_state(s, name).mentions_since_id = start
            log.info("replies: answering the mentions on %s from now on (asking with %s)",
                     channel.where(), ", ".join(repr(w) for w in settings.replies.words))
            return 0
        recorded = 0
        for m in mentions:
            with sessions() as s:
                why = _why_not(s, settings, m, followed)
                try:
                    reply = _record(s, settings, name, m) if why is None else None
                except SeedRefused as e:
                    reply, why = None, str(e)
                except BotError as e:  # the checkpoint is unavailable, say
                    # Nothing to draw with now: this mention and the later ones wait.
                    log.error("replies: no reply to @%s now: %s; trying again at the next poll",
                              m.account_acct, e)
                    break
                store.channel_state(s, name).mentions_since_id = m.notification_id
                s.commit()
                if reply is None:
                    log.info("replies: mention %s by @%s not answered: %s", m.status_id,
                             m.account_acct, why)
                else:
                    recorded += 1
                    log.info("reply %d: seed %d (face %d of @%s), to mention %s", reply.id,
                             reply.seed, reply.counter, m.account_acct, m.status_id)
        _send_due(sessions, settings, channel)
    return recorded
