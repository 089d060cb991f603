"""A local stand-in for a Mastodon server: the endpoints the bot uses, over real HTTP on
127.0.0.1, as strict as Mastodon where the bot could get something wrong (bearer token,
multipart fields, media processing, text limits, idempotency), so that the real Mastodon.py
client can be tested against it.

Faults are scripted per test: `fail(...)` answers the next matching requests with an error
(429 with its X-RateLimit-Reset, 5xx, 422, ...), or with `after_work=True` does the work first
(a status stored, then a 500); `delay(...)` does the work and then answers late, like a server
whose answer is lost to a client timeout. `chaos = Chaos(...)` draws a random fault for every
request instead (bench/soak.py): errors, commit-then-500, dropped connections, slow answers,
429 windows (counting requests that arrive in a window already announced), and media that
takes a few polls to process.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import random
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

VISIBILITIES = {"public", "unlisted", "private", "direct"}
IMAGE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/gif"}
VIDEO_TYPES = {"video/mp4", "video/webm", "video/quicktime"}
ACCOUNT = {"id": "109", "username": "faces", "acct": "faces", "display_name": "Waifu faces",
           "bot": True, "locked": False, "note": "", "avatar": "", "header": "",
           "followers_count": 0, "following_count": 0, "statuses_count": 0}


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_multipart(content_type: str, body: bytes) -> tuple[dict, dict]:
    """(form fields, files) of a multipart/form-data body; files map a field to
    (file name, content type, bytes)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    assert match, f"no boundary in {content_type!r}"
    form: dict[str, list[str]] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    for part in body.split(b"--" + match.group(1).encode())[1:-1]:
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        disposition = headers["Content-Disposition"]
        name = re.search(r'\bname="([^"]*)"', disposition).group(1)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if filename:
            files[name] = (filename.group(1), headers.get("Content-Type", ""), data)
        else:
            form.setdefault(name, []).append(data.decode())
    return form, files


@dataclass
class Seen:
    """One request, as the server saw it."""
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    files: dict[str, tuple[str, str, bytes]]
    fault: str = ""  # the chaos fault it got, if any


@dataclass
class Fault:
    method: str
    path: str  # a prefix
    status: int | None  # None: do the work, answer late
    error: str
    headers: dict[str, str]
    delay: float
    times: int
    after_work: bool = False  # do what was asked, then answer the error anyway
    drop: bool = False  # do what was asked, then close the connection without an answer


@dataclass
class Chaos:
    """Probabilities of a random fault, drawn for each request."""
    rng: random.Random = field(default_factory=random.Random)
    error: float = 0.05  # 503 without doing anything
    commit_then_500: float = 0.03  # the work done, then a 500
    drop: float = 0.03  # the work done, then the connection closed without an answer
    slow: float = 0.02  # the work done, the answer `slow_s` late (past the client's timeout)
    window: float = 0.01  # a 429 rate-limit window of window_s opens
    slow_s: float = 1.5
    window_s: tuple[float, float] = (1.0, 4.0)
    processing_polls: int = 2  # an upload needs up to this many polls (206) before it is ready


@dataclass
class Media:
    id: str
    description: str | None
    polls_left: int  # 206 answers still to give before it is processed
    data: bytes
    status_id: str | None = None
    kind: str = "image"  # "gifv": a video, or a GIF (Mastodon turns GIFs into videos)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def _any(self) -> None:
        self.server.fake._handle(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request still sleeping must not block the end

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client killed or gone
            super().handle_error(request, client_address)


class FakeMastodon:
    def __init__(self, token: str = "fake-token", version: str = "4.3.2",
                 max_characters: int = 500, description_limit: int | None = 1500,
                 processing_polls: int = 0, instance_v2: bool = True, media_v2: bool = True):
        self.token = token
        self.version = version
        self.max_characters = max_characters
        self.description_limit = description_limit  # None: the instance does not say
        self.processing_polls = processing_polls
        self.instance_v2 = instance_v2
        self.media_v2 = media_v2  # False: no POST /api/v2/media (older servers, Pixelfed)
        # The token's application's scopes; None: no such endpoint (not Mastodon)
        self.scopes: list[str] | None = ["write:media", "write:statuses", "read:accounts"]
        self.account = dict(ACCOUNT)  # what verify_credentials shows; update_credentials edits
        self.image_size_limit = 16 * 1024 * 1024
        self.video_size_limit = 99 * 1024 * 1024
        self.video_processing_polls = 2
        self.media: dict[str, Media] = {}
        self.statuses: list[dict] = []  # the bot's own, oldest first
        self.others: dict[str, dict] = {}  # other accounts' statuses (mentions), by id
        self.accounts: dict[str, dict] = {}  # other accounts, by acct
        self.notifications: list[dict] = []  # oldest first
        self.follows: set[str] = set()  # ids of the accounts the bot's account follows
        self.keys: dict[str, str] = {}  # Idempotency-Key -> status id
        self.requests: list[Seen] = []
        self.faults: list[Fault] = []
        self._ids = itertools.count(110_000_000_000_000_001)
        self._lock = threading.Lock()
        self._in_flight = 0
        self.chaos: Chaos | None = None
        self.injected: Counter[str] = Counter()  # chaos faults, by kind
        self.window_until = 0.0  # the current 429 window's end (time.time())
        self.into_window = 0  # requests that came while a window was announced

    # ---- running
    def __enter__(self) -> FakeMastodon:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)  # polls for shutdown every 50 ms
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- scripting
    def fail(self, method: str, path: str, status: int, error: str = "", times: int = 1,
             headers: dict[str, str] | None = None, delay: float = 0.0,
             after_work: bool = False) -> None:
        self.faults.append(Fault(method, path, status, error or f"HTTP {status}",
                                 headers or {}, delay, times, after_work))

    def rate_limit(self, method: str, path: str, reset_in_s: float, times: int = 1) -> None:
        reset = iso(datetime.now(timezone.utc) + timedelta(seconds=reset_in_s))
        self.fail(method, path, 429, "Too many requests", times,
                  {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset})

    def delay(self, method: str, path: str, seconds: float, times: int = 1) -> None:
        self.faults.append(Fault(method, path, None, "", {}, seconds, times))

    def mention(self, acct: str, text: str = "draw me", visibility: str = "public",
                bot: bool = False, uri: str | None = None) -> dict:
        """Someone mentions the bot: their status "@faces <text>" and a mention notification.
        `acct` is "alice" (this server) or "alice@example.org"; returns the status."""
        with self._lock:
            username, _, domain = acct.partition("@")
            account = self.accounts.setdefault(acct, {
                "id": str(next(self._ids)), "username": username, "acct": acct,
                "display_name": username.title(), "bot": bot, "locked": False,
                "uri": uri or f"https://{domain or '127.0.0.1'}/users/{username}",
                "url": f"https://{domain or '127.0.0.1'}/@{username}", "note": "",
                "avatar": "", "header": "", "followers_count": 0, "following_count": 0,
                "statuses_count": 1})
            status = self._status(account, f"@{ACCOUNT['username']} {text}", visibility, [])
            self.others[status["id"]] = status
            self.notifications.append({"id": str(next(self._ids)), "type": "mention",
                                       "created_at": status["created_at"], "account": account,
                                       "status": status})
            return status

    def replies_to(self, status_id: str) -> list[dict]:
        """The bot's statuses that answer `status_id`."""
        return [s for s in self.statuses if s["in_reply_to_id"] == status_id]

    def forget_idempotency_keys(self) -> None:
        """What Mastodon does an hour after a post."""
        self.keys.clear()

    def settle(self, timeout: float = 10) -> None:
        """Wait until no request is being answered (a delayed one has finished)."""
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    def seen(self, method: str, path: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path)]

    # ---- serving
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self._in_flight += 1
        try:
            body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
            path, _, query = h.path.partition("?")
            ctype = h.headers.get("Content-Type", "")
            form: dict = {}
            files: dict = {}
            if ctype.startswith("multipart/form-data"):
                form, files = parse_multipart(ctype, body)
            elif ctype.startswith("application/x-www-form-urlencoded"):
                form = parse_qs(body.decode(), keep_blank_values=True)
            seen = Seen(h.command, path, dict(h.headers.items()),
                        parse_qs(query, keep_blank_values=True), form, files)
            with self._lock:
                self.requests.append(seen)
                fault = self._take_fault(seen) or self._chaos_fault(seen)
            headers: dict[str, str] = {}
            if fault is None or fault.status is None or fault.after_work:
                with self._lock:
                    status, payload = self._route(seen)
            if fault is not None:
                time.sleep(fault.delay)
                if fault.drop:
                    h.close_connection = True
                    return
                if fault.status is not None:
                    status, payload, headers = fault.status, {"error": fault.error}, fault.headers
            self._send(h, status, payload, headers)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _take_fault(self, seen: Seen) -> Fault | None:
        for f in self.faults:
            if f.method == seen.method and seen.path.startswith(f.path) and f.times > 0:
                f.times -= 1
                return f
        return None

    def _chaos_fault(self, seen: Seen) -> Fault | None:
        c = self.chaos
        if c is None:
            return None
        now = time.time()
        if now < self.window_until:  # announced by the 429 that opened it
            self.into_window += 1
            seen.fault = "into_window"
            return self._window_fault()
        draw = c.rng.random()
        for kind in ("error", "commit_then_500", "drop", "slow", "window"):
            if draw < getattr(c, kind):
                break
            draw -= getattr(c, kind)
        else:
            return None
        self.injected[kind] += 1
        seen.fault = kind
        if kind == "window":
            # Whole milliseconds, as X-RateLimit-Reset states it.
            self.window_until = math.ceil((now + c.rng.uniform(*c.window_s)) * 1000) / 1000
            return self._window_fault()
        return Fault("", "", None if kind in ("drop", "slow") else 503 if kind == "error" else 500,
                     "chaos", {}, c.slow_s if kind == "slow" else 0.0, 1,
                     after_work=kind == "commit_then_500", drop=kind == "drop")

    def _window_fault(self) -> Fault:
        reset = iso(datetime.fromtimestamp(self.window_until, timezone.utc))
        return Fault("", "", 429, "Too many requests",
                     {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}, 0.0, 1)

    def _send(self, h: BaseHTTPRequestHandler, status: int, payload: Any,
              extra: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Content-Length": str(len(data)),
                   "X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "299",
                   "X-RateLimit-Reset": iso(datetime.now(timezone.utc) + timedelta(minutes=5)),
                   **extra}
        try:
            h.send_response(status)  # adds Date, which Mastodon.py uses to correct for skew
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout test)

    def _route(self, r: Seen) -> tuple[int, Any]:
        m, p = r.method, r.path.rstrip("/")
        if m == "GET" and p == "/api/v1/instance":
            return 200, self._instance_v1()
        if m == "GET" and p == "/api/v2/instance":
            return (200, self._instance_v2()) if self.instance_v2 else (404, {
                "error": "Record not found"})
        if r.headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"error": "The access token is invalid"}
        if m == "POST" and (p == "/api/v1/media" or p == "/api/v2/media" and self.media_v2):
            return self._upload(r, synchronous=p == "/api/v1/media")
        if m == "GET" and (match := re.fullmatch(r"/api/v1/media/(\d+)", p)):
            return self._poll(match.group(1))
        if m == "POST" and p == "/api/v1/statuses":
            return self._post_status(r)
        if m == "GET" and p == "/api/v1/accounts/verify_credentials":
            return 200, self.account
        if m == "PATCH" and p == "/api/v1/accounts/update_credentials":
            return self._update_credentials(r)
        if m == "GET" and p == "/api/v1/apps/verify_credentials" and self.scopes is not None:
            return 200, {"name": "waifu-gen", "website": None, "scopes": self.scopes}
        if m == "GET" and p == "/api/v1/notifications":
            return self._notifications(r)
        if m == "GET" and p == "/api/v1/accounts/relationships":
            return 200, [{"id": i, "following": i in self.follows, "followed_by": False,
                          "blocking": False, "muting": False, "requested": False}
                         for i in r.query.get("id[]", [])]
        if m == "GET" and (match := re.fullmatch(r"/api/v1/statuses/(\d+)/context", p)):
            return self._context(match.group(1))
        if m == "GET" and p == f"/api/v1/accounts/{ACCOUNT['id']}/statuses":
            limit = int(r.query.get("limit", ["20"])[0])
            return 200, list(reversed(self.statuses))[:limit]
        return 404, {"error": "Record not found"}

    def _notifications(self, r: Seen) -> tuple[int, Any]:
        if self.scopes is not None and not {"read", "read:notifications"} & set(self.scopes):
            return 403, {"error": "This action is outside the authorized scopes"}
        q = {k: v[0] for k, v in r.query.items() if k != "types[]"}
        types = r.query.get("types[]")
        found = [n for n in reversed(self.notifications)  # newest first, as Mastodon pages
                 if (types is None or n["type"] in types)
                 and ("since_id" not in q or int(n["id"]) > int(q["since_id"]))
                 and ("max_id" not in q or int(n["id"]) < int(q["max_id"]))]
        return 200, found[:min(int(q.get("limit", 40)), 80)]

    def _context(self, status_id: str) -> tuple[int, Any]:
        everything = {**self.others, **{s["id"]: s for s in self.statuses}}
        if status_id not in everything:
            return 404, {"error": "Record not found"}
        below, ids = [], {status_id}
        for s in sorted(everything.values(), key=lambda s: int(s["id"])):
            if s["in_reply_to_id"] in ids:
                below.append(s)
                ids.add(s["id"])
        return 200, {"ancestors": [], "descendants": below}

    def _status(self, account: dict, text: str, visibility: str, attached: list[Media],
                in_reply_to: dict | None = None) -> dict:
        """A status as Mastodon shows it: "@acct" mentions become links showing @username."""
        status_id = str(next(self._ids))
        for media in attached:
            media.status_id = status_id
        known = {ACCOUNT["acct"]: ACCOUNT, **self.accounts}
        mentions = [known[acct] for acct in re.findall(r"(?<!\S)@([\w.]+(?:@[\w.-]+)?)", text)
                    if acct in known]
        content = html.escape(text)
        for a in mentions:
            content = content.replace(
                f"@{a['acct']}", f'<span class="h-card"><a href="{a.get("url", "")}" class="u-url '
                f'mention">@<span>{a["username"]}</span></a></span>', 1)
        paragraphs = content.split("\n\n")
        return {
            "id": status_id, "created_at": iso(datetime.now(timezone.utc)),
            "url": f"{self.url}/@{account['username']}/{status_id}",
            "uri": f"{self.url}/users/{account['username']}/statuses/{status_id}",
            "content": "".join(f"<p>{p.replace(chr(10), '<br />')}</p>" for p in paragraphs),
            "visibility": visibility, "sensitive": False, "spoiler_text": "", "language": None,
            "in_reply_to_id": in_reply_to and in_reply_to["id"],
            "in_reply_to_account_id": in_reply_to and in_reply_to["account"]["id"],
            "media_attachments": [self._media_json(m) for m in attached],
            "account": account, "reblog": None,
            "mentions": [{"id": a["id"], "username": a["username"], "acct": a["acct"],
                          "url": a.get("url", "")} for a in mentions],
            "tags": [], "emojis": [], "replies_count": 0, "reblogs_count": 0,
            "favourites_count": 0,
        }

    def _update_credentials(self, r: Seen) -> tuple[int, Any]:
        if self.scopes is not None and not {"write", "write:accounts"} & set(self.scopes):
            return 403, {"error": "This action is outside the authorized scopes"}
        if "bot" in r.form:  # Rails' booleans, as Mastodon.py sends them: "1" / "0"
            self.account["bot"] = r.form["bot"][0] in ("1", "true")
        return 200, self.account

    def _configuration(self) -> dict:
        media = {"supported_mime_types": sorted(IMAGE_TYPES | VIDEO_TYPES),
                 "video_size_limit": self.video_size_limit,
                 "image_size_limit": self.image_size_limit, "image_matrix_limit": 33177600}
        if self.description_limit is not None:
            media["description_limit"] = self.description_limit
        return {"statuses": {"max_characters": self.max_characters,
                             "max_media_attachments": 4, "characters_reserved_per_url": 23},
                "media_attachments": media}

    def _instance_v1(self) -> dict:
        return {"uri": "127.0.0.1", "title": "Fake", "version": self.version,
                "configuration": self._configuration()}

    def _instance_v2(self) -> dict:
        return {"domain": "127.0.0.1", "title": "Fake", "version": self.version,
                "api_versions": {"mastodon": 2}, "configuration": self._configuration()}

    def _media_json(self, media: Media) -> dict:
        ready = media.polls_left == 0
        url = f"{self.url}/system/media/{media.id}.png" if ready else None
        return {"id": media.id, "type": media.kind, "url": url, "preview_url": url,
                "remote_url": None, "description": media.description, "blurhash": None,
                "meta": {"original": {"width": 64, "height": 64}}}

    def _upload(self, r: Seen, synchronous: bool = False) -> tuple[int, Any]:
        if set(r.files) - {"file", "thumbnail"} or "file" not in r.files:
            return 422, {"error": "Validation failed: File can't be blank"}
        name, ctype, data = r.files["file"]
        if ctype not in IMAGE_TYPES | VIDEO_TYPES or not name:
            return 422, {"error": "Validation failed: File content type is invalid"}
        video = ctype in VIDEO_TYPES
        if len(data) > (self.video_size_limit if video else self.image_size_limit):
            return 422, {"error": "Validation failed: File file size must be less than "
                                  f"{99 if video else 16} MB"}
        if ctype == "video/mp4" and data[4:8] != b"ftyp":
            return 422, {"error": "Validation failed: File could not be processed"}
        if ctype == "image/png" and not data.startswith(b"\x89PNG\r\n\x1a\n"):
            return 422, {"error": "Validation failed: File could not be processed"}
        description = r.form.get("description", [None])[0]
        limit = self.description_limit or 1500
        if description is not None and len(description) > limit:
            return 422, {"error": f"Validation failed: Description is too long "
                                  f"(maximum is {limit} characters)"}
        # The v1 endpoint answers once the image is processed.
        polls = (self.chaos.rng.randint(0, self.chaos.processing_polls) if self.chaos
                 else self.processing_polls)
        if video and not synchronous:  # transcoded in the background: a few polls, always
            polls = max(polls, self.video_processing_polls)
        media = Media(str(next(self._ids)), description, 0 if synchronous else polls, data,
                      kind="gifv" if video or ctype == "image/gif" else "image")
        self.media[media.id] = media
        return (202 if media.polls_left else 200), self._media_json(media)

    def _poll(self, media_id: str) -> tuple[int, Any]:
        media = self.media.get(media_id)
        if media is None or media.status_id is not None:  # Mastodon shows unattached ones only
            return 404, {"error": "Record not found"}
        if media.polls_left:
            media.polls_left -= 1
            return 206, {**self._media_json(media), "url": None}
        return 200, self._media_json(media)

    def _post_status(self, r: Seen) -> tuple[int, Any]:
        key = r.headers.get("Idempotency-Key")
        if key in self.keys:
            return 200, next(s for s in self.statuses if s["id"] == self.keys[key])
        f = {k: v[0] for k, v in r.form.items() if k != "media_ids[]"}
        text, spoiler = f.get("status", ""), f.get("spoiler_text", "")
        media_ids = r.form.get("media_ids[]", [])
        visibility = f.get("visibility", "public")
        if visibility not in VISIBILITIES:
            return 422, {"error": "Validation failed: Visibility is not included in the list"}
        if "language" in f and not re.fullmatch(r"[a-z]{2,3}", f["language"]):
            return 422, {"error": "Validation failed: Language is not valid"}
        if not text and not media_ids:
            return 422, {"error": "Validation failed: Text can't be blank"}
        if len(re.sub(r"https?://\S+", "x" * 23, text)) + len(spoiler) > self.max_characters:
            return 422, {"error": "Validation failed: Text character limit of "
                                  f"{self.max_characters} exceeded"}
        if len(media_ids) > 4:
            return 422, {"error": "Validation failed: Cannot attach more than 4 files"}
        in_reply_to = None
        if "in_reply_to_id" in f:
            in_reply_to = self.others.get(f["in_reply_to_id"]) or next(
                (s for s in self.statuses if s["id"] == f["in_reply_to_id"]), None)
            if in_reply_to is None:
                return 404, {"error": "Record not found"}
        attached = []
        for mid in media_ids:
            media = self.media.get(mid)
            if media is None or media.status_id is not None:
                return 422, {"error": f"Validation failed: media {mid} cannot be attached"}
            if media.polls_left:
                return 422, {"error": "Cannot attach files that have not finished processing. "
                                      "Try again in a moment!"}
            attached.append(media)
        status = self._status(ACCOUNT, text, visibility, attached, in_reply_to)
        status.update(sensitive=f.get("sensitive", "0").lower() in ("1", "true"),
                      spoiler_text=spoiler, language=f.get("language"))
        self.statuses.append(status)
        if key:
            self.keys[key] = status["id"]
        return 200, status

    @property
    def authed_requests(self) -> list[Seen]:
        """Requests that presented a token (right or wrong): the ones a bad token costs."""
        return [r for r in self.requests if "Authorization" in r.headers
                and not r.path.startswith(("/api/v1/instance", "/api/v2/instance"))]
