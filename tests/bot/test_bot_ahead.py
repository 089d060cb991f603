"""Images drawn ahead: after one post has loaded the checkpoint, the next `python -m bot post`
needs no torch, and what it posts is what drawing its seed gives."""

from __future__ import annotations

import numpy as np

from bot import posting, store
from bot.ahead import COUNT, Ahead
from bot.checkpoints import load_published, render, render_candidates
from bot.config import load_settings
from helpers import Seeds, bot_parts, post_in_a_fresh_process, started


def test_the_second_post_takes_an_image_drawn_ahead_without_torch(write_config):
    cfg = write_config()
    assert post_in_a_fresh_process(cfg) == "0 True"  # loads the checkpoint, draws ahead
    settings = load_settings(cfg)
    sessions = started(settings)
    with sessions() as s:
        sha = store.active_checkpoint(s).sha256
    kept = Ahead(settings.data_dir, sha).seeds()
    assert len(kept) == COUNT
    assert post_in_a_fresh_process(cfg) == "0 False"
    with sessions() as s:
        second = store.post(s, 2)
        assert second.seed in kept and second.seed not in Ahead(settings.data_dir, sha).seeds()
    out, same = posting.regenerate(sessions, settings, 2)
    assert same  # the kept image is exactly what its seed draws


def test_a_dry_run_shows_a_kept_image_and_the_post_is_that_one(write_config):
    settings, sessions, channels = bot_parts(load_settings(write_config()))
    posting.post_once(sessions, settings, channels)  # fills
    preview = posting.dry_run(sessions, settings, list(channels))
    with sessions() as s:
        sha = store.active_checkpoint(s).sha256
    assert preview.seed in Ahead(settings.data_dir, sha).seeds()  # still there for the post
    post_id = posting.post_once(sessions, settings, channels)
    with sessions() as s:
        assert store.post(s, post_id).seed == preview.seed


def test_kept_images_are_checked_like_fresh_ones_and_of_this_checkpoint_only(write_config):
    settings, sessions, channels = bot_parts(load_settings(write_config()))
    with sessions() as s:
        row = store.active_checkpoint(s)
    ahead = Ahead(settings.data_dir, row.sha256)
    ck = load_published(row)
    ahead.fill(lambda ks: render_candidates(ck, ks, None), Seeds(5, 6), set(),
               posting.pick_seed, count=2)
    other = settings.data_dir / "ahead" / "0123456789abcdef-9.png"
    other.write_bytes((settings.data_dir / "ahead" / f"{row.sha256[:16]}-5.png").read_bytes())
    # Seed 5 was posted meanwhile (a scripted rng ignores kept images): the draw skips it.
    posting.post_once(sessions, settings, channels, rng=Seeds(5))
    assert ahead.seeds() == [5, 6]
    post_id = posting.post_once(sessions, settings, channels)
    with sessions() as s:
        assert store.post(s, post_id).seed == 6
    assert ahead.seeds() == [] and other.exists()
    posting.post_once(sessions, settings, channels)  # none kept: drawn now, and ahead again
    assert not other.exists()  # another checkpoint's, removed when the folder was filled
    seeds = ahead.seeds()
    assert len(seeds) == COUNT
    assert np.array_equal(np.asarray(ahead.get(seeds[0])), np.asarray(render(ck, seeds[0])))
