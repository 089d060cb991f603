"""Bot etiquette: the bot flag (`check`, `check --fix`), hashtags within each channel's limit,
the daily post cap, X's made_with_ai label. The real Mastodon.py client against the local fake
server, tweepy through `responses`, the real SQLite database."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from bot import posting, store
from bot.channels.mastodon import plain_text
from bot.cli import main
from bot.config import ConfigError, load_settings
from bot.etiquette import DailyCapReached, check_daily_cap, schedule_over_cap, with_hashtags
from bot.models import Post
from fake_x import x  # noqa: F401 (a fixture)
import helpers

CAPTION = "Face number {post_number}."  # "Face number 1.": 14 characters


@pytest.fixture
def server(mastodon_server):
    return mastodon_server


def mastodon_config(write_config, server, **bot):
    return write_config(channels={"mastodon": {"instance_url": server.url,
                                               "request_timeout_s": 2}}, **bot)


# ---- the bot flag

def test_check_warns_when_the_account_is_not_flagged_as_a_bot(write_config, server, capsys,
                                                              restore_logging):
    server.account["bot"] = False
    cfg = mastodon_config(write_config, server)
    assert main(["--config", str(cfg), "check"]) == 0  # a warning, not a failure
    out, err = capsys.readouterr()
    host = server.url.removeprefix("http://")
    assert out.startswith("mastodon: posts as @faces@")
    assert err == (f"warning: mastodon: @faces@{host} is not flagged as a bot (an automated "
                   "account): `python -m bot check --fix` sets it\n")
    assert server.seen("PATCH", "/api/v1/accounts/update_credentials") == []


def test_check_fix_flags_the_account_as_a_bot(write_config, server, capsys, restore_logging):
    server.account["bot"] = False
    server.scopes = ["write:media", "write:statuses", "read:accounts", "write:accounts"]
    cfg = mastodon_config(write_config, server)
    assert main(["--config", str(cfg), "check", "--fix"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[-1] == (f"mastodon: fixed: @faces@{server.url[7:]} is now "
                                    "flagged as a bot (an automated account)")
    [patch] = server.seen("PATCH", "/api/v1/accounts/update_credentials")
    assert patch.form == {"bot": ["1"]}  # only the flag: nothing else of the profile
    assert server.account["bot"] is True

    assert main(["--config", str(cfg), "check", "--fix"]) == 0  # flagged: nothing to do
    assert capsys.readouterr().err == ""
    assert len(server.seen("PATCH", "/api/v1/accounts/update_credentials")) == 1


def test_check_fix_without_the_scope_says_what_to_do(write_config, server, capsys,
                                                     restore_logging):
    server.account["bot"] = False  # the default token: no write:accounts
    cfg = mastodon_config(write_config, server)
    assert main(["--config", str(cfg), "check", "--fix"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: mastodon: {server.url[7:]} refused to flag @faces@")
    assert "needs a token with the scope write:accounts" in line
    assert server.account["bot"] is False


# ---- hashtags

def test_with_hashtags_drops_what_does_not_fit_and_never_cuts_the_caption():
    fits = lambda text: len(text) <= 20  # noqa: E731
    assert with_hashtags("Face 1.", ["#bot", "#art"], fits) == "Face 1. #bot #art"
    # "#generativeart" would make 22: left out; "#bot" after it still fits
    assert with_hashtags("Face 1.", ["#generativeart", "#bot"], fits) == "Face 1. #bot"
    assert with_hashtags("A caption of 25 letters!!", ["#bot"], fits) == (
        "A caption of 25 letters!!")  # too long already: left as it is, not cut
    assert with_hashtags("Face 1. #Bot", ["#bot", "#art"], fits) == "Face 1. #Bot #art"


def test_mastodon_gets_the_hashtags_that_fit_its_limit(write_config, server):
    # 19 = "Face number 1." and " #bot"; the server refuses anything longer (422)
    server.max_characters = 19
    settings, sessions, channels = helpers.bot_parts(load_settings(mastodon_config(
        write_config, server, caption=CAPTION, hashtags=["#generativeart", "bot"])))
    post_id = posting.post_once(sessions, settings, channels)
    [status] = server.statuses
    assert plain_text(status["content"]) == "Face number 1. #bot"
    with sessions() as s:
        post = store.post(s, post_id)
        assert post.caption == "Face number 1."  # the record keeps the caption itself
        assert post.deliveries[0].state == "posted"


def test_mastodon_default_limit_takes_every_tag(write_config, server):
    settings, sessions, channels = helpers.bot_parts(load_settings(mastodon_config(
        write_config, server, caption=CAPTION, hashtags=["#bot", "#generativeart"])))
    posting.post_once(sessions, settings, channels)
    assert plain_text(server.statuses[0]["content"]) == "Face number 1. #bot #generativeart"


def test_x_gets_the_hashtags_that_fit_280(write_config, x):
    caption = "x" * 269 + " {post_number}"  # 271 characters
    settings, sessions, channels = helpers.bot_parts(load_settings(write_config(
        channels={"twitter": {"caption": caption}},
        hashtags=["#generativeart", "#bot", "#ai"])))
    posting.post_once(sessions, settings, channels)
    [tweet] = x.tweets
    # 280 exactly; #generativeart would make 286
    assert tweet["text"] == "x" * 269 + " 1 #bot #ai"


def test_hashtags_are_checked_in_the_config(write_config):
    assert load_settings(write_config(hashtags=["bot", "#generativeart"])).hashtags == [
        "#bot", "#generativeart"]
    for bad in ("#2024", "#two words", "#a-b"):
        with pytest.raises(ConfigError, match=r"bot\.hashtags\.0: .* is not a hashtag"):
            load_settings(write_config(hashtags=[bad]))


# ---- X's AI label

@pytest.mark.parametrize("label", [True, False])
def test_x_posts_carry_the_made_with_ai_label(write_config, x, label):
    settings, sessions, channels = helpers.bot_parts(load_settings(write_config(
        channels={"twitter": {"made_with_ai": label}})))
    posting.post_once(sessions, settings, channels)
    assert x.tweets[0]["made_with_ai"] is label


# ---- the daily cap

def test_the_daily_cap_refuses_a_post_beyond_it(write_config):
    settings, sessions, channels = helpers.bot_parts(load_settings(write_config(
        max_posts_per_day=2)))
    posting.post_once(sessions, settings, channels)
    posting.post_once(sessions, settings, channels)
    with pytest.raises(DailyCapReached, match=r"2 posts today \(UTC\), and "
                       r"bot\.max_posts_per_day is 2; the next can go after .* 00:00 UTC"):
        posting.post_once(sessions, settings, channels)
    with sessions() as s:
        assert len(store.recent_posts(s, 10)) == 2
    # one of them made yesterday (UTC): room for one more today
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    with sessions.begin() as s:
        s.execute(update(Post).where(Post.id == 1)
                  .values(created_at=midnight - timedelta(seconds=1)))
    posting.post_once(sessions, settings, channels)
    with sessions() as s:
        assert len(store.recent_posts(s, 10)) == 3


def test_the_cap_counts_utc_days_whatever_the_clock_zone(write_config):
    settings, sessions, channels = helpers.bot_parts(load_settings(write_config()))
    posting.post_once(sessions, settings, channels)
    day = datetime(2026, 3, 1, tzinfo=timezone.utc)
    with sessions.begin() as s:
        s.execute(update(Post).values(created_at=day + timedelta(hours=23, minutes=20)))
    berlin = timezone(timedelta(hours=1))
    with sessions() as s:
        # 00:30 in Berlin is 23:30 UTC, the same UTC day as the post
        with pytest.raises(DailyCapReached):
            check_daily_cap(s, 1, datetime(2026, 3, 2, 0, 30, tzinfo=berlin))
        check_daily_cap(s, 2, datetime(2026, 3, 2, 0, 30, tzinfo=berlin))
        check_daily_cap(s, 1, day + timedelta(days=1, minutes=30))  # the next UTC day
        check_daily_cap(s, None, day + timedelta(hours=23, minutes=30))  # no cap


def test_post_beyond_the_cap_is_one_line_and_pending_deliveries_still_go(
        write_config, capsys, restore_logging):
    cfg = write_config(max_posts_per_day=1)
    assert main(["--config", str(cfg), "post"]) == 0
    capsys.readouterr()
    assert main(["--config", str(cfg), "post"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: not posting: 1 posts today (UTC), and "
                           "bot.max_posts_per_day is 1")
    settings = load_settings(cfg)
    sessions = helpers.started(settings)
    with sessions() as s:
        assert [p.id for p in store.recent_posts(s, 10)] == [1]
    assert main(["--config", str(cfg), "post", "bot.max_posts_per_day=null"]) == 0


def test_the_shipped_config_caps_posts_per_day():
    shipped = load_settings(helpers.REPO / "config.yaml")
    assert shipped.max_posts_per_day == 8 and shipped.hashtags == []
    assert shipped.channels["twitter"].made_with_ai is True


def test_the_daemon_skips_a_slot_beyond_the_cap_with_one_line(write_config, tmp_path):
    write_config(max_posts_per_day=1, schedule={"interval_minutes": 0.02,  # every 1.2 s
                                                "post_at_start": True})
    with helpers.daemon(tmp_path, tmp_path / "daemon.log") as d:
        d.wait_for("posted post 1 to outbox")
        d.wait_for("not posting: 1 posts today")
    lines = [line for line in d.text().splitlines() if "not posting" in line]
    assert re.search(r"ERROR no post this time: not posting: 1 posts today \(UTC\), and "
                     r"bot\.max_posts_per_day is 1; the next can go after "
                     r"\d{4}-\d\d-\d\d 00:00 UTC$", lines[0]), lines
    assert "Traceback" not in d.text() and "posted post 2" not in d.text()
    assert "WARNING the schedule has more than 1 slots in a UTC day" in d.text()


@pytest.mark.parametrize("schedule, cap, warned", [
    ({"interval_minutes": 60}, 8, True), ({"interval_minutes": 180}, 8, False),
    ({"interval_minutes": 180, "cron": None}, None, False),
    ({"cron": "0 9,18 * * mon-fri", "interval_minutes": None}, 2, False),
    ({"cron": "*/20 9-11 * * sat", "interval_minutes": None}, 8, True),  # 9 on Saturdays
    ({"cron": "0 * * * *", "interval_minutes": None, "timezone": "Asia/Kolkata"}, 24, False)])
def test_a_schedule_with_more_slots_than_the_cap_is_warned_about(schedule, cap, warned):
    from bot.config import Schedule
    from bot.scheduler import make_trigger
    trigger = make_trigger(Schedule(**schedule))
    over = schedule_over_cap(trigger, cap, datetime.now(timezone.utc))  # the next 7 days
    assert (over is not None) is warned
    if warned:
        assert over.startswith(f"the schedule has more than {cap} slots in a UTC day")
