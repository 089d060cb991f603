"""Animated posts (issue 14, part 2): a looping walk between fresh faces, recorded like any
post, reproducible, delivered as GIF and MP4 to the outbox, as an MP4 to Mastodon (the fake
server, the real Mastodon.py) and as a GIF in chunks to X (tweepy through `responses`)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import av
import numpy as np
import pytest
from PIL import Image

from bot import posting, store
from bot.animation import gif_frames
from bot.channels.twitter import TwitterChannel
from bot.checkpoints import load_published, render
from bot.cli import main
from bot.config import ConfigError, load_settings
from fake_x import x  # noqa: F401 (a fixture)
import helpers
from helpers import Seeds

WALK = {"seeds": 3, "frames_per_seed": 4, "fps": 6}  # 12 frames, 2 s: quick to draw


@pytest.fixture
def setup(write_config):
    def make(channels: dict | None = None, **bot):
        cfg = write_config(channels=channels or {"outbox": {}}, animation=WALK, **bot)
        return (cfg, *helpers.bot_parts(load_settings(cfg)))
    return make


def video(path) -> tuple[int, int, int, float, str]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = sum(1 for _ in c.decode(s))
        return frames, s.width, s.height, float(c.duration / 1e6), s.codec_context.name


def test_an_animated_post_from_draw_to_gallery_and_back(setup, restore_logging, capsys):
    cfg, settings, sessions, channels = setup()
    post_id = posting.post_once(sessions, settings, channels, rng=Seeds(11, 22, 33),
                                animated=True)
    with sessions() as s:
        post = store.post(s, post_id)
        ck = load_published(post.checkpoint)
    assert (post.kind, post.seed, post.seeds, post.frames, post.fps) == (
        "animation", 11, [11, 22, 33], 12, 6)
    assert "from seed 11 and back" in post.caption and "seed 11 first" in post.alt_text

    # The stored original: the walk at 64x64, starting on seed 11's face and coming back.
    frames = gif_frames(settings.data_dir / post.image_path)
    assert frames.shape == (12, 64, 64, 3)
    face = np.asarray(render(ck, 11), dtype=int)
    assert np.abs(frames[0].astype(int) - face).mean() < 3  # GIF palette: nearly exact
    for k, seed in ((4, 22), (8, 33)):  # each leg starts on the next face
        assert np.abs(frames[k].astype(int) - np.asarray(render(ck, seed), int)).mean() < 3
    assert not np.array_equal(frames[1], frames[0])

    # The outbox: the GIF and the MP4 at 512x512, inline in the gallery.
    folder = settings.data_dir / "outbox"
    with Image.open(folder / "post-000001.gif") as gif:
        assert (gif.size, gif.n_frames, gif.info["loop"]) == ((512, 512), 12, 0)
    assert video(folder / "post-000001.mp4") == (12, 512, 512, 2.0, "h264")
    sidecar = json.loads((folder / "post-000001.json").read_text())
    assert (sidecar["kind"], sidecar["seeds"], sidecar["frames"], sidecar["video"]) == (
        "animation", [11, 22, 33], 12, "post-000001.mp4")
    page = (folder / "index.html").read_text()
    assert '<video src="post-000001.mp4" poster="post-000001.gif"' in page
    assert "seeds 11 &rarr; 22 &rarr; 33, 12 frames" in page
    assert helpers.delivery(sessions, post_id, "outbox").image_size == "512x512"

    # Reproducible, and every face of the walk counts as posted.
    (settings.data_dir / post.image_path).unlink()
    out, same = posting.regenerate(sessions, settings, post_id)
    assert same and out.suffix == ".gif" and (settings.data_dir / post.image_path).is_file()
    with pytest.raises(posting.SeedRefused, match="seed 22 was already posted"):
        posting.post_once(sessions, settings, channels, seed=22)
    assert main(["--config", str(cfg), "history"]) == 0
    assert "11→22→33" in capsys.readouterr().out


def test_mastodon_gets_the_mp4_and_waits_for_its_processing(setup, mastodon_server):
    server = mastodon_server
    _, settings, sessions, channels = setup({"mastodon": {"instance_url": server.url}})
    post_id = posting.post_once(sessions, settings, channels, animated=True)

    d = helpers.delivery(sessions, post_id, "mastodon")
    assert d.state == "posted"
    [upload] = server.seen("POST", "/api/v2/media")
    name, ctype, data = upload.files["file"]
    assert (name, ctype) == (f"face-{post_id}.mp4", "video/mp4")
    with sessions() as s:
        alt = store.post(s, post_id).alt_text
    assert upload.form == {"description": [alt]}
    assert data == (settings.data_dir / "delivered" / f"{_stem(sessions, post_id)}-x8.mp4"
                    ).read_bytes()
    assert len(server.seen("GET", "/api/v1/media/")) == 3  # 202, 206, 206, then 200
    [status] = server.statuses
    assert status["media_attachments"][0]["type"] == "gifv"


def _stem(sessions, post_id: int) -> str:
    from pathlib import Path
    with sessions() as s:
        return Path(store.post(s, post_id).image_path).stem


def test_x_gets_the_gif_in_chunks(setup, x, monkeypatch):
    monkeypatch.setattr(TwitterChannel, "CHUNK", 256 * 1024)
    _, settings, sessions, channels = setup({"twitter": {}})
    post_id = posting.post_once(sessions, settings, channels, animated=True)

    d = helpers.delivery(sessions, post_id, "twitter")
    assert d.state == "posted", d.last_error
    gif = (settings.data_dir / "delivered" / f"{_stem(sessions, post_id)}-x8.gif").read_bytes()
    chunks = -(-len(gif) // (256 * 1024))
    assert chunks > 1
    uploads = [p for m, p in x.calls if p == "/2/media/upload"]
    assert len(uploads) == 1 + chunks + 1 + 2  # INIT, APPENDs, FINALIZE, STATUS until done
    [tweet] = x.tweets
    media = x.media[tweet["media_ids"][0]]
    assert media["data"] == gif and media["alt"] is not None


def test_a_gif_too_large_for_x_fails_with_what_to_change(setup, x, monkeypatch):
    monkeypatch.setattr("bot.channels.twitter.X_GIF_LIMIT", 1000)
    _, settings, sessions, channels = setup({"twitter": {}})
    post_id = posting.post_once(sessions, settings, channels, animated=True)
    d = helpers.delivery(sessions, post_id, "twitter")
    assert d.state == "failed" and d.last_error.startswith("the animation's GIF is ")
    assert "X takes at most" in d.last_error and "bot.animation.frames_per_seed" in d.last_error
    assert x.calls == []  # refused before any request


def test_the_animation_schedule(write_config):
    from bot.scheduler import (ANIMATION_JOB, add_animation_job, build_scheduler,
                               make_trigger)
    settings = load_settings(write_config(animation={"cron": "0 12 * * sun"},
                                          schedule={"timezone": "Europe/Berlin"}))
    sched = build_scheduler(settings, make_trigger(settings.schedule), lambda: None,
                            lambda: None, None)
    add_animation_job(sched, settings, lambda: None)
    add_animation_job(sched, settings, lambda: None)  # replaced, not added twice
    [job] = [j for j in helpers.scheduled_jobs(sched) if j.id == ANIMATION_JOB]
    monday = datetime(2026, 11, 30, tzinfo=timezone.utc)
    assert job.trigger.get_next_fire_time(None, monday) == datetime(
        2026, 12, 6, 11, 0, tzinfo=timezone.utc)  # Sunday 12:00 in Berlin
    assert load_settings(write_config()).animation.cron is None  # off by default


def test_animation_mistakes_are_one_line(write_config, restore_logging, capsys):
    with pytest.raises(ConfigError, match="write weekdays as names"):
        load_settings(write_config(animation={"cron": "0 12 * * 0"}))
    cfg = write_config()
    assert main(["--config", str(cfg), "post", "--animated", "--seed", "3"]) == 2
    assert capsys.readouterr().err.startswith("error: post --animated draws its own faces")
    assert not (cfg.parent / "data").exists()  # refused before anything was set up


@pytest.mark.slow
def test_in_the_daemon_the_worker_draws_the_walk_and_encodes_the_mp4(setup):
    """Neither torch nor PyAV (~65 MB more once it has encoded) in the daemon's process; the
    walk the worker draws is the one a one-shot command draws."""
    cfg, settings, sessions, channels = setup()
    assert helpers.post_in_a_worker(cfg, [44, 55, 66], animated=True) == ["False", "False"]
    assert video(settings.data_dir / "outbox" / "post-000001.mp4") == (12, 512, 512, 2.0, "h264")
    # The same walk drawn here (not in a worker) is the same GIF.
    with sessions() as s:
        walk = store.post(s, 1)
    out, same = posting.regenerate(sessions, settings, 1)
    assert same and walk.seeds == [44, 55, 66]
