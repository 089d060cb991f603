"""Deliveries that survive a server that forgets, rate limits, lost answers and long outages
(issue 10): the real Mastodon.py client against the fake server, tweepy through `responses`,
the real database and migrations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from bot import posting
from bot.channels.mastodon import MastodonChannel
from bot.cli import main
from bot.config import load_settings
from bot.models import Delivery, Post, utcnow
from fake_mastodon import FakeMastodon
from fake_x import x  # noqa: F401 (a fixture)
import helpers

TOKEN = "mtok-5d0e7c21b9a4f386"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("MASTODON_ACCESS_TOKEN", TOKEN)
    monkeypatch.setattr(MastodonChannel, "POLL_FIRST_S", 0.01)
    with FakeMastodon(token=TOKEN) as s:
        yield s


@pytest.fixture
def setup(write_config):
    """setup(channels, **bot) -> (config path, settings, sessions, channels)."""
    def make(channels: dict, **bot):
        cfg = write_config(channels=channels, **bot)
        return (cfg, *helpers.bot_parts(load_settings(cfg)))
    return make


def mastodon(server, **settings) -> dict:
    return {"mastodon": {"instance_url": server.url, "request_timeout_s": 2, **settings}}


def age(sessions, hours: float) -> None:
    """Everything happened `hours` ago: the post, and its deliveries' last attempts."""
    then = utcnow() - timedelta(hours=hours)
    with sessions.begin() as s:
        s.execute(update(Post).values(created_at=then))
        s.execute(update(Delivery).values(updated_at=then, maybe_sent_at=then))


# ---- 1. a late `retry` after a status that was stored but answered 500

def test_a_late_retry_after_commit_then_500_posts_once_on_mastodon(setup, server,
                                                                   restore_logging):
    server.fail("POST", "/api/v1/statuses", 500, "boom", after_work=True)
    cfg, settings, sessions, channels = setup(mastodon(server), retry={"max_attempts": 1})
    posting.post_once(sessions, settings, channels)
    d = helpers.delivery(sessions, 1, "mastodon")
    assert d.state == "failed" and len(server.statuses) == 1  # stored, though it said 500
    # `retry` more than an hour later: Mastodon has forgotten the idempotency key.
    server.forget_idempotency_keys()
    age(sessions, 2)

    assert main(["--config", str(cfg), "retry"]) == 0
    [status] = server.statuses
    d = helpers.delivery(sessions, 1, "mastodon")
    assert (d.state, d.remote_id, d.remote_url) == ("posted", status["id"], status["url"])


def test_a_late_retry_after_commit_then_500_posts_once_on_x(setup, x, restore_logging):
    x.fail("POST", "/2/tweets", (500, {"title": "Internal Server Error"}, {}), after_work=True)
    cfg, settings, sessions, channels = setup({"twitter": {}}, retry={"max_attempts": 1})
    posting.post_once(sessions, settings, channels)
    assert helpers.delivery(sessions, 1, "twitter").state == "failed" and len(x.tweets) == 1
    age(sessions, 2)

    assert main(["--config", str(cfg), "retry"]) == 0
    [tweet] = x.tweets
    d = helpers.delivery(sessions, 1, "twitter")
    assert (d.state, d.remote_id) == ("posted", tweet["id"])
    assert len(x.seen("POST", "/2/media/upload")) == 1  # found before uploading again
