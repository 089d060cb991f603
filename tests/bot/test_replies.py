"""Replies to mentions (issue 14, part 3): the real Mastodon.py client against the fake
server's notifications, through the real database, migrations and posting machinery."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from bot import posting, replies
from bot.channels.mastodon import REPLY_SCOPES, MastodonChannel
from bot.config import ConfigError, load_settings
from bot.models import ChannelState, Reply
import helpers


class Crash(BaseException):
    """Stands in for the process dying (kill -9) at a chosen point."""


@pytest.fixture
def server(mastodon_server):
    mastodon_server.scopes += REPLY_SCOPES.split()
    return mastodon_server


@pytest.fixture
def start(write_config, server):
    """start(*overrides, **replies) -> (settings, sessions, channel): a bot with replies on,
    its first poll done (where the answering starts). Called again: a restarted bot on the
    same database."""
    def make(*overrides: str, first_poll: bool = True, **replies_settings):
        cfg = write_config(channels={"mastodon": {"instance_url": server.url,
                                                  "request_timeout_s": 2}},
                           replies={"enabled": True, **replies_settings})
        settings, sessions, channels = helpers.bot_parts(load_settings(cfg, overrides))
        if first_poll:
            assert replies.poll(sessions, settings, channels["mastodon"]) == 0
        return settings, sessions, channels["mastodon"]
    return make


def all_replies(sessions) -> list[Reply]:
    with sessions() as s:
        return list(s.scalars(select(Reply).order_by(Reply.id)))


def test_a_mention_that_asks_gets_one_reply_with_its_own_face(start, server):
    old = server.mention("zoe", "draw me")  # before the replies were switched on
    settings, sessions, channel = start()
    asked = server.mention("alice@example.org", "Hello! Could you DRAW ME, please?")

    assert replies.poll(sessions, settings, channel) == 1
    [status] = server.statuses
    assert status["in_reply_to_id"] == asked["id"] and server.replies_to(old["id"]) == []
    [sent] = server.seen("POST", "/api/v1/statuses")
    [reply] = all_replies(sessions)
    assert reply.seed == replies.account_seed("https://example.org/users/alice", 0)
    assert sent.form["status"] == [f"@alice@example.org {reply.caption}"]
    assert f"(seed {reply.seed})" in reply.caption and "tiny.pt" in reply.caption
    assert sent.form["visibility"] == ["unlisted"]  # a public mention: at most unlisted
    assert sent.headers["Idempotency-Key"] == reply.idempotency_key
    assert (reply.state, reply.remote_id, reply.image_size) == ("posted", status["id"], "512x512")
    [upload] = server.seen("POST", "/api/v2/media")
    assert helpers.is_enlarged(upload.files["file"][2], settings.data_dir / reply.image_path)
    assert status["mentions"][0]["acct"] == "alice@example.org"

    # The next poll asks only for newer mentions, and answers nothing twice; after a restart
    # too (the cursor is in the database).
    assert replies.poll(sessions, settings, channel) == 0
    settings, sessions, channel = start(first_poll=False)
    assert replies.poll(sessions, settings, channel) == 0
    asks = server.seen("GET", "/api/v1/notifications")
    first, then = (n["id"] for n in server.notifications)  # old's, asked's
    assert [r.query.get("since_id") for r in asks] == [None, [first], [then], [then]]
    assert all(r.query["types[]"] == ["mention"] for r in asks)
    assert len(server.statuses) == 1


def test_each_account_has_its_own_faces_the_same_in_any_database(start, server, tmp_path):
    settings, sessions, channel = start()
    for who in ("alice", "bob", "alice"):
        server.mention(who)
    assert replies.poll(sessions, settings, channel) == 3
    alice, bob = "https://127.0.0.1/users/alice", "https://127.0.0.1/users/bob"
    assert [(r.account_acct, r.counter, r.seed) for r in all_replies(sessions)] == [
        ("alice", 0, replies.account_seed(alice, 0)), ("bob", 0, replies.account_seed(bob, 0)),
        ("alice", 1, replies.account_seed(alice, 1))]
    assert len({r.seed for r in all_replies(sessions)}) == 3

    # Another bot, its own database and images: alice's first face is the same picture.
    other = tmp_path / "other"  # overrides are rooted at the top; typed paths are the cwd's
    o_settings, o_sessions, o_channel = start(f"bot.database_url=sqlite:///{other}/bot.db",
                                              f"bot.data_dir={other}")
    server.mention("alice")
    assert replies.poll(o_sessions, o_settings, o_channel) == 1
    [again] = all_replies(o_sessions)
    first = all_replies(sessions)[0]
    assert (again.seed, again.image_sha256) == (first.seed, first.image_sha256)


def test_a_face_that_may_not_be_sent_moves_on_to_the_next(start, server):
    settings, sessions, channel = start()
    uri = "https://127.0.0.1/users/alice"
    # Alice's first face was already posted (a seed is never sent twice).
    posting.post_once(sessions, settings, {"mastodon": channel},
                      seed=replies.account_seed(uri, 0))
    server.mention("alice")
    assert replies.poll(sessions, settings, channel) == 1
    [reply] = all_replies(sessions)
    assert (reply.counter, reply.seed) == (1, replies.account_seed(uri, 1))


def test_daily_limits_per_account_and_in_all(start, server, caplog):
    settings, sessions, channel = start(per_account_per_day=1, per_day=2)
    for who in ("alice", "alice", "bob", "carol"):
        server.mention(who)
    with caplog.at_level(logging.INFO, logger="bot.replies"):
        assert replies.poll(sessions, settings, channel) == 2
    assert [r.account_acct for r in all_replies(sessions)] == ["alice", "bob"]
    assert len(server.statuses) == 2
    assert ("by @alice not answered: 1 replies to this account today already "
            "(bot.replies.per_account_per_day)") in caplog.text
    assert "by @carol not answered: 2 replies today already (bot.replies.per_day)" in caplog.text


def test_bots_other_words_and_unfollowed_accounts_get_no_reply(start, server):
    settings, sessions, channel = start(only_followed=True, words=["paint me", "Draw  me"])
    followed = server.mention("alice", "draw me")
    server.follows = {followed["account"]["id"]}
    server.mention("robot", "draw me", bot=True)  # followed too, but a bot
    server.follows.add(server.notifications[-1]["account"]["id"])
    server.mention("alice", "thanks, lovely!")
    server.mention("bob", "paint me")  # asks, but is not followed
    server.mention("alice", "PAINT ME too")
    assert replies.poll(sessions, settings, channel) == 2
    assert [r.mention_id for r in all_replies(sessions)] == [
        followed["id"], server.notifications[-1]["status"]["id"]]
    [relationships] = server.seen("GET", "/api/v1/accounts/relationships")
    assert len(relationships.query["id[]"]) == 3  # asked once per poll, for every account


def test_a_reply_is_never_more_public_than_its_mention(start, server):
    settings, sessions, channel = start(per_account_per_day=4)
    for visibility in ("public", "unlisted", "private", "direct"):
        server.mention("alice", visibility=visibility)
    replies.poll(sessions, settings, channel)
    assert [s["visibility"] for s in server.statuses] == [
        "unlisted", "unlisted", "private", "direct"]
    assert replies.reply_visibility("public", "private") == "private"
    assert replies.reply_visibility("direct", "public") == "direct"
    assert replies.reply_visibility("limited", "public") == "direct"  # unknown: the least


def test_a_crash_between_recording_and_sending_still_replies_once(start, server, monkeypatch):
    settings, sessions, channel = start()
    asked = server.mention("alice")

    def dies(*args, **kwargs):
        raise Crash()

    with monkeypatch.context() as m, pytest.raises(Crash):
        m.setattr(MastodonChannel, "deliver", dies)
        replies.poll(sessions, settings, channel)
    [reply] = all_replies(sessions)
    assert reply.state == "pending" and server.statuses == []
    with sessions() as s:  # the mention is handled: the cursor is past it
        assert s.get(ChannelState, "mastodon").mentions_since_id == server.notifications[0]["id"]

    settings, sessions, channel = start(first_poll=False)  # restarted
    assert replies.poll(sessions, settings, channel) == 0  # nothing new recorded ...
    [status] = server.statuses  # ... but the pending reply is sent
    [reply] = all_replies(sessions)
    assert (reply.state, reply.remote_id, status["in_reply_to_id"]) == (
        "posted", status["id"], asked["id"])


def test_a_reply_that_may_have_been_sent_is_looked_for_first(start, server):
    # The status is stored, then the answer is a 500; an hour later the key is forgotten.
    server.fail("POST", "/api/v1/statuses", 500, "boom", after_work=True)
    settings, sessions, channel = start()
    asked = server.mention("alice@example.org")
    replies.poll(sessions, settings, channel)
    [reply] = all_replies(sessions)
    assert reply.state == "pending" and reply.maybe_sent_at is not None
    server.forget_idempotency_keys()
    helpers.make_due(sessions)

    replies.poll(sessions, settings, channel)
    [status] = server.statuses
    [reply] = all_replies(sessions)
    assert (reply.state, reply.remote_id) == ("posted", status["id"])
    assert server.seen("GET", f"/api/v1/statuses/{asked['id']}/context")
    assert len(server.seen("POST", "/api/v1/statuses")) == 1


def test_a_429_pauses_the_polling_and_the_channel(start, server):
    settings, sessions, channel = start()
    server.mention("alice")
    server.rate_limit("GET", "/api/v1/notifications", reset_in_s=600)
    assert replies.poll(sessions, settings, channel) == 0
    before = len(server.requests)
    assert replies.poll(sessions, settings, channel) == 0  # paused: no request at all
    posting.post_once(sessions, settings, {"mastodon": channel})  # a post waits too
    assert len(server.requests) == before
    with sessions() as s:
        assert "rate limit reached" in s.get(ChannelState, "mastodon").pause_reason

    helpers.make_due(sessions)  # the reset has passed
    assert replies.poll(sessions, settings, channel) == 1
    assert posting.deliver_pending(sessions, settings, {"mastodon": channel}) == 1
    assert len(server.statuses) == 2  # the reply and the post


def test_a_token_without_the_reply_scopes_is_one_clear_line(start, server, caplog):
    settings, sessions, channel = start()
    server.scopes = ["write:media", "write:statuses", "read:accounts"]
    caplog.clear()  # what start() logged (on a busy machine, a slow first poll warns)
    with caplog.at_level(logging.ERROR, logger="bot.replies"):
        assert replies.poll(sessions, settings, channel) == 0
    [record] = [r for r in caplog.records if r.name == "bot.replies"]
    assert record.getMessage().endswith(f"replies need a token with the scopes {REPLY_SCOPES}")
    assert "HTTP 403" in record.getMessage() and record.exc_info is None


def test_replies_need_an_enabled_mastodon_channel(write_config):
    with pytest.raises(ConfigError, match="replies.channel: 'mastodon' is not an enabled "
                                          "Mastodon channel"):
        load_settings(write_config(replies={"enabled": True}))


def test_asking_words():
    assert replies.asks("@faces Draw\nme!", ["draw me"])
    assert replies.asks("@faces please, draw me", ["paint me", "DRAW ME"])
    assert not replies.asks("@faces draw meadows", ["draw me"])  # whole words only
    assert not replies.asks("@faces withdraw me", ["draw me"])


def test_the_daemon_polls_on_its_own_job(write_config, server):
    from bot.scheduler import REPLIES_JOB, add_replies_job, build_scheduler, make_trigger
    settings = load_settings(write_config(
        channels={"mastodon": {"instance_url": server.url}},
        replies={"enabled": True, "poll_s": 45}))
    sched = build_scheduler(settings, make_trigger(settings.schedule), lambda: None,
                            lambda: None, None)
    add_replies_job(sched, settings, lambda: None)
    add_replies_job(sched, settings, lambda: None)  # replaced, not added twice
    jobs = helpers.scheduled_jobs(sched)
    assert sorted(job.id for job in jobs) == ["deliver", "post", REPLIES_JOB]
    jobs = {job.id: job for job in jobs}
    assert jobs[REPLIES_JOB].trigger.interval.total_seconds() == 45


@pytest.mark.slow
def test_the_daemon_answers_a_mention(write_config, server, tmp_path):
    cfg = write_config(channels={"mastodon": {"instance_url": server.url,
                                              "request_timeout_s": 5}},
                       replies={"enabled": True, "poll_s": 5}, memorisation={"faces": None})
    with helpers.daemon(tmp_path, tmp_path / "daemon.log", "--config", str(cfg)) as d:
        d.wait_for("replies: answering the mentions", timeout=120)
        asked = server.mention("alice", "draw me")
        d.wait_for("posted reply 1 to mastodon", timeout=60)
    assert [s["id"] for s in server.replies_to(asked["id"])] == [
        r.remote_id for r in all_replies(helpers.started(load_settings(cfg)))]
    assert "Traceback" not in d.text()


def test_check_and_status_speak_of_the_replies(start, server, capsys, restore_logging):
    from bot.cli import main
    settings, sessions, channel = start()
    server.mention("alice")
    replies.poll(sessions, settings, channel)
    cfg = ["--config", str(settings.data_dir.parent / "config.yaml")]
    assert main([*cfg, "status"]) == 0
    assert "replies to mentions: on, 1 posted, 0 pending, 0 failed" in capsys.readouterr().out
    assert main([*cfg, "check"]) == 0
    assert "mastodon: may read the mentions (bot.replies)" in capsys.readouterr().out
    server.scopes = ["write:media", "write:statuses", "read:accounts"]
    assert main([*cfg, "check"]) == 2
    err = capsys.readouterr().err
    assert "error: mastodon: cannot read the mentions (HTTP 403" in err
    assert f"replies need a token with the scopes {REPLY_SCOPES}" in err


def test_retry_sends_a_failed_reply(start, server, capsys, restore_logging):
    from bot.cli import main
    settings, sessions, channel = start()
    server.mention("alice")
    server.fail("POST", "/api/v1/statuses", 422, "Validation failed: try later")
    replies.poll(sessions, settings, channel)
    [reply] = all_replies(sessions)
    assert reply.state == "failed" and server.statuses == []

    assert main(["--config", str(settings.data_dir.parent / "config.yaml"), "retry"]) == 0
    assert ("1 failed replies tried again: 1 posted, 0 not (pending a retry or failed again)"
            in capsys.readouterr().out)
    [status] = server.statuses
    [reply] = all_replies(sessions)
    assert (reply.state, reply.remote_id) == ("posted", status["id"])
