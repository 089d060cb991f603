"""The X (Twitter) channel: tweepy 4.x for the tweet, X's v2 media endpoints for the image.

tweepy has no v2 media upload and X has retired the v1.1 one, so the PNG goes to
POST /2/media/upload through the client's own requests session, signed with the same OAuth 1.0a
user credentials tweepy signs with; the alt text goes to POST /2/media/metadata; then
`Client.create_tweet(media_ids=...)`.

X has no idempotency key. Once an attempt has sent the tweet request, every later attempt
first looks for the tweet among the account's latest (two reads) and records it if there. X
also refuses a tweet whose text repeats a recent one (403 "duplicate content"): after a sent
attempt that means the tweet exists (looked for again: a timeline may lag); before any, that
the caption template makes identical texts, and the error says so. The uploaded image's id is
kept on the delivery and reused while X still has it (a day).
"""

from __future__ import annotations

import html
import logging
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import requests
import tweepy
from pydantic import Field

from bot.channels.base import (CLOCK_SKEW, Channel, ChannelSettings, Outgoing, Permanent,
                               RateLimited, Receipt, Retryable, error_for_status, wait_for)
from bot.fields import SecretRef, Template
from bot.etiquette import with_hashtags

log = logging.getLogger(__name__)

UPLOAD_URL = "https://api.x.com/2/media/upload"
X_GIF_LIMIT = 15 * 1024 * 1024  # the most X takes for an animated GIF (tweet_gif)
METADATA_URL = "https://api.x.com/2/media/metadata"
MAX_TWEET_LENGTH = 280  # as X weighs it: see tweet_length
MAX_ALT_TEXT = 1000
URL_LENGTH = 23  # every link counts as a t.co link


def _secret(env: str) -> Any:
    return Field(default_factory=lambda: SecretRef(env=env))


class TwitterSettings(ChannelSettings):
    # The app's "API Key and Secret" (consumer keys) and the bot account's "Access Token and
    # Secret", all from the developer portal: OAuth 1.0a user context.
    api_key: SecretRef = _secret("X_API_KEY")
    api_key_secret: SecretRef = _secret("X_API_KEY_SECRET")
    access_token: SecretRef = _secret("X_ACCESS_TOKEN")
    access_token_secret: SecretRef = _secret("X_ACCESS_TOKEN_SECRET")
    caption: Template | None = None
    # X charges far more for a post with a link in it (and t.co-wraps it anyway).
    strip_links: bool = True
    # X's "Made with AI" label on each post (POST /2/tweets `made_with_ai`).
    made_with_ai: bool = True
    request_timeout_s: float = Field(30.0, gt=0)
    processing_deadline_s: float = Field(60.0, gt=0)


_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_LINK = re.compile(r"[ \t]*" + _URL.pattern, re.IGNORECASE)  # with the space before it
# twitter-text's weights: code points in these ranges count 1, all others (CJK, emoji) 2.
_LIGHT = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))


def strip_links(text: str) -> str:
    return _LINK.sub("", text).strip()


def tweet_length(text: str) -> int:
    """The length X checks against 280. Emoji sequences count once per code point here, so
    this errs long, never short."""
    text = _URL.sub("x" * URL_LENGTH, text)
    return sum(1 if any(lo <= ord(c) <= hi for lo, hi in _LIGHT) else 2 for c in text)


def _comparable(text: str) -> str:
    # X returns text HTML-escaped and with a t.co link for the media appended.
    return " ".join(_LINK.sub("", html.unescape(text)).split())


def _message(e: tweepy.HTTPException) -> str:
    return "; ".join(map(str, e.api_messages)) or e.response.reason


class _TimeoutSession(requests.Session):
    """tweepy sends its requests without a timeout; this adds one to every request."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


_RAISE = {400: tweepy.BadRequest, 401: tweepy.Unauthorized, 403: tweepy.Forbidden,
          404: tweepy.NotFound}


def _raise_for_status(resp: requests.Response) -> None:
    """Our own requests fail with tweepy's exceptions, so one mapping covers every call."""
    if resp.ok:
        return
    if resp.status_code == 429:
        reset = resp.headers.get("x-rate-limit-reset", "")
        raise tweepy.TooManyRequests(resp, reset_time=int(reset) if reset.isdigit() else None)
    if resp.status_code >= 500:
        raise tweepy.TwitterServerError(resp)
    raise _RAISE.get(resp.status_code, tweepy.HTTPException)(resp)


class TwitterChannel(Channel):
    Settings = TwitterSettings
    settings: TwitterSettings
    POLL_FIRST_S = 1.0  # the first wait for media processing; it doubles up to 5 s
    CHUNK = 4 * 1024 * 1024  # bytes per APPEND of a chunked upload (X takes up to 5 MB)

    def __init__(self, name: str, settings: TwitterSettings, data_dir: Path):
        super().__init__(name, settings, data_dir)
        s = settings
        keys = {field: getattr(s, field).read(f"channel {name}: {field}").get_secret_value()
                for field in ("api_key", "api_key_secret", "access_token",
                              "access_token_secret")}
        self.client = tweepy.Client(
            consumer_key=keys["api_key"], consumer_secret=keys["api_key_secret"],
            access_token=keys["access_token"], access_token_secret=keys["access_token_secret"])
        self.client.session = _TimeoutSession(s.request_timeout_s)
        # The OAuth 1.0a signer tweepy itself uses for user-context requests.
        self.auth = tweepy.OAuth1UserHandler(
            keys["api_key"], keys["api_key_secret"], keys["access_token"],
            keys["access_token_secret"]).apply_auth()

    def where(self) -> str:
        return "https://x.com"

    def check(self) -> str:
        with self._errors():
            me = self.client.get_me().data
        return f"posts as @{me.username} ({me.name}) on X"

    def _caption(self, post: Outgoing) -> str:
        s = self.settings
        caption = post.render(s.caption) if s.caption else post.caption
        caption = strip_links(caption) if s.strip_links else caption
        return with_hashtags(caption, post.hashtags,
                             lambda text: tweet_length(text) <= MAX_TWEET_LENGTH)

    def deliver(self, post: Outgoing) -> Receipt:
        png = post.png()
        caption = self._caption(post)
        if (length := tweet_length(caption)) > MAX_TWEET_LENGTH:
            raise Permanent(f"the caption is {length} characters as X counts them (links 23, "
                            f"CJK and emoji 2); X allows {MAX_TWEET_LENGTH}: shorten the "
                            "caption template, or give this channel its own `caption`")
        if len(post.alt_text) > MAX_ALT_TEXT:
            raise Permanent(f"the alt text is {len(post.alt_text)} characters; X allows "
                            f"{MAX_ALT_TEXT}: shorten the alt_text template")
        with self._errors():
            if post.maybe_sent and (earlier := self._earlier(post, caption)):
                return earlier
            media_id = self._media(png, post)
            post.on_sending()
            try:
                tweet = self._create_tweet(caption, media_id)
            except tweepy.Forbidden as e:
                if not any("duplicate" in str(m).lower() for m in e.api_messages):
                    raise
                refused = f"X refused the text as a duplicate of a recent tweet ({_message(e)})"
                if not post.maybe_sent:
                    raise Permanent(f"{refused}: keep {{post_number}} or {{seed}} in the "
                                    "caption template so that every post's text differs"
                                    ) from None
                if earlier := self._earlier(post, caption):
                    return earlier
                raise Permanent(f"{refused}, and no tweet of this post is among the account's "
                                "latest: check the account") from None
        tweet_id = str(tweet.data["id"])
        return Receipt(remote_id=tweet_id, url=f"https://x.com/i/web/status/{tweet_id}")

    def _create_tweet(self, text: str, media_id: str) -> Any:
        """tweepy's create_tweet, with the AI label that it has no argument for (4.14)."""
        body: dict[str, Any] = {"text": text, "media": {"media_ids": [media_id]}}
        if self.settings.made_with_ai:
            body["made_with_ai"] = True
        return self.client._make_request("POST", "/2/tweets", json=body, user_auth=True)

    def _media(self, png: bytes, post: Outgoing) -> str:
        """The image with its alt text set: the one an earlier attempt uploaded while X still
        has it (a day), else a new upload."""
        if post.media_id is not None:
            try:
                self._set_alt_text(post.media_id, post.alt_text)
                return post.media_id
            except (tweepy.BadRequest, tweepy.NotFound):
                pass  # expired: upload it again
        media_id = (self._upload_chunked(png, post) if post.image_path.suffix == ".gif" else
                     self._upload(png, post.post_id))
        post.on_media(media_id)
        self._set_alt_text(media_id, post.alt_text)
        return media_id

    def _set_alt_text(self, media_id: str, alt_text: str) -> None:
        self._post(METADATA_URL, json={"id": media_id,
                                       "metadata": {"alt_text": {"text": alt_text}}})

    def _earlier(self, post: Outgoing, caption: str) -> Receipt | None:
        earlier = self._find_earlier(post, caption)
        if earlier is not None:
            log.info("post %d: already on X as %s (posted by an earlier attempt)",
                     post.post_id, earlier.url)
        return earlier

    def _post(self, url: str, **kwargs: Any) -> dict:
        resp = self.client.session.post(url, auth=self.auth, **kwargs)
        _raise_for_status(resp)
        return resp.json()

    def _upload(self, png: bytes, post_id: int) -> str:
        data = self._post(UPLOAD_URL, data={"media_category": "tweet_image"},
                          files={"media": (f"face-{post_id}.png", png, "image/png")})["data"]
        media_id = str(data["id"])
        # Images are usually ready at once; X says so by leaving processing_info out.
        if (data.get("processing_info") or {}).get("state", "succeeded") != "succeeded":
            wait_for(lambda: self._processed(media_id), self.settings.processing_deadline_s,
                     "media processing on X", self.POLL_FIRST_S)
        return media_id

    def _upload_chunked(self, gif: bytes, post: Outgoing) -> str:
        """An animated post's GIF (X loops GIFs; it shows an MP4 as a video to click): X's
        chunked upload, INIT, APPEND each CHUNK, FINALIZE, then STATUS until processed."""
        if len(gif) > X_GIF_LIMIT:
            raise Permanent(f"the animation's GIF is {len(gif) / 2**20:.1f} MB; X takes at most "
                            f"{X_GIF_LIMIT / 2**20:.0f} MB: lower bot.animation.frames_per_seed "
                            "or bot.image.scale")

        def fields(**values: object) -> dict:
            # Multipart fields (no file name): a form body would have to be signed too.
            return {k: (None, str(v)) for k, v in values.items()}

        data = self._post(UPLOAD_URL, files=fields(
            command="INIT", media_type="image/gif", total_bytes=len(gif),
            media_category="tweet_gif"))["data"]
        media_id = str(data["id"])
        for index, start in enumerate(range(0, len(gif), self.CHUNK)):
            resp = self.client.session.post(UPLOAD_URL, auth=self.auth, files={
                **fields(command="APPEND", media_id=media_id, segment_index=index),
                "media": (f"face-{post.post_id}.gif", gif[start:start + self.CHUNK],
                          "application/octet-stream")})
            _raise_for_status(resp)  # X answers an APPEND with no body
        data = self._post(UPLOAD_URL, files=fields(command="FINALIZE",
                                                   media_id=media_id))["data"]
        if (data.get("processing_info") or {}).get("state", "succeeded") != "succeeded":
            wait_for(lambda: self._processed(media_id), self.settings.processing_deadline_s,
                     "media processing on X", self.POLL_FIRST_S)
        return media_id

    def _processed(self, media_id: str) -> bool | None:
        resp = self.client.session.get(UPLOAD_URL, auth=self.auth,
                                       params={"command": "STATUS", "media_id": media_id})
        _raise_for_status(resp)
        info = resp.json()["data"].get("processing_info") or {}
        state = info.get("state", "succeeded")
        if state == "failed":
            error = (info.get("error") or {}).get("message", "no reason given")
            raise Permanent(f"X could not process the image: {error}")
        return True if state == "succeeded" else None

    def _find_earlier(self, post: Outgoing, caption: str) -> Receipt | None:
        """The tweet an earlier attempt of this delivery posted, if any: ours, the same text,
        and not older than the post (so an identical caption from another post never
        matches)."""
        me = self.client.get_me().data
        tweets = self.client.get_users_tweets(
            me.id, max_results=10, exclude=["retweets", "replies"],
            tweet_fields=["created_at"], user_auth=True).data or []
        since, want = post.created_at - CLOCK_SKEW, _comparable(caption)
        for tweet in tweets:
            if tweet.created_at >= since and _comparable(tweet.text) == want:
                return Receipt(remote_id=str(tweet.id),
                               url=f"https://x.com/i/web/status/{tweet.id}")
        return None

    def _secret_names(self) -> str:
        s = self.settings
        return ", ".join(ref.describe() for ref in (s.api_key, s.api_key_secret,
                                                    s.access_token, s.access_token_secret))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """tweepy's and requests' exceptions as Retryable or Permanent, with what to do."""
        try:
            yield
        except tweepy.TooManyRequests as e:
            wait = max(0.0, e.reset_time - time.time()) if e.reset_time else None
            raise RateLimited("X: rate limit reached"
                            + (f"; it resets in {wait:.0f} s" if wait is not None else ""),
                            wait) from None
        except tweepy.Unauthorized as e:
            raise Permanent(
                f"X refused the credentials (HTTP 401: {_message(e)}); check your X "
                f"credentials ({self._secret_names()}): the app's API key and secret and the "
                "bot account's access token and secret, OAuth 1.0a, from the developer "
                "portal") from None
        except tweepy.Forbidden as e:
            raise Permanent(
                f"X refused the request (HTTP 403: {_message(e)}); check that the app has "
                "Read and Write permission (regenerate the access token and secret after "
                "changing it) and that the account may post") from None
        except tweepy.HTTPException as e:
            raise error_for_status(e.response.status_code, f"{_message(e)} (X)") from None
        except requests.RequestException as e:  # connection refused, DNS, timeouts
            raise Retryable(f"no answer from X: {e}") from None
