"""Deliveries that survive a server that forgets, rate limits, lost answers and long outages
(issue 10): the real Mastodon.py client against the fake server, tweepy through `responses`,
the real database and migrations."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from bot import posting
from bot.cli import main
from bot.config import load_settings
from bot.models import ChannelState, Delivery, Post, utcnow
from fake_x import x  # noqa: F401 (a fixture)
import helpers

@pytest.fixture
def server(mastodon_server):
    return mastodon_server


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


# ---- 2. a 429 pauses its channel, across deliveries and restarts

def test_a_429_pauses_the_channel_until_the_reset_and_only_that_channel(setup, server, capsys,
                                                                        restore_logging):
    server.rate_limit("POST", "/api/v2/media", reset_in_s=600)
    cfg, settings, sessions, channels = setup({"outbox": {}, **mastodon(server)})
    posting.post_once(sessions, settings, channels)
    announced = len(server.requests)  # the last of them got the 429
    posting.post_once(sessions, settings, channels)  # the next post: into the same window?
    restarted = helpers.bot_parts(settings)  # a new process, in effect
    assert posting.deliver_pending(restarted[1], settings, restarted[2]) == 0

    assert len(server.requests) == announced  # nothing sent into the announced window
    for post_id in (1, 2):
        assert helpers.delivery(sessions, post_id, "outbox").state == "posted"
        d = helpers.delivery(sessions, post_id, "mastodon")
        assert (d.state, d.attempts) == ("pending", 0)  # waiting spends no attempt
    assert main(["--config", str(cfg), "status"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("channel ")]
    assert line.startswith("channel mastodon: paused until ")
    assert "rate limit reached; it resets in" in line

    helpers.make_due(sessions)  # the reset has passed
    posting.deliver_pending(sessions, settings, channels)
    assert [helpers.delivery(sessions, i, "mastodon").state for i in (1, 2)] == ["posted"] * 2
    assert len(server.statuses) == 2



def test_a_429_from_x_pauses_x(setup, x):
    reset = int(time.time()) + 900
    x.fail("POST", "/2/media/upload", (429, {"title": "Too Many Requests"},
                                       {"x-rate-limit-reset": str(reset)}))
    _, settings, sessions, channels = setup({"twitter": {}})
    posting.post_once(sessions, settings, channels)
    posting.post_once(sessions, settings, channels)
    assert x.calls == [("POST", "/2/media/upload")]  # the second post waits for the reset
    with sessions() as s:
        paused = s.get(ChannelState, "twitter").paused_until.timestamp()
    assert reset - 2 <= paused <= reset + 2

# ---- 3. one upload per post: the next attempt reuses the image while the server has it

def uploads(server) -> int:
    return len(server.seen("POST", "/api/v2/media")) + len(server.seen("POST", "/api/v1/media"))


def retry_once(sessions, settings, channels) -> None:
    helpers.make_due(sessions)
    posting.deliver_pending(sessions, settings, channels)


@pytest.mark.parametrize("fault", ["status-500", "processing-deadline"])
def test_the_next_attempt_reuses_the_uploaded_image(setup, server, fault):
    if fault == "status-500":
        server.fail("POST", "/api/v1/statuses", 500, "try later")
    else:
        server.processing_polls = 10**6  # still processing when the first attempt gives up
    _, settings, sessions, channels = setup(mastodon(server, processing_deadline_s=0.2))
    posting.post_once(sessions, settings, channels)
    d = helpers.delivery(sessions, 1, "mastodon")
    assert d.state == "pending" and d.media_id == next(iter(server.media))
    for media in server.media.values():
        media.polls_left = 1  # done by the next attempt

    retry_once(sessions, settings, channels)
    [status] = server.statuses
    assert helpers.delivery(sessions, 1, "mastodon").state == "posted"
    assert uploads(server) == 1
    assert status["media_attachments"][0]["id"] == d.media_id


@pytest.mark.parametrize("gone", ["deleted", "refused"])
def test_an_image_the_server_no_longer_has_is_uploaded_again(setup, server, gone):
    server.fail("POST", "/api/v1/statuses", 500, "try later")
    _, settings, sessions, channels = setup(mastodon(server))
    posting.post_once(sessions, settings, channels)
    if gone == "deleted":  # unattached media is removed after a day: GET answers 404
        server.media.clear()
    else:  # the server shows it, but will not attach it
        server.fail("POST", "/api/v1/statuses", 422, "Validation failed: media not found")

    retry_once(sessions, settings, channels)
    [status] = server.statuses
    d = helpers.delivery(sessions, 1, "mastodon")
    assert d.state == "posted" and uploads(server) == 2
    assert status["media_attachments"][0]["id"] == d.media_id  # the new one is kept


def test_x_reuses_the_uploaded_image_while_x_has_it(setup, x):
    x.fail("POST", "/2/tweets", (503, {"title": "Service Unavailable"}, {}))
    _, settings, sessions, channels = setup({"twitter": {}})
    posting.post_once(sessions, settings, channels)
    retry_once(sessions, settings, channels)
    assert helpers.delivery(sessions, 1, "twitter").state == "posted"
    assert len(x.seen("POST", "/2/media/upload")) == 1

    x.fail("POST", "/2/tweets", (503, {"title": "Service Unavailable"}, {}))
    posting.post_once(sessions, settings, channels)
    x.media.pop(helpers.delivery(sessions, 2, "twitter").media_id)  # expired (X keeps a day)
    retry_once(sessions, settings, channels)
    [_, tweet] = x.tweets
    d = helpers.delivery(sessions, 2, "twitter")
    assert (d.state, d.remote_id) == ("posted", tweet["id"])
    assert len(x.seen("POST", "/2/media/upload")) == 3 and tweet["media_ids"] == [d.media_id]


# ---- 4. backoff counts from the end of the attempt

def test_backoff_counts_from_the_end_of_a_timed_out_attempt(setup, server):
    server.delay("POST", "/api/v1/statuses", seconds=2.5)
    _, settings, sessions, channels = setup(mastodon(server, request_timeout_s=1.0),
                                            retry={"base_delay_s": 1})
    posting.post_once(sessions, settings, channels)
    ended = utcnow()
    d = helpers.delivery(sessions, 1, "mastodon")
    assert d.state == "pending" and "timed out" in d.last_error
    # From the start, the 1 s wait would be over by the time the 1 s timeout is.
    assert d.next_attempt_at > ended + timedelta(seconds=0.8)
    server.settle()


# ---- 5. transient failures heal by themselves; permanent ones fail at once

def test_transient_failures_keep_retrying_past_five_attempts(setup, server):
    server.fail("POST", "/api/v2/media", 503, "maintenance", times=7)
    _, settings, sessions, channels = setup(mastodon(server), retry={"base_delay_s": 0})
    posting.post_once(sessions, settings, channels)
    for _ in range(7):
        retry_once(sessions, settings, channels)
    d = helpers.delivery(sessions, 1, "mastodon")
    assert (d.state, d.attempts) == ("posted", 8) and len(server.statuses) == 1


def test_transient_failures_give_up_after_the_horizon_with_the_reason(setup, server):
    server.fail("POST", "/api/v2/media", 503, "maintenance", times=2)
    _, settings, sessions, channels = setup(mastodon(server), retry={"give_up_after_h": 24})
    posting.post_once(sessions, settings, channels)
    with sessions.begin() as s:  # the first failure was a day ago
        s.execute(update(Delivery).values(failing_since=utcnow() - timedelta(hours=24.1)))
    retry_once(sessions, settings, channels)
    d = helpers.delivery(sessions, 1, "mastodon")
    assert (d.state, d.attempts) == ("failed", 2)
    assert d.last_error == (f"HTTP 503: maintenance ({server.url[7:]}); gave up after 24.1 h "
                            "of failures (retry.give_up_after_h)")


def test_a_channel_failing_for_an_hour_is_warned_about_once(setup, server, caplog):
    server.fail("POST", "/api/v2/media", 503, "maintenance", times=3)
    _, settings, sessions, channels = setup(mastodon(server))
    posting.post_once(sessions, settings, channels)
    with sessions.begin() as s:
        s.execute(update(ChannelState).values(failing_since=utcnow() - timedelta(minutes=61)))
    retry_once(sessions, settings, channels)
    retry_once(sessions, settings, channels)
    warnings = [m for m in caplog.messages if "has been failing since" in m]
    assert len(warnings) == 1 and warnings[0].startswith("mastodon has been failing since ")
    retry_once(sessions, settings, channels)  # it heals: the channel is no longer failing
    with sessions() as s:
        assert s.get(ChannelState, "mastodon").failing_since is None


# ---- 6. servers without /api/v2/media

def test_a_server_without_v2_media_gets_v1_uploads_learnt_once(setup, server):
    server.media_v2 = False  # older Mastodon, Pixelfed: 404
    _, settings, sessions, channels = setup(mastodon(server))
    for _ in range(3):
        posting.post_once(sessions, settings, channels)

    assert [helpers.delivery(sessions, i, "mastodon").state for i in (1, 2, 3)] == ["posted"] * 3
    assert len(server.seen("POST", "/api/v2/media")) == 1  # asked once, then remembered
    assert len(server.seen("POST", "/api/v1/media")) == 3
    upload = server.seen("POST", "/api/v1/media")[0]
    assert upload.files["file"][1] == "image/png" and upload.form["description"]
    assert [len(s["media_attachments"]) for s in server.statuses] == [1, 1, 1]


def test_the_migration_marks_unfinished_tried_deliveries_as_maybe_sent(tmp_path):
    from alembic import command
    from sqlalchemy import text

    from bot.db import alembic_config, make_engine, upgrade
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = alembic_config()
    with engine.begin() as conn:  # a database of the previous version, with deliveries
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("INSERT INTO checkpoints VALUES (1, 'a.pt', 'ab', 'dcgan', 1, 1, "
                          "NULL, '2026-01-01 00:00:00', 1)"))
        conn.execute(text("INSERT INTO posts VALUES (1, '2026-01-01 00:00:00', 1, 1, 'i.png', "
                          "'cd', '0000000000000000', 'c', 'a')"))
        for i, (state, attempts) in enumerate([("pending", 2), ("failed", 1), ("posted", 1),
                                               ("pending", 0)], 1):
            conn.execute(text(f"INSERT INTO deliveries (id, post_id, channel, state, attempts, "
                              f"idempotency_key, updated_at) VALUES ({i}, 1, 'c{i}', "
                              f"'{state}', {attempts}, 'k{i}', '2026-01-01 00:00:00')"))
    upgrade(engine)
    with engine.connect() as conn:
        marked = conn.execute(text("SELECT id FROM deliveries WHERE maybe_sent_at IS NOT NULL"
                                   " ORDER BY id")).scalars().all()
    assert marked == [1, 2]  # tried and unfinished: the next attempt looks first


def test_status_shows_a_failing_channel(setup, server, capsys, restore_logging):
    server.fail("POST", "/api/v2/media", 503, "maintenance")
    cfg, settings, sessions, channels = setup(mastodon(server))
    posting.post_once(sessions, settings, channels)
    assert main(["--config", str(cfg), "status"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("channel ")]
    assert line.startswith("channel mastodon: failing since ")
    assert line.endswith(" UTC, retried by itself")
