from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot import BotError, posting, store
from bot.channels import build_channels
from bot.channels.base import (Channel, ChannelSettings, Permanent, Receipt, Retryable,
                               error_for_status)
from bot.checkpoints import ensure_active, publish
from bot.config import load_settings
from bot.db import open_database
from bot.models import Checkpoint, Delivery, Post, utcnow
from helpers import Seeds, draw_with, is_enlarged


class Recorder(Channel):
    """A channel that logs successful deliveries to a shared list and raises queued errors."""

    def __init__(self, name: str, log: list, errors: list[BaseException] = ()):
        super().__init__(name, ChannelSettings(type="recorder"), Path("."))
        self.log, self.errors, self.calls = log, list(errors), 0

    def deliver(self, post):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.log.append((self.name, post.post_id))
        return Receipt(f"{self.name}-{post.post_id}", f"https://example.test/{post.post_id}")


class Crash(BaseException):
    """Stands in for the process dying in the middle of a delivery."""


def _deliveries(sessions, post_id: int) -> dict[str, Delivery]:
    with sessions() as s:
        return {d.channel: d for d in store.post(s, post_id).deliveries}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_post_through_the_outbox_end_to_end(settings, sessions):
    ensure_active(sessions, settings)
    channels = build_channels(settings.channels, settings.data_dir)
    first = posting.post_once(sessions, settings, channels)
    second = posting.post_once(sessions, settings, channels)

    with sessions() as s:
        post = store.post(s, first)
        assert Path(post.checkpoint.path).name == "tiny.pt" and post.checkpoint.active
        image = settings.data_dir / post.image_path
        assert _sha(image) == post.image_sha256
        [d] = post.deliveries
        assert (d.channel, d.state, d.attempts) == ("outbox", "posted", 1)
        assert d.remote_id == "post-000001" and d.remote_url.endswith("index.html#post-000001")

    outbox = settings.data_dir / "outbox"
    delivered = (outbox / "post-000001.png").read_bytes()
    assert is_enlarged(delivered, image)  # bot.image.scale 8: 512x512
    sidecar = json.loads((outbox / "post-000001.json").read_text())
    assert sidecar["caption"] == post.caption and sidecar["seed"] == post.seed
    assert sidecar["checkpoint"] == "tiny.pt" and sidecar["image_sha256"] == _sha(outbox / "post-000001.png")
    assert post.caption.startswith(f"Face #1 (seed {post.seed})")
    page = (outbox / "index.html").read_text()
    assert page.index(f'id="post-{second:06d}"') < page.index('id="post-000001"')  # newest first
    assert f"seed {post.seed}" in page and post.caption in page


@pytest.mark.parametrize("crash_on", ["a", "b"])
def test_crash_mid_delivery_then_restart_delivers_each_channel_once(settings, sessions,
                                                                     crash_on):
    ensure_active(sessions, settings)
    log: list = []
    channels = {n: Recorder(n, log, [Crash()] if n == crash_on else []) for n in "ab"}
    with pytest.raises(Crash):
        posting.post_once(sessions, settings, channels)
    # After a crash on "a" nothing went out; after one on "b", "a" already had.
    assert log == ([] if crash_on == "a" else [("a", 1)])

    restarted = open_database(settings.database_url)  # a fresh process, in effect
    posting.post_once(restarted, settings, {n: Recorder(n, log) for n in "ab"})
    assert sorted(log) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    first = _deliveries(restarted, 1)
    assert {d.state for d in first.values()} == {"posted"}
    assert first[crash_on].attempts == 2  # the attempt that died counts


def test_retryable_error_backs_off_then_delivers(write_config, sessions):
    settings = load_settings(write_config(retry={"base_delay_s": 60}))
    ensure_active(sessions, settings)
    log: list = []
    ch = Recorder("a", log, [Retryable("HTTP 503: unavailable")])
    before = utcnow()
    post_id = posting.post_once(sessions, settings, {"a": ch})
    d = _deliveries(sessions, post_id)["a"]
    assert (d.state, d.attempts, d.last_error) == ("pending", 1, "HTTP 503: unavailable")
    # 60 s, plus up to 10% jitter
    assert before + timedelta(seconds=59) < d.next_attempt_at < utcnow() + timedelta(seconds=67)

    assert posting.deliver_pending(sessions, settings, {"a": ch}) == 0  # not due yet
    assert ch.calls == 1
    with sessions.begin() as s:
        s.execute(update(Delivery).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    assert posting.deliver_pending(sessions, settings, {"a": ch}) == 1
    d = _deliveries(sessions, post_id)["a"]
    assert (d.state, d.attempts, d.last_error, d.remote_id) == ("posted", 2, None, "a-1")
    assert log == [("a", 1)]


def test_retry_after_from_the_server_wins_over_backoff(settings):
    def seconds(attempts, retry_after):
        return posting.backoff(settings, attempts, retry_after).total_seconds()

    def near(base):  # the base wait plus at most 10% jitter
        return pytest.approx(base * 1.05, abs=base * 0.05)

    assert seconds(1, None) == near(30)
    assert seconds(3, None) == near(120)
    assert seconds(20, None) == near(3600)  # capped
    assert seconds(1, 900) == near(900)
    assert len({seconds(1, None) for _ in range(20)}) > 1  # jittered, not all alike


def test_gives_up_after_max_attempts_and_retry_revives(write_config, sessions):
    settings = load_settings(write_config(retry={"max_attempts": 2, "base_delay_s": 0}))
    ensure_active(sessions, settings)
    log: list = []
    ch = Recorder("a", log, [Retryable("timeout"), RuntimeError("boom")])
    post_id = posting.post_once(sessions, settings, {"a": ch})
    posting.deliver_pending(sessions, settings, {"a": ch})  # backoff 0 s: due again at once
    d = _deliveries(sessions, post_id)["a"]
    assert (d.state, d.attempts) == ("failed", 2)
    assert d.last_error == "boom; gave up after 2 attempts (retry.max_attempts)"
    assert posting.deliver_pending(sessions, settings, {"a": ch}) == 0  # failed stays failed

    assert posting.retry_failed(sessions, settings, {"a": ch}) == (1, 1)  # tried, posted
    d = _deliveries(sessions, post_id)["a"]
    assert (d.state, d.attempts) == ("posted", 1)
    assert log == [("a", 1)]


def test_permanent_error_fails_at_once(settings, sessions):
    ensure_active(sessions, settings)
    ch = Recorder("a", [], [error_for_status(401, "The access token is invalid")])
    post_id = posting.post_once(sessions, settings, {"a": ch})
    d = _deliveries(sessions, post_id)["a"]
    assert (d.state, d.attempts) == ("failed", 1)
    assert d.last_error == "HTTP 401: The access token is invalid"


def test_error_classification():
    assert isinstance(error_for_status(429, "slow down", 30.0), Retryable)
    assert error_for_status(429, "slow down", 30.0).retry_after == 30.0
    assert isinstance(error_for_status(502, "bad gateway"), Retryable)
    for status in (401, 403, 422):
        assert isinstance(error_for_status(status, "no"), Permanent)


def test_a_seed_is_never_reused_with_the_same_checkpoint(settings, sessions):
    ensure_active(sessions, settings)
    ch = {"a": Recorder("a", [])}
    first = posting.post_once(sessions, settings, ch, rng=Seeds(11))
    second = posting.post_once(sessions, settings, ch, rng=Seeds(11, 11, 12))
    with sessions() as s:
        assert [store.post(s, i).seed for i in (first, second)] == [11, 12]
    assert posting.pick_seed(Seeds(5, 7, 9), {5, 7}) == 9


def test_a_look_alike_image_is_redrawn(settings, sessions, monkeypatch, caplog):
    ensure_active(sessions, settings)
    ch = {"a": Recorder("a", [])}
    posting.post_once(sessions, settings, ch, rng=Seeds(1))
    # Seed 2 draws the very face seed 1 drew: it must be refused.
    draw_with(monkeypatch, lambda ck, seed: posting.render(ck, 1 if seed == 2 else seed))
    settings.dedup.max_draws = 2  # enough only if the refused seed is not drawn again
    with caplog.at_level(logging.INFO, logger="bot.posting"):
        post_id = posting.post_once(sessions, settings, ch, rng=Seeds(2, 2, 3))
    with sessions() as s:
        assert store.post(s, post_id).seed == 3
    assert "seed 2 looks like an earlier post (hash distance 0)" in caplog.text

    draw_with(monkeypatch, lambda ck, seed: posting.render(ck, 1))
    with pytest.raises(BotError, match="no image unlike the earlier posts in 2 draws"):
        posting.post_once(sessions, settings, ch, rng=Seeds(4, 5))


def test_regenerate_reproduces_the_image_bit_for_bit(settings, sessions, tmp_path):
    ensure_active(sessions, settings)
    post_id = posting.post_once(sessions, settings, {"a": Recorder("a", [])})
    with sessions() as s:
        post = store.post(s, post_id)
    original = settings.data_dir / post.image_path
    expected = original.read_bytes()
    original.unlink()

    out, same = posting.regenerate(sessions, settings, post_id)
    assert same and out.read_bytes() == expected
    assert hashlib.sha256(out.read_bytes()).hexdigest() == post.image_sha256
    assert original.read_bytes() == expected  # the lost original is put back

    with pytest.raises(BotError, match="no post 99"):
        posting.regenerate(sessions, settings, 99)


def test_regenerate_refuses_a_changed_checkpoint(settings, sessions, tmp_path):
    from gan.testing import make_tiny_checkpoint
    ck = make_tiny_checkpoint(tmp_path / "mine.pt", seed=1)
    publish(sessions, ck)
    post_id = posting.post_once(sessions, settings, {"a": Recorder("a", [])})
    make_tiny_checkpoint(ck, seed=2)  # overwritten in place: other weights
    with pytest.raises(BotError, match="changed since it was published"):
        posting.regenerate(sessions, settings, post_id)


def test_dry_run_records_and_delivers_nothing(settings, sessions):
    ensure_active(sessions, settings)
    preview = posting.dry_run(sessions, settings, ["outbox"], rng=Seeds(42))
    assert preview.seed == 42 and preview.image_path.is_file()
    assert preview.caption.startswith("Face #1 (seed 42)")
    assert preview.channels == ["outbox"]
    with sessions() as s:
        assert s.scalars(select(Post)).all() == [] and s.scalars(select(Delivery)).all() == []
    assert not (settings.data_dir / "outbox").exists()


def test_caption_shows_the_quality_score_when_known(write_config, sessions):
    settings = load_settings(write_config(
        caption="#{post_number} {variant} {checkpoint} step {step} seed {seed} {quality}",
        alt_text="face {seed}", quality_metric="fid"))
    ensure_active(sessions, settings)
    with sessions.begin() as s:
        s.execute(update(Checkpoint).values(metrics={"fid": 42.04, "kid": 0.1}))
    post_id = posting.post_once(sessions, settings, {"a": Recorder("a", [])}, rng=Seeds(7))
    with sessions() as s:
        post = store.post(s, post_id)
    assert post.caption == "#1 forcecore tiny.pt step 0 seed 7 FID 42.0"
    assert post.alt_text == "face 7"


def test_pending_delivery_to_a_channel_no_longer_enabled_fails(settings, sessions):
    ensure_active(sessions, settings)
    log: list = []
    with pytest.raises(Crash):
        posting.post_once(sessions, settings, {"a": Recorder("a", log, [Crash()])})
    # Restarted with channel "a" gone from the config: its delivery cannot happen.
    posting.post_once(sessions, settings, {"b": Recorder("b", log)})
    d = _deliveries(sessions, 1)["a"]
    assert d.state == "failed" and "not enabled" in d.last_error


def test_no_enabled_channel_is_an_error(settings, sessions):
    with pytest.raises(BotError, match="no channel is enabled"):
        posting.post_once(sessions, settings, {})
