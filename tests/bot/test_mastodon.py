"""The Mastodon channel: the real Mastodon.py client against a local fake server
(fake_mastodon.py), through the real posting state machine and database."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from bot import posting, store
from bot.channels import build_channels
from bot.channels.mastodon import MastodonChannel, status_length
from bot.cli import main
from bot.config import load_settings
from bot.db import open_database
from bot.models import Delivery, Post, utcnow
from fake_mastodon import FakeMastodon, iso
import helpers
from helpers import make_due

TOKEN = "mtok-8c41d2f0a9e7b35e"


class Crash(BaseException):
    """Stands in for the process dying (kill -9) at a chosen point of a delivery."""


def crash(*args, **kwargs):
    raise Crash()


@pytest.fixture
def server():
    with FakeMastodon(token=TOKEN) as s:
        yield s


@pytest.fixture(autouse=True)
def token_env(monkeypatch):
    monkeypatch.setenv("MASTODON_ACCESS_TOKEN", TOKEN)
    monkeypatch.setattr(MastodonChannel, "POLL_FIRST_S", 0.01)


@pytest.fixture
def setup(write_config, server):
    """setup(bot={...}, **mastodon_settings) -> (settings, sessions, channels): the mastodon
    channel alone, pointed at the fake server."""
    def make(bot: dict | None = None, **mastodon):
        channel = {"instance_url": server.url, "request_timeout_s": 2, **mastodon}
        return helpers.bot_parts(load_settings(write_config(channels={"mastodon": channel},
                                                            **(bot or {}))))
    return make


def delivery(sessions, post_id: int = 1, channel: str = "mastodon") -> Delivery:
    return helpers.delivery(sessions, post_id, channel)


def test_posts_the_image_with_alt_text_and_the_channel_settings(setup, server):
    settings, sessions, channels = setup(visibility="public", sensitive=True,
                                         spoiler_text="AI art", language="de")
    post_id = posting.post_once(sessions, settings, channels)

    d = delivery(sessions, post_id)
    assert (d.state, d.attempts, d.last_error) == ("posted", 1, None)
    [status] = server.statuses
    assert (d.remote_id, d.remote_url) == (status["id"], status["url"])
    with sessions() as s:
        post = store.post(s, post_id)
    [upload] = server.seen("POST", "/api/v2/media")
    name, ctype, data = upload.files["file"]
    assert ctype == "image/png" and name == f"face-{post_id}.png"
    assert helpers.is_enlarged(data, settings.data_dir / post.image_path)  # 512x512
    assert upload.form == {"description": [post.alt_text]}
    assert upload.headers["Authorization"] == f"Bearer {TOKEN}"
    [sent] = server.seen("POST", "/api/v1/statuses")
    assert sent.form == {"status": [post.caption], "media_ids[]": [status["media_attachments"][0]
                                                                  ["id"]],
                         "visibility": ["public"], "sensitive": ["1"],
                         "spoiler_text": ["AI art"], "language": ["de"]}
    assert sent.headers["Idempotency-Key"] == d.idempotency_key
    assert not server.seen("GET", "/api/v1/media")  # answered 200: nothing to wait for


def test_waits_for_media_processing(setup, server):
    server.processing_polls = 2  # upload answers 202, then two polls 206, then 200
    settings, sessions, channels = setup()
    posting.post_once(sessions, settings, channels)

    assert delivery(sessions).state == "posted"
    assert len(server.seen("GET", "/api/v1/media/")) == 3
    [sent] = server.seen("POST", "/api/v1/statuses")
    # the defaults: unlisted, English, no content warning, not sensitive
    assert sent.form["visibility"] == ["unlisted"] and sent.form["language"] == ["en"]
    assert sent.form["sensitive"] == ["0"] and "spoiler_text" not in sent.form


def test_media_still_processing_at_the_deadline_is_retried(setup, server):
    server.processing_polls = 10**6
    settings, sessions, channels = setup(processing_deadline_s=0.2)
    posting.post_once(sessions, settings, channels)

    d = delivery(sessions)
    assert (d.state, d.attempts) == ("pending", 1)
    assert d.last_error == (f"media processing on {server.url[7:]}: still not done after 0.2 s")
    assert server.statuses == []


def test_rate_limit_waits_for_the_reset_then_posts(setup, server):
    server.rate_limit("POST", "/api/v1/statuses", reset_in_s=600)
    settings, sessions, channels = setup()
    before = utcnow()
    posting.post_once(sessions, settings, channels)

    d = delivery(sessions)
    assert d.state == "pending" and "rate limit reached; it resets in" in d.last_error
    assert d.next_attempt_at > before + timedelta(seconds=590)  # the reset, not 30 s backoff
    assert posting.deliver_pending(sessions, settings, channels) == 0  # not due yet
    make_due(sessions)
    posting.deliver_pending(sessions, settings, channels)
    d = delivery(sessions)
    assert (d.state, d.attempts) == ("posted", 1)  # the 429 did not count as an attempt
    assert len(server.statuses) == 1


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/api/v2/instance", 502), ("POST", "/api/v2/media", 503),
    ("POST", "/api/v1/statuses", 500)])
def test_server_error_is_retried_then_posts(setup, server, method, path, status):
    server.fail(method, path, status, "try later")
    settings, sessions, channels = setup()
    posting.post_once(sessions, settings, channels)

    d = delivery(sessions)
    assert d.state == "pending" and d.last_error.startswith(f"HTTP {status}: try later")
    make_due(sessions)
    posting.deliver_pending(sessions, settings, channels)
    assert delivery(sessions).state == "posted"
    assert len(server.statuses) == 1


def test_timeout_then_the_same_idempotency_key_gets_the_same_status(setup, server):
    # The server posts, but its answer comes after the client has given up.
    server.delay("POST", "/api/v1/statuses", seconds=1.5)
    settings, sessions, channels = setup(request_timeout_s=0.5)
    posting.post_once(sessions, settings, channels)

    d = delivery(sessions)
    assert d.state == "pending" and d.last_error.startswith(f"no answer from {server.url[7:]}")
    assert "timed out" in d.last_error
    server.settle()
    [status] = server.statuses  # it did post
    make_due(sessions)
    posting.deliver_pending(sessions, settings, channels)

    d = delivery(sessions)
    assert (d.state, d.remote_id) == ("posted", status["id"])
    assert len(server.statuses) == 1
    keys = {r.headers["Idempotency-Key"] for r in server.seen("POST", "/api/v1/statuses")}
    assert keys == {d.idempotency_key}


def test_bad_token_fails_at_once_and_says_what_to_check(setup, server, monkeypatch):
    monkeypatch.setenv("MASTODON_ACCESS_TOKEN", "revoked-token")
    settings, sessions, channels = setup()
    posting.post_once(sessions, settings, channels)
    posting.deliver_pending(sessions, settings, channels)

    d = delivery(sessions)
    assert (d.state, d.attempts) == ("failed", 1)
    assert d.last_error.startswith(f"{server.url[7:]} refused the access token (HTTP 401: The "
                                   "access token is invalid); check your access token "
                                   "($MASTODON_ACCESS_TOKEN)")
    assert "write:media write:statuses read:accounts" in d.last_error
    assert len(server.authed_requests) == 1  # no retry storm


def test_rejected_text_fails_with_the_servers_message(setup, server):
    server.fail("POST", "/api/v1/statuses", 422, "Validation failed: Text is not allowed")
    settings, sessions, channels = setup()
    posting.post_once(sessions, settings, channels)

    d = delivery(sessions)
    assert (d.state, d.attempts) == ("failed", 1)
    assert d.last_error == (f"HTTP 422: Validation failed: Text is not allowed "
                            f"({server.url[7:]})")


@pytest.mark.parametrize("instance, bot, expected", [
    ({"max_characters": 50}, {}, "the caption is {n} characters (content warning included); "
                                 "{host} allows 50: shorten the caption template"),
    ({"description_limit": 20}, {},
     "the alt text is {a} characters; {host} allows 20: shorten the alt_text template"),
    # No /api/v2/instance and no limits stated: Mastodon's defaults (1500 for alt text).
    ({"instance_v2": False, "description_limit": None}, {"alt_text": "x" * 1500 + " {seed}"},
     "the alt text is {a} characters; {host} allows 1500: shorten the alt_text template"),
], ids=["caption", "alt-text", "defaults"])
def test_instance_limits_are_checked_before_uploading(setup, server, instance, bot, expected):
    for key, value in instance.items():
        setattr(server, key, value)
    settings, sessions, channels = setup(bot=bot)
    post_id = posting.post_once(sessions, settings, channels)

    with sessions() as s:
        post = store.post(s, post_id)
    d = delivery(sessions)
    assert d.state == "failed"
    assert d.last_error == expected.format(n=len(post.caption), a=len(post.alt_text),
                                           host=server.url[7:])
    assert not server.seen("POST", "/api/v2/media")


def test_status_length_counts_links_and_content_warning_like_mastodon():
    assert status_length("see https://example.com/a/very/long/path/indeed", "") == 4 + 23
    assert status_length("hi", "cw") == 4


def test_crash_between_upload_and_status_then_restart_posts_once(setup, server, monkeypatch):
    settings, sessions, channels = setup()
    monkeypatch.setattr(channels["mastodon"].api, "status_post", crash)
    with pytest.raises(Crash):
        posting.post_once(sessions, settings, channels)
    assert len(server.seen("POST", "/api/v2/media")) == 1 and server.statuses == []

    restarted = open_database(settings.database_url)  # a new process, in effect
    posting.deliver_pending(restarted, settings, build_channels(settings.channels,
                                                                settings.data_dir))
    d = delivery(restarted)
    [status] = server.statuses
    assert (d.state, d.attempts, d.remote_id) == ("posted", 2, status["id"])


def _crash_after_posting(monkeypatch, channel) -> None:
    real = channel.api.status_post

    def post_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise Crash()
    monkeypatch.setattr(channel.api, "status_post", post_then_die)


@pytest.mark.parametrize("hours_down", [0, 2])
def test_crash_after_the_status_then_restart_records_it_once(setup, server, monkeypatch,
                                                             hours_down):
    settings, sessions, channels = setup()
    _crash_after_posting(monkeypatch, channels["mastodon"])
    with pytest.raises(Crash):
        posting.post_once(sessions, settings, channels)
    [status] = server.statuses
    if hours_down:  # the server has forgotten the key: only a look-up can tell
        server.forget_idempotency_keys()
        with sessions.begin() as s:
            s.execute(update(Post).values(created_at=utcnow() - timedelta(hours=hours_down)))

    restarted = open_database(settings.database_url)
    posting.deliver_pending(restarted, settings, build_channels(settings.channels,
                                                                settings.data_dir))
    d = delivery(restarted)
    assert (d.state, d.remote_id, d.remote_url) == ("posted", status["id"], status["url"])
    assert len(server.statuses) == 1
    # The status request went out: the restart looks first, whatever the key's age.
    assert len(server.seen("GET", "/api/v1/accounts/")) == 2
    assert len(server.seen("POST", "/api/v1/statuses")) == 1


def test_look_up_never_takes_an_older_post_with_the_same_caption(setup, server, monkeypatch):
    settings, sessions, channels = setup(bot={"caption": "Today's face"})
    posting.post_once(sessions, settings, channels)  # post 1, posted
    monkeypatch.setattr(channels["mastodon"].api, "status_post", crash)
    with pytest.raises(Crash):
        posting.post_once(sessions, settings, channels)  # post 2 dies before its status
    # Restarted hours later: post 1's status is older than post 2, whose key is long gone.
    three_hours_ago = utcnow() - timedelta(hours=3)
    with sessions.begin() as s:
        s.execute(update(Post).where(Post.id == 1).values(created_at=three_hours_ago))
        s.execute(update(Post).where(Post.id == 2)
                  .values(created_at=utcnow() - timedelta(hours=2)))
    server.statuses[0]["created_at"] = iso(three_hours_ago)
    server.forget_idempotency_keys()

    restarted = open_database(settings.database_url)
    posting.deliver_pending(restarted, settings, build_channels(settings.channels,
                                                                settings.data_dir))
    assert len(server.statuses) == 2
    assert delivery(restarted, 2).remote_id == server.statuses[1]["id"]


def test_unreachable_server_is_retryable_not_a_recursion_error(setup, caplog):
    settings, sessions, channels = setup(instance_url="http://127.0.0.1:9")  # nothing there
    posting.post_once(sessions, settings, channels)
    d = delivery(sessions)
    assert d.state == "pending" and d.last_error.startswith("no answer from 127.0.0.1:9")
    assert "RecursionError" not in caplog.text and "unexpected error" not in caplog.text


def test_secrets_stay_out_of_logs_and_database(server, write_config, tmp_path, caplog):
    (tmp_path / "bad-token").write_text("wrong-secret-4e1a99\n")
    channels_cfg = {
        "mastodon": {"instance_url": server.url},
        "spare": {"type": "mastodon", "instance_url": server.url,
                  "access_token": {"file": "bad-token"}}}
    settings, sessions, channels = helpers.bot_parts(load_settings(write_config(
        channels=channels_cfg)))
    with caplog.at_level(logging.DEBUG):
        posting.post_once(sessions, settings, channels)
    assert delivery(sessions).state == "posted"  # one failing channel never blocks another
    assert delivery(sessions, channel="spare").state == "failed"
    assert "refused the access token" in caplog.text and "the file " in caplog.text
    for secret in (TOKEN, "wrong-secret-4e1a99"):
        assert secret not in caplog.text
        for path in settings.data_dir.rglob("*"):  # the database (and its WAL), images
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path


def test_check_shows_who_the_bot_posts_as(write_config, server, capsys, restore_logging):
    cfg = write_config(channels={"outbox": {}, "mastodon": {"instance_url": server.url}})
    assert main(["--config", str(cfg), "check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("outbox: writes to ") and out[0].endswith("index.html)")
    assert out[1] == (f"mastodon: posts as @faces@{server.url[7:]} (Waifu faces), "
                      "visibility unlisted")
    assert server.statuses == [] and not server.seen("POST", "/api/v2/media")


@pytest.mark.parametrize("scopes, missing", [
    # broad scopes; a server that does not list them; one without the endpoint
    (["read", "write"], None), ([], None), (None, None),
    (["read"], "write:media write:statuses"), (["write:statuses", "read"], "write:media")])
def test_check_names_missing_scopes(write_config, server, capsys, restore_logging, scopes,
                                    missing):
    server.scopes = scopes
    cfg = write_config(channels={"mastodon": {"instance_url": server.url}})
    rc = main(["--config", str(cfg), "check"])
    err = capsys.readouterr().err
    if missing is None:
        assert rc == 0 and err == ""
    else:
        assert rc == 2 and err == (f"error: mastodon: the access token's application lacks the "
                                   f"scopes {missing}: create a token with write:media "
                                   "write:statuses read:accounts\n")


def test_check_reports_each_broken_channel_on_one_line(write_config, server, capsys,
                                                       monkeypatch, restore_logging):
    monkeypatch.setenv("MASTODON_ACCESS_TOKEN", "revoked-token")
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    cfg = write_config(channels={
        "mastodon": {"instance_url": server.url},
        "other": {"type": "mastodon", "instance_url": server.url,
                  "access_token": {"env": "NO_SUCH_TOKEN"}}})
    assert main(["--config", str(cfg), "check"]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith("error: mastodon: ") and "check your access token" in errors[0]
    assert errors[1].startswith("error: other: ") and "NO_SUCH_TOKEN" in errors[1]
    assert len(errors) == 2 and "revoked-token" not in captured.err + captured.out


def run_daemon_until(settings, done) -> None:
    """The real daemon, in this process, stopped by SIGTERM (what systemd sends) once `done()`
    is true or 120 s have passed (a loaded CI machine starts the render worker slowly)."""
    from bot.scheduler import run_daemon
    finished = threading.Event()

    def stop_when_done():
        deadline = time.monotonic() + 120
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not finished.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    stopper = threading.Thread(target=stop_when_done)
    stopper.start()
    try:
        run_daemon(settings)  # returns once SIGTERM has stopped it
    finally:
        finished.set()
        stopper.join()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _states(settings) -> set[str]:
    with open_database(settings.database_url)() as s:
        return {d.state for p in store.recent_posts(s, 10) for d in p.deliveries}


def test_the_daemon_posts_to_mastodon_on_schedule(setup, server):
    settings, _, _ = setup(bot={"schedule": {"interval_minutes": 0.005,  # 0.3 s
                                             "post_at_start": True}})
    run_daemon_until(settings, lambda: len(server.statuses) >= 2)
    assert len(server.statuses) >= 2
    assert _states(settings) == {"posted"}


def test_the_daemon_first_finishes_what_a_crash_left(setup, server, monkeypatch):
    settings, sessions, channels = setup(bot={"schedule": {"interval_minutes": 600,
                                                           "post_at_start": False}})
    monkeypatch.setattr(channels["mastodon"].api, "status_post", crash)
    with pytest.raises(Crash):
        posting.post_once(sessions, settings, channels)
    assert _states(settings) == {"pending"}

    # No post is due for hours, and the deliver tick is a minute away: only the start-up
    # reconciliation can deliver it in time.
    run_daemon_until(settings, lambda: len(server.statuses) >= 1)
    assert len(server.statuses) == 1 and _states(settings) == {"posted"}
