"""The X channel: the real tweepy client and our v2 media upload, with X's endpoints played by
`responses` callbacks (tweepy hard-codes its host) that check the OAuth 1.0a signature and
the request bodies, through the real posting state machine and database."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
import requests

from bot import posting, store
from bot.channels import build_channels
from bot.channels.twitter import tweet_length
from bot.cli import main
from bot.config import load_settings
from bot.db import open_database
from bot.models import Delivery, utcnow
from bot.secret import RedactingFilter
from fake_mastodon import FakeMastodon
from fake_x import ME, UNAUTHORIZED, SECRETS, x  # noqa: F401 (x: a fixture)
import helpers
from helpers import make_due


class Crash(BaseException):
    """Stands in for the process dying (kill -9) at a chosen point of a delivery."""


def crash(*args, **kwargs):
    raise Crash()


@pytest.fixture
def setup(write_config):
    """setup(channels=None, bot=None, **twitter_settings) -> (settings, sessions, channels)."""
    def make(channels: dict | None = None, bot: dict | None = None, **twitter):
        channels = channels or {"twitter": {"request_timeout_s": 2, **twitter}}
        return helpers.bot_parts(load_settings(write_config(channels=channels, **(bot or {}))))
    return make


def delivery(sessions, post_id: int = 1, channel: str = "twitter") -> Delivery:
    return helpers.delivery(sessions, post_id, channel)


def test_posts_the_image_with_alt_text(setup, x):
    settings, sessions, channels = setup()
    post_id = posting.post_once(sessions, settings, channels)

    d = delivery(sessions, post_id)
    [tweet] = x.tweets
    assert (d.state, d.attempts, d.remote_id) == ("posted", 1, tweet["id"])
    assert d.remote_url == f"https://x.com/i/web/status/{tweet['id']}"
    with sessions() as s:
        post = store.post(s, post_id)
    [media_id] = tweet["media_ids"]
    assert helpers.is_enlarged(x.media[media_id]["data"], settings.data_dir / post.image_path)
    assert x.media[media_id]["alt"] == post.alt_text
    assert tweet["text"] == post.caption
    assert x.calls == [("POST", "/2/media/upload"), ("POST", "/2/media/metadata"),
                       ("POST", "/2/tweets")]  # every one signed, or it would have been 401


def test_requests_have_a_timeout(setup, x):
    settings, sessions, channels = setup(request_timeout_s=7)
    posting.post_once(sessions, settings, channels)
    # tweepy's own request (the tweet) included: it sends none of its own
    assert [call.request.req_kwargs["timeout"] for call in x.rsps.calls] == [7, 7, 7]


@pytest.mark.parametrize("strip, expected", [
    (True, "Face {seed}, more at"), (False, "Face {seed}, more at https://example.com/f/1")])
def test_links_are_kept_out_of_captions_by_default(setup, x, strip, expected):
    options = {} if strip else {"strip_links": False}
    settings, sessions, channels = setup(
        caption="Face {seed}, more at https://example.com/f/{post_number}", **options)
    post_id = posting.post_once(sessions, settings, channels)
    with sessions() as s:
        seed = store.post(s, post_id).seed
    assert x.tweets[0]["text"] == expected.format(seed=seed)


def test_rate_limit_waits_for_the_reset_then_posts(setup, x):
    reset = int(time.time()) + 900
    x.fail("POST", "/2/tweets", (429, {"title": "Too Many Requests", "detail": "Too Many "
                                       "Requests"}, {"x-rate-limit-reset": str(reset)}))
    settings, sessions, channels = setup()
    before = utcnow()
    posting.post_once(sessions, settings, channels)

    d = delivery(sessions)
    assert d.state == "pending" and "X: rate limit reached; it resets in" in d.last_error
    assert d.next_attempt_at > before + timedelta(seconds=880)
    make_due(sessions)
    posting.deliver_pending(sessions, settings, channels)
    assert delivery(sessions).state == "posted" and len(x.tweets) == 1


@pytest.mark.parametrize("method, path, outcome, error", [
    ("POST", "/2/media/upload", (503, {"title": "Service Unavailable"}, {}),
     "HTTP 503: Service Unavailable (X)"),
    ("POST", "/2/tweets", (500, {"title": "Internal Server Error"}, {}),
     "HTTP 500: Internal Server Error (X)"),
    ("POST", "/2/media/metadata", requests.exceptions.ReadTimeout("Read timed out."),
     "no answer from X: Read timed out."),
], ids=["upload-503", "tweet-500", "metadata-timeout"])
def test_server_errors_and_timeouts_are_retried_then_post(setup, x, method, path, outcome,
                                                          error):
    x.fail(method, path, outcome)
    settings, sessions, channels = setup()
    posting.post_once(sessions, settings, channels)

    d = delivery(sessions)
    assert (d.state, d.last_error) == ("pending", error)
    make_due(sessions)
    posting.deliver_pending(sessions, settings, channels)
    assert delivery(sessions).state == "posted" and len(x.tweets) == 1


def test_bad_credentials_fail_at_once_and_say_what_to_check(setup, x, monkeypatch):
    monkeypatch.setenv("X_API_KEY_SECRET", "regenerated-since")
    settings, sessions, channels = setup()
    posting.post_once(sessions, settings, channels)
    posting.deliver_pending(sessions, settings, channels)

    d = delivery(sessions)
    assert (d.state, d.attempts) == ("failed", 1)
    assert d.last_error.startswith(
        "X refused the credentials (HTTP 401: Unauthorized); check your X credentials "
        "($X_API_KEY, $X_API_KEY_SECRET, $X_ACCESS_TOKEN, $X_ACCESS_TOKEN_SECRET)")
    assert x.calls == [("POST", "/2/media/upload")]  # no retry storm


def test_forbidden_says_to_check_the_apps_permissions(setup, x):
    x.fail("POST", "/2/tweets", (403, {
        "title": "Forbidden", "status": 403, "detail": "You are not permitted to perform "
        "this action."}, {}))
    settings, sessions, channels = setup()
    posting.post_once(sessions, settings, channels)
    d = delivery(sessions)
    assert d.state == "failed" and "Read and Write permission" in d.last_error
    assert "You are not permitted to perform this action." in d.last_error


def test_a_duplicate_caption_on_a_first_attempt_fails_with_the_reason(setup, x):
    settings, sessions, channels = setup(caption="Today's face")
    posting.post_once(sessions, settings, channels)
    second = posting.post_once(sessions, settings, channels)

    d = delivery(sessions, second)
    assert d.state == "failed"
    assert d.last_error.startswith("X refused the text as a duplicate of a recent tweet")
    assert "keep {post_number} or {seed} in the caption template" in d.last_error
    assert len(x.tweets) == 1


def test_crash_after_the_tweet_then_restart_finds_it(setup, x, monkeypatch):
    settings, sessions, channels = setup(caption="Face #{post_number} & friends")
    real = channels["twitter"]._create_tweet

    def tweet_then_die(*args):
        real(*args)
        raise Crash()
    monkeypatch.setattr(channels["twitter"], "_create_tweet", tweet_then_die)
    with pytest.raises(Crash):
        posting.post_once(sessions, settings, channels)
    [tweet] = x.tweets

    restarted = open_database(settings.database_url)
    posting.deliver_pending(restarted, settings, build_channels(settings.channels,
                                                                settings.data_dir))
    d = delivery(restarted)
    assert (d.state, d.attempts, d.remote_id) == ("posted", 2, tweet["id"])
    assert len(x.tweets) == 1
    assert x.calls[-3:] == [("POST", "/2/tweets"), ("GET", "/2/users/me"),
                            ("GET", f"/2/users/{ME['id']}/tweets")]


def test_a_duplicate_on_a_repeat_with_no_tweet_of_this_post_fails(setup, x, monkeypatch):
    settings, sessions, channels = setup(caption="Today's face")
    posting.post_once(sessions, settings, channels)  # post 1
    x.tweets[0]["created_at"] -= timedelta(hours=6)  # the schedule's previous slot
    monkeypatch.setattr(channels["twitter"], "_create_tweet", crash)
    with pytest.raises(Crash):
        posting.post_once(sessions, settings, channels)  # post 2 dies before its tweet

    restarted = open_database(settings.database_url)
    posting.deliver_pending(restarted, settings, build_channels(settings.channels,
                                                                settings.data_dir))
    d = delivery(restarted, 2)
    assert (d.state, d.attempts) == ("failed", 2)
    assert d.last_error.endswith("no tweet of this post is among the account's latest: "
                                 "check the account")
    assert len(x.tweets) == 1  # post 1's tweet was not taken for post 2's


def test_crash_before_the_tweet_then_restart_posts_once(setup, x, monkeypatch):
    settings, sessions, channels = setup()
    monkeypatch.setattr(channels["twitter"], "_create_tweet", crash)
    with pytest.raises(Crash):
        posting.post_once(sessions, settings, channels)
    assert x.tweets == []

    restarted = open_database(settings.database_url)
    posting.deliver_pending(restarted, settings, build_channels(settings.channels,
                                                                settings.data_dir))
    assert delivery(restarted).state == "posted" and len(x.tweets) == 1


@pytest.mark.parametrize("caption, length", [("x" * 281, 281), ("顔" * 141, 282)])
def test_a_caption_too_long_for_x_fails_before_any_request(setup, x, caption, length):
    settings, sessions, channels = setup(caption=caption)
    posting.post_once(sessions, settings, channels)
    d = delivery(sessions)
    assert d.state == "failed"
    assert d.last_error.startswith(f"the caption is {length} characters as X counts them")
    assert x.calls == []


def test_tweet_length_weighs_like_x():
    assert tweet_length("hello") == 5
    assert tweet_length("顔") == 2
    assert tweet_length("see https://example.com/a/very/long/path") == 4 + 23


def test_waits_for_media_processing(setup, x):
    x.processing_polls = 2
    settings, sessions, channels = setup()
    posting.post_once(sessions, settings, channels)
    assert delivery(sessions).state == "posted"
    assert len(x.seen("GET", "/2/media/upload")) == 2


def test_one_failing_channel_never_blocks_the_other(setup, x, monkeypatch):
    monkeypatch.setenv("MASTODON_ACCESS_TOKEN", "mtok")
    with FakeMastodon(token="mtok") as mastodon:
        settings, sessions, channels = setup(channels={
            "mastodon": {"instance_url": mastodon.url}, "twitter": {}})
        # X is down hard; Mastodon is fine.
        x.fail("POST", "/2/media/upload", (401, UNAUTHORIZED, {}))
        posting.post_once(sessions, settings, channels)
        assert delivery(sessions, channel="mastodon").state == "posted"
        assert delivery(sessions, channel="twitter").state == "failed"

        # Mastodon is down for a while; X is fine.
        mastodon.fail("POST", "/api/v2/media", 503, "maintenance")
        second = posting.post_once(sessions, settings, channels)
        assert delivery(sessions, second, "mastodon").state == "pending"
        assert delivery(sessions, second, "twitter").state == "posted"
        assert len(mastodon.statuses) == 1 and len(x.tweets) == 1


def test_secrets_stay_out_of_logs_and_database(setup, x, monkeypatch, caplog):
    settings, sessions, channels = setup()
    # Debug logging, filtered the way `python -m bot -v` filters it: oauthlib logs the
    # consumer key and the token (in the string it signs) at debug level.
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.DEBUG):
        posting.post_once(sessions, settings, channels)
        monkeypatch.setenv("X_ACCESS_TOKEN_SECRET", "another-wrong-secret-19")
        broken = build_channels(settings.channels, settings.data_dir)
        posting.post_once(sessions, settings, broken)
    assert "[secret]" in caplog.text  # there was something to hide, and it was hidden
    assert "check your X credentials" in caplog.text
    for secret in [*SECRETS.values(), "another-wrong-secret-19"]:
        assert secret not in caplog.text
        for path in settings.data_dir.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path


def test_our_own_log_lines_hold_no_secret_unfiltered(setup, x, caplog):
    settings, sessions, channels = setup()
    with caplog.at_level(logging.INFO):
        posting.post_once(sessions, settings, channels)
    assert "posted post 1 to twitter" in caplog.text
    assert not any(secret in caplog.text for secret in SECRETS.values())


def test_check_shows_the_x_account(write_config, x, capsys, restore_logging):
    cfg = write_config(channels={"twitter": {}})
    assert main(["--config", str(cfg), "check"]) == 0
    assert capsys.readouterr().out == "twitter: posts as @waifufaces (Waifu faces) on X\n"
    assert x.calls == [("GET", "/2/users/me")]
