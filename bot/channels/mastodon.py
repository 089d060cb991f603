"""The Mastodon channel (Mastodon.py 2.x): upload the PNG with its alt text, wait until the
server has processed it, then post the status under the delivery's idempotency key.

The client is set up to fail fast and plainly:
- `mastodon_version` pinned with `version_check_mode="created"`: the library never asks the
  server for its version, so uploads use POST /api/v2/media (a server without it, answering
  404, gets POST /api/v1/media from then on), and an unreachable server is a
  MastodonNetworkError instead of the RecursionError of a failed version check
  (halcy/Mastodon.py#450);
- `ratelimit_method="throw"`: a 429 is ours to schedule (the delivery waits in the database),
  where the default "wait" would sleep inside the daemon, for ever if need be;
- `request_timeout`: a server that hangs costs one attempt, not the daemon.

A repeated attempt (the last one timed out, or the process died before the database heard how
it went) sends the same Idempotency-Key, so Mastodon answers with the status it already has
instead of posting again. Mastodon remembers a key for one hour only, so once an attempt has
sent the status request, every later one first looks for the status among the account's recent
ones. The uploaded image is kept on the delivery and reused while the server still has it.
"""

from __future__ import annotations

import html
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal
from urllib.parse import urlsplit

from mastodon import (Mastodon, MastodonAPIError, MastodonError, MastodonNetworkError,
                      MastodonNotFoundError, MastodonRatelimitError, MastodonUnauthorizedError)
from pydantic import Field, field_validator

from bot.channels.base import (CLOCK_SKEW, Advice, Channel, ChannelSettings, Outgoing,
                               Permanent, RateLimited, Receipt, Retryable, error_for_status,
                               wait_for)
from bot.fields import SecretRef, Template
from bot.etiquette import with_hashtags

log = logging.getLogger(__name__)

# The oldest Mastodon with every endpoint used here (GET /api/v2/instance came in 4.0).
API_VERSION = "4.0.0"
# Mastodon.py uploads to POST /api/v1/media for servers it believes older than 3.1.4.
LEGACY_MEDIA_VERSION = (3, 0, 0)
# Mastodon's own limits, for servers whose instance information does not state them.
DEFAULT_MAX_CHARACTERS, DEFAULT_DESCRIPTION_LIMIT = 500, 1500
URL_LENGTH = 23  # Mastodon counts every link as 23 characters, whatever its length
SCOPES = "write:media write:statuses read:accounts"
# Replies to mentions also read notifications, the mention's thread (before replying again)
# and, with replies.only_followed, whom the account follows.
REPLY_SCOPES = "read:notifications read:statuses read:follows"
MIME_TYPES = {".png": "image/png", ".gif": "image/gif", ".mp4": "video/mp4"}
PAGE = 40  # the most notifications Mastodon gives per request
MAX_PAGES = 10  # mentions per poll at most PAGE * MAX_PAGES; older ones wait for the next


@dataclass(frozen=True)
class Mention:
    """A status that mentions the bot's account, as the replies need it."""

    notification_id: str
    status_id: str
    account_id: str
    account_uri: str  # stable across renames and servers: what a follower's seeds derive from
    account_acct: str  # "alice" (this server) or "alice@example.org"
    bot: bool  # the account says it is automated
    visibility: str
    text: str  # plain text


class MastodonSettings(ChannelSettings):
    instance_url: str
    access_token: SecretRef = Field(
        default_factory=lambda: SecretRef(env="MASTODON_ACCESS_TOKEN"))
    visibility: Literal["public", "unlisted", "private", "direct"] = "unlisted"
    sensitive: bool = False
    spoiler_text: str = ""
    language: str | None = Field("en", pattern=r"^[a-z]{2,3}$")
    caption: Template | None = None
    request_timeout_s: float = Field(30.0, gt=0)
    processing_deadline_s: float = Field(60.0, gt=0)

    @field_validator("instance_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError(f"'{v}' is not a URL like https://mastodon.example")
        return v.rstrip("/")


_URL = re.compile(r"https?://\S+")
_LINE_BREAK = re.compile(r"<br\s*/?>|</p>\s*<p[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")


def status_length(text: str, spoiler_text: str) -> int:
    """The length Mastodon checks against max_characters: text and content warning together,
    each link as 23. Mastodon counts grapheme clusters; code points are as many or more, so a
    caption this passes is never too long."""
    return len(_URL.sub("x" * URL_LENGTH, text)) + len(spoiler_text)


def _words(text: str) -> str:
    return " ".join(text.split())


def plain_text(content: str) -> str:
    """A status's HTML content as the text that was posted (whitespace normalised)."""
    return _words(html.unescape(_TAG.sub("", _LINE_BREAK.sub("\n", content))))


def _reason(e: MastodonAPIError) -> str:
    # Mastodon.py's args: ('Mastodon API returned error', status, reason, server message)
    args = e.args
    return str(args[3] if len(args) > 3 and args[3] else args[2] if len(args) > 2 else e)


class MastodonChannel(Channel):
    Settings = MastodonSettings
    settings: MastodonSettings
    POLL_FIRST_S = 0.5  # the first wait for media processing; it doubles up to 5 s

    def __init__(self, name: str, settings: MastodonSettings, data_dir: Path):
        super().__init__(name, settings, data_dir)
        token = settings.access_token.read(f"channel {name}")
        self.host = urlsplit(settings.instance_url).netloc
        self.api = Mastodon(access_token=token.get_secret_value(),
                            api_base_url=settings.instance_url, mastodon_version=API_VERSION,
                            version_check_mode="created", ratelimit_method="throw",
                            request_timeout=settings.request_timeout_s,
                            user_agent="waifu-gen (Mastodon.py)")
        self._limits: tuple[int, int] | None = None
        self._media_v1 = False  # the server has no /api/v2/media: learnt once, then kept

    def where(self) -> str:
        return self.settings.instance_url

    def check(self) -> str:
        with self._errors():
            me = self.api.account_verify_credentials()
            # Mastodon 4.3 and later list the application's scopes; older ones list none.
            try:
                granted = set(self.api.app_verify_credentials().get("scopes") or [])
            except MastodonNotFoundError:  # other server software may not have the endpoint
                granted = set()
        # "write" grants every write:... scope, "read" every read:... one.
        missing = [scope for scope in SCOPES.split()
                   if granted and not {scope, scope.partition(":")[0]} & granted]
        if missing:
            raise Permanent(f"the access token's application lacks the scopes "
                            f"{' '.join(missing)}: create a token with {SCOPES}")
        return (f"posts as @{me.acct}@{self.host} ({me.display_name or me.username}), "
                f"visibility {self.settings.visibility}")

    def etiquette(self, fix: bool = False) -> list[Advice]:
        with self._errors():
            me = self.api.account_verify_credentials()
            if me.get("bot"):
                return []
            who = f"@{me.acct}@{self.host}"
            if not fix:
                return [Advice(f"{who} is not flagged as a bot (an automated account): "
                               "`python -m bot check --fix` sets it")]
            try:
                self.api.account_update_credentials(bot=True)
            except MastodonAPIError as e:
                if len(e.args) > 1 and e.args[1] == 403:  # the token lacks write:accounts
                    raise Permanent(
                        f"{self.host} refused to flag {who} as a bot ({_reason(e)}): --fix "
                        "needs a token with the scope write:accounts; or tick 'This is an "
                        "automated account' in the profile settings") from None
                raise
        return [Advice(f"{who} is now flagged as a bot (an automated account)", fixed=True)]

    def deliver(self, post: Outgoing) -> Receipt:
        # An animated post goes as its MP4 (Mastodon shows a silent video as a looping gifv).
        png = post.video_path.read_bytes() if post.video_path is not None else post.png()
        if post.in_reply_to_id is not None:  # a reply: to the asker, without hashtags
            caption = f"@{post.mention} {post.caption}" if post.mention else post.caption
        elif self.settings.caption:
            caption = post.render(self.settings.caption)
        else:
            caption = post.caption
        with self._errors():
            max_characters, _ = self._instance_limits()
            caption = with_hashtags(caption, post.hashtags, lambda text: status_length(
                text, self.settings.spoiler_text) <= max_characters)
            self._check_limits(caption, post.alt_text)
            # An earlier attempt sent the status and may have posted it: look, whatever the
            # age of the idempotency key (Mastodon forgets it after an hour).
            if post.maybe_sent and (earlier := self._find_earlier(post, caption)):
                log.info("post %d: already on %s as %s (posted by an earlier attempt)",
                         post.post_id, self.host, earlier.url)
                return earlier
            media_id = self._reusable_media(post.media_id)
            reused = media_id is not None
            media_id = media_id or self._upload(png, post)
            post.on_sending()
            try:
                status = self._status_post(caption, media_id, post)
            except MastodonAPIError as e:
                if not (reused and len(e.args) > 1 and e.args[1] == 422):
                    raise
                # The kept image was removed or attached meanwhile: upload it again, once.
                status = self._status_post(caption, self._upload(png, post), post)
        return Receipt(remote_id=str(status.id), url=status.url)

    def mentions(self, since_id: str | None) -> list[Mention]:
        """The mentions of the account newer than the notification `since_id`, oldest first
        (GET /api/v1/notifications?types[]=mention). With no `since_id`: only the newest
        one, to start from."""
        with self._errors():
            page = self.api.notifications(types=["mention"], since_id=since_id,
                                          limit=1 if since_id is None else PAGE)
            found = list(page)
            pages = 1
            while since_id is not None and len(page) == PAGE and pages < MAX_PAGES:
                page = self.api.notifications(types=["mention"], since_id=since_id,
                                              max_id=page[-1].id, limit=PAGE)
                found += page
                pages += 1
        if pages == MAX_PAGES and len(page) == PAGE:
            # The server pages from the newest down: what is left lies below the last page.
            log.warning("%s: more than %d new mentions at once; the oldest are not answered",
                        self.host, PAGE * MAX_PAGES)
        out = []
        for n in reversed(found):  # oldest first
            if n.get("type") != "mention" or n.get("status") is None:
                continue
            st, acc = n.status, n.account
            out.append(Mention(
                notification_id=str(n.id), status_id=str(st.id), account_id=str(acc.id),
                account_uri=acc.get("uri") or acc.get("url") or acc.acct,
                account_acct=acc.acct, bot=bool(acc.get("bot")),
                visibility=st.get("visibility") or "public", text=plain_text(st.content or "")))
        return out

    def check_replies(self) -> str:
        """Verify that the token may read the mentions (replies to mentions)."""
        try:
            self.mentions(None)
        except Permanent as e:
            raise Permanent(f"cannot read the mentions ({e}); replies need a token with the "
                            f"scopes {REPLY_SCOPES}") from None
        return "may read the mentions (bot.replies)"

    def following(self, account_ids: list[str]) -> set[str]:
        """Those of `account_ids` that the bot's account follows."""
        if not account_ids:
            return set()
        with self._errors():
            return {str(r.id) for r in self.api.account_relationships(account_ids)
                    if r.get("following")}

    def _status_post(self, caption: str, media_id: str, post: Outgoing) -> dict:
        s = self.settings
        return self.api.status_post(
            caption, media_ids=[media_id], visibility=post.visibility or s.visibility,
            sensitive=s.sensitive, spoiler_text=s.spoiler_text or None, language=s.language,
            in_reply_to_id=post.in_reply_to_id, idempotency_key=post.idempotency_key)

    def _upload(self, png: bytes, post: Outgoing) -> str:
        """Upload the image, keep its id on the delivery, and wait until it is processed."""
        ext = ".mp4" if post.video_path is not None else post.image_path.suffix or ".png"
        args = dict(mime_type=MIME_TYPES[ext], description=post.alt_text,
                    file_name=f"face-{post.post_id}{ext}")
        media = None
        if not self._media_v1:
            try:
                media = self.api.media_post(png, **args)
            except MastodonNotFoundError:
                log.info("%s has no /api/v2/media: uploading to /api/v1/media from now on",
                         self.host)
                self._media_v1 = True
        if media is None:
            media = self._media_post_v1(png, args)
        post.on_media(str(media.id))
        return self._ready(media)

    def _media_post_v1(self, png: bytes, args: dict) -> dict:
        # Mastodon.py picks the endpoint by the server version it believes in: for this one
        # call, an older one.
        api = self.api
        pinned = api.mastodon_major, api.mastodon_minor, api.mastodon_patch
        api.mastodon_major, api.mastodon_minor, api.mastodon_patch = LEGACY_MEDIA_VERSION
        try:
            return api.media_post(png, **args)
        finally:
            api.mastodon_major, api.mastodon_minor, api.mastodon_patch = pinned

    def _reusable_media(self, media_id: str | None) -> str | None:
        """The image an earlier attempt uploaded, processed, if the server still has it
        unattached (it shows no other kind)."""
        if media_id is None:
            return None
        try:
            return self._ready(self.api.media(media_id))
        except MastodonNotFoundError:
            return None

    def _ready(self, media: dict) -> str:
        if media.get("url") is None:  # 202/206: the server is still processing it
            media = wait_for(lambda: self._processed(media.id),
                             self.settings.processing_deadline_s,
                             f"media processing on {self.host}", self.POLL_FIRST_S)
        return str(media.id)

    def _processed(self, media_id: str) -> dict | None:
        media = self.api.media(media_id)  # 206 while processing, 200 with a URL when done
        return media if media.get("url") else None

    def _instance_limits(self) -> tuple[int, int]:
        """(max_characters, description_limit), asked once per process."""
        if self._limits is None:
            try:
                info = self.api.instance_v2()
            except MastodonNotFoundError:  # before Mastodon 4.0, or other server software
                info = self.api.instance_v1()
            conf = info.get("configuration") or {}
            self._limits = (
                (conf.get("statuses") or {}).get("max_characters") or DEFAULT_MAX_CHARACTERS,
                (conf.get("media_attachments") or {}).get("description_limit")
                or DEFAULT_DESCRIPTION_LIMIT)
        return self._limits

    def _check_limits(self, caption: str, alt_text: str) -> None:
        max_characters, description_limit = self._instance_limits()
        length = status_length(caption, self.settings.spoiler_text)
        if length > max_characters:
            raise Permanent(f"the caption is {length} characters (content warning included); "
                            f"{self.host} allows {max_characters}: shorten the caption template")
        if len(alt_text) > description_limit:
            raise Permanent(f"the alt text is {len(alt_text)} characters; {self.host} allows "
                            f"{description_limit}: shorten the alt_text template")

    def _find_earlier(self, post: Outgoing, caption: str) -> Receipt | None:
        """The status an earlier attempt of this delivery posted, if any: ours, with media,
        the same text, and not older than the post (so an identical caption from another
        post never matches). For a reply: ours among the answers to the mention."""
        me = self.api.account_verify_credentials()
        if post.in_reply_to_id is not None:
            # The mention's thread, not our latest statuses: those may be many replies since,
            # and the text of a mention reads differently on the server (@alice@host: @alice).
            for status in self.api.status_context(post.in_reply_to_id).descendants:
                if (str(status.account.id) == str(me.id)
                        and str(status.in_reply_to_id) == str(post.in_reply_to_id)):
                    return Receipt(remote_id=str(status.id), url=status.url)
            return None
        since = post.created_at - CLOCK_SKEW
        want = _words(caption)
        for status in self.api.account_statuses(me.id, only_media=True, exclude_reblogs=True,
                                                limit=40):
            if status.created_at < since:
                break  # newest first: the rest are older still
            if plain_text(status.content) == want:
                return Receipt(remote_id=str(status.id), url=status.url)
        return None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Mastodon.py's exceptions as Retryable or Permanent, with what to do about them."""
        try:
            yield
        except MastodonRatelimitError:
            # Mastodon.py has parsed X-RateLimit-Reset (ISO or epoch) and corrected for the
            # server's clock; a stale or missing value leaves the wait to the backoff.
            reset = self.api.ratelimit_reset
            wait = max(0.0, reset - time.time()) if reset else None
            raise RateLimited(f"{self.host}: rate limit reached"
                            + (f"; it resets in {wait:.0f} s" if wait is not None else ""),
                            wait) from None
        except MastodonUnauthorizedError as e:
            raise Permanent(
                f"{self.host} refused the access token (HTTP 401: {_reason(e)}); check your "
                f"access token ({self.settings.access_token.describe()}): it must be one "
                f"created on {self.host} for an application with the scopes {SCOPES}") from None
        except MastodonNetworkError as e:  # connection refused, DNS, timeouts
            raise Retryable(f"no answer from {self.host}: {e}") from None
        except MastodonAPIError as e:
            status = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], int) else None
            if status is None:  # a 2xx that is not JSON: a proxy's error page, most likely
                raise Retryable(f"{self.host} answered something unreadable: {e}") from None
            reason = _reason(e)
            if status == 403 and "scope" in reason:
                reason += f"; the token needs the scopes {SCOPES}"
            elif status == 404:
                reason += f"; is {self.settings.instance_url} a Mastodon server?"
            raise error_for_status(status, f"{reason} ({self.host})") from None
        except MastodonError as e:  # a version or argument check inside Mastodon.py
            raise Permanent(f"Mastodon.py refused the request: {e}") from None
