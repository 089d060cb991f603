"""X's endpoints that the X channel uses, played by `responses` callbacks (tweepy hard-codes
its host): the real tweepy client and our own v2 media requests go through them, each request's
OAuth 1.0a signature checked.

`fail(...)` scripts an error; `fail(..., after_work=True)` does the work first (a tweet stored,
then a 500).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
from datetime import datetime, timezone
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import responses
from oauthlib.oauth1.rfc5849 import signature as oauth_signature
from oauthlib.oauth1.rfc5849.utils import escape

from bot.channels.twitter import TwitterChannel
from fake_mastodon import parse_multipart

SECRETS = {"X_API_KEY": "xkey-0f3b9d2a", "X_API_KEY_SECRET": "xkeysecret-7e61c05b94",
           "X_ACCESS_TOKEN": "123-xtoken-a8d2e4", "X_ACCESS_TOKEN_SECRET": "xtoksecret-c3b71f"}
ME = {"id": "2244994945", "name": "Waifu faces", "username": "waifufaces"}
UNAUTHORIZED = {"title": "Unauthorized", "type": "about:blank", "status": 401,
                "detail": "Unauthorized"}
DUPLICATE = {"detail": "You are not allowed to create a Tweet with duplicate content.",
             "type": "about:blank", "title": "Forbidden", "status": 403}



class FakeX:
    """X's endpoints that the channel uses, as `responses` callbacks: checks every request's
    OAuth 1.0a signature against the expected secrets (401 otherwise), keeps uploaded media
    and tweets, refuses duplicate text like X does. `fail(...)` scripts errors."""

    def __init__(self, rsps: responses.RequestsMock):
        self.rsps = rsps
        self.media: dict[str, dict] = {}
        self.tweets: list[dict] = []  # newest last
        self.calls: list[tuple[str, str]] = []
        self.faults: list[tuple[str, str, object, bool]] = []
        self.processing_polls = 0
        self.gif_processing_polls = 2
        self.uploads: dict[str, dict] = {}  # chunked uploads in progress
        self._ids = itertools.count(1_860_000_000_000_000_001)
        for method, url, handler in [
                ("POST", "https://api.x.com/2/media/upload", self._upload),
                ("GET", "https://api.x.com/2/media/upload", self._status),
                ("POST", "https://api.x.com/2/media/metadata", self._metadata),
                ("POST", "https://api.twitter.com/2/tweets", self._tweet),
                ("GET", "https://api.twitter.com/2/users/me", self._me),
                ("GET", re.compile(r"https://api\.twitter\.com/2/users/\d+/tweets"),
                 self._timeline)]:
            rsps.add_callback(method, url, callback=self._wrap(handler))

    def fail(self, method: str, path: str, outcome, after_work: bool = False) -> None:
        """The next `method` request to `path` gets `outcome`: (status, json, headers), or an
        exception to raise (a timeout); with `after_work`, once the request has been done."""
        self.faults.append((method, path, outcome, after_work))

    def seen(self, method: str, path: str) -> list[str]:
        return [p for m, p in self.calls if m == method and p == path]

    def _wrap(self, handler):
        def callback(request):
            path = urlsplit(request.url).path
            self.calls.append((request.method, path))
            for i, (method, fpath, outcome, after_work) in enumerate(self.faults):
                if (method, fpath) == (request.method, path):
                    del self.faults[i]
                    if after_work and _signed_correctly(request):
                        handler(request)
                    if isinstance(outcome, Exception):
                        raise outcome
                    status, body, headers = outcome
                    return status, headers, json.dumps(body)
            if not _signed_correctly(request):
                return 401, {}, json.dumps(UNAUTHORIZED)
            status, body = handler(request)
            if body is None:  # 204: no content
                return status, {}, ""
            return status, {"content-type": "application/json"}, json.dumps(body)
        return callback

    def _upload(self, request):
        form, files = parse_multipart(request.headers["Content-Type"], request.body)
        if "command" in form:
            return self._chunked(form, files)
        assert form == {"media_category": ["tweet_image"]}
        name, ctype, data = files["media"]
        assert ctype == "image/png" and data.startswith(b"\x89PNG\r\n\x1a\n"), (name, ctype)
        media_id = str(next(self._ids))
        self.media[media_id] = {"data": data, "alt": None, "polls": self.processing_polls}
        info = {"processing_info": {"state": "pending", "check_after_secs": 1}} \
            if self.processing_polls else {}
        return 200, {"data": {"id": media_id, "media_key": f"3_{media_id}", "size": len(data),
                              "expires_after_secs": 86400, **info}}

    def _chunked(self, form, files):
        """INIT, APPEND, FINALIZE of a chunked upload (an animated GIF)."""
        command = form["command"][0]
        if command == "INIT":
            assert form["media_category"] == ["tweet_gif"], form
            assert form["media_type"] == ["image/gif"], form
            media_id = str(next(self._ids))
            self.uploads[media_id] = {"total": int(form["total_bytes"][0]), "chunks": {}}
            return 200, {"data": {"id": media_id, "media_key": f"3_{media_id}",
                                  "expires_after_secs": 86400}}
        upload = self.uploads[form["media_id"][0]]
        if command == "APPEND":
            assert "media" in files
            upload["chunks"][int(form["segment_index"][0])] = files["media"][2]
            return 204, None
        assert command == "FINALIZE", form
        chunks = upload["chunks"]
        data = b"".join(chunks[i] for i in sorted(chunks))
        assert sorted(chunks) == list(range(len(chunks))) and len(data) == upload["total"]
        assert data.startswith(b"GIF89a"), data[:6]
        media_id = form["media_id"][0]
        # X transcodes a GIF in the background: STATUS until it has succeeded.
        self.media[media_id] = {"data": data, "alt": None, "polls": self.gif_processing_polls}
        return 200, {"data": {"id": media_id, "size": len(data), "expires_after_secs": 86400,
                              "processing_info": {"state": "pending", "check_after_secs": 1}}}

    def _status(self, request):
        query = parse_qs(urlsplit(request.url).query)
        assert query["command"] == ["STATUS"]
        media = self.media[query["media_id"][0]]
        media["polls"] = max(0, media["polls"] - 1)
        state = "in_progress" if media["polls"] else "succeeded"
        return 200, {"data": {"id": query["media_id"][0], "processing_info": {"state": state}}}

    def _metadata(self, request):
        body = json.loads(request.body)
        assert set(body) == {"id", "metadata"} and set(body["metadata"]) == {"alt_text"}
        text = body["metadata"]["alt_text"]["text"]
        if body["id"] not in self.media:  # expired (X keeps media a day) or never uploaded
            return 404, {"title": "Not Found Error", "detail": "media not found"}
        if len(text) > 1000:
            return 400, {"title": "Invalid Request", "detail": "alt text too long"}
        self.media[body["id"]]["alt"] = text
        return 200, {"data": {"associated_metadata": True, "id": body["id"]}}

    def _tweet(self, request):
        body = json.loads(request.body)
        assert set(body) <= {"text", "media", "made_with_ai"} and "text" in body, body
        [media_id] = body["media"]["media_ids"]
        if media_id not in self.media:
            return 400, {"title": "Invalid Request", "detail": "Your media IDs are invalid."}
        assert self.media[media_id]["alt"] is not None  # alt text set before tweeting
        if any(t["text"] == body["text"] for t in self.tweets):
            return 403, DUPLICATE
        tweet = {"id": str(next(self._ids)), "text": body["text"], "media_ids": [media_id],
                 "made_with_ai": body.get("made_with_ai", False),
                 "created_at": datetime.now(timezone.utc)}
        self.tweets.append(tweet)
        return 201, {"data": {"id": tweet["id"], "text": f"{body['text']} https://t.co/x1",
                              "edit_history_tweet_ids": [tweet["id"]]}}

    def _me(self, request):
        return 200, {"data": ME}

    def _timeline(self, request):
        assert f"/2/users/{ME['id']}/tweets" in request.url
        return 200, {"data": [
            {"id": t["id"], "edit_history_tweet_ids": [t["id"]],
             "text": f"{t['text'].replace('&', '&amp;')} https://t.co/{t['id'][-4:]}",
             "created_at": t["created_at"].strftime("%Y-%m-%dT%H:%M:%S.000Z")}
            for t in reversed(self.tweets)][:10]}


def _signed_correctly(request) -> bool:
    """The HMAC-SHA1 signature over method, URL and query, with the expected secrets."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("OAuth "):
        return False
    url = urlsplit(request.url)
    params = oauth_signature.collect_parameters(uri_query=url.query, headers=request.headers)
    base = oauth_signature.signature_base_string(
        request.method, oauth_signature.base_string_uri(request.url),
        oauth_signature.normalize_parameters(params))
    key = f"{escape(SECRETS['X_API_KEY_SECRET'])}&{escape(SECRETS['X_ACCESS_TOKEN_SECRET'])}"
    expected = base64.b64encode(hmac.new(key.encode(), base.encode(), hashlib.sha1).digest())
    fields = dict(re.findall(r'(\w+)="([^"]*)"', header))
    return (fields.get("oauth_consumer_key") == SECRETS["X_API_KEY"]
            and fields.get("oauth_token") == SECRETS["X_ACCESS_TOKEN"]
            and unquote(fields.get("oauth_signature", "")) == expected.decode())



@pytest.fixture
def x(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(TwitterChannel, "POLL_FIRST_S", 0.01)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")  # the fake Mastodon, when a test has one
        yield FakeX(rsps)
