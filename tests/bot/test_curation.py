"""Curated posts (bot.curate): a still post is the best-scoring of its candidates by the
shipped realism critic that passes the checks, every candidate is recorded, and curation is
off with one candidate or no critic file. The shipped checkpoint and critic, so that the
candidates are faces whose scores differ; the scores expected are computed here with
gan.realism's own classes, not through the bot."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import inspect, text

from bot import BotError, posting, store
from bot.ahead import COUNT, Ahead
from bot.cli import main
from bot.config import ConfigError, load_settings
from bot.curate import critic_key
from bot.db import alembic_config, make_engine, upgrade
from gan.memorisation import build_index
from gan.realism import Curator, FeatureNet, RealismCritic
from gan.sampling import generate_array
from helpers import (REPO, Seeds, bot_parts, post_in_a_fresh_process,
                     post_in_a_worker)

SHIPPED = REPO / "checkpoints" / "default.pt"
CRITIC = REPO / "checkpoints" / "critic.npz"


@pytest.fixture(scope="module")
def expected():
    """expected(seeds) -> the shipped critic's scores of the shipped checkpoint's faces."""
    curator = Curator(RealismCritic.load(CRITIC), FeatureNet())
    return lambda seeds: curator.scores(generate_array(SHIPPED, list(seeds)))


@pytest.fixture
def curated(write_config):
    """curated(**bot) -> (settings, sessions, channels) posting from the shipped checkpoint
    with the shipped critic (bot.curate overridable)."""
    def make(candidates: int = 4, critic: Path | None = CRITIC, index: Path | None = None,
             min_score: float | None = None, **bot):
        cfg = write_config(default_checkpoint=str(SHIPPED),
                           curate={"candidates": candidates, "min_score": min_score,
                                   "critic": None if critic is None else str(critic)},
                           memorisation={"faces": None,
                                         "index": None if index is None else str(index)},
                           **bot)
        return bot_parts(load_settings(cfg))
    return make


def _post(sessions, post_id):
    with sessions() as s:
        return store.post(s, post_id)


def test_the_post_is_the_best_candidate_and_every_candidate_is_recorded(
        curated, expected, capsys, restore_logging):
    seeds = [101, 102, 103, 104]
    settings, sessions, channels = curated(caption="Face {seed}, realism {score}.")
    post_id = posting.post_once(sessions, settings, channels, rng=Seeds(*seeds))
    scores = expected(seeds)
    post = _post(sessions, post_id)
    assert post.seed == seeds[int(np.argmax(scores))]
    assert post.score == pytest.approx(scores.max(), rel=1e-3)
    assert [c["seed"] for c in post.candidates] == seeds  # in the order drawn
    np.testing.assert_allclose([c["score"] for c in post.candidates], scores, rtol=1e-3)
    assert not any("refused" in c for c in post.candidates)  # the best passed
    assert post.caption == f"Face {post.seed}, realism {post.score:.2f}."
    # The image is the chosen seed's: regenerate re-creates it bit for bit.
    assert posting.regenerate(sessions, settings, post_id)[1]
    # The outbox sidecar has the score, and the gallery shows it.
    outbox = settings.data_dir / "outbox"
    assert json.loads((outbox / f"post-{post_id:06d}.json").read_text())["score"] == round(
        post.score, 4)
    assert f'<span class="score">score {post.score:.3g}</span>' in (
        outbox / "index.html").read_text()
    # history shows it; status says curation is on.
    cfg = str(settings.data_dir.parent / "config.yaml")
    assert main(["--config", cfg, "history"]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[3:6] == ["seed", "score", "deliveries"]
    assert row.split()[5:] == [str(post.seed), f"{post.score:.3f}", "(best", "of", "4)",
                               "outbox:posted"]
    assert main(["--config", cfg, "status"]) == 0
    assert (f"curation: on (the best of 4 candidates by the critic {CRITIC})"
            in capsys.readouterr().out)


def test_with_a_min_score_the_post_is_the_first_good_enough_candidate(curated, expected,
                                                                      capsys):
    # bot.curate.min_score cuts the tail only: the first candidate, in the order drawn, that
    # scores at least min_score is posted, even when a later one scores higher.
    seeds = list(range(301, 317))
    scores = expected(seeds)
    best = int(np.argmax(scores))
    assert best > 0, "these seeds must not have their best first"
    # A threshold met before the best: the best score among the candidates drawn before it
    # (less a hair, for the last digit of the float32 scores).
    threshold = round(float(scores[:best].max()) - 1e-4, 4)
    first_ok = next(i for i in range(len(seeds)) if scores[i] >= threshold)
    assert first_ok < best
    settings, sessions, channels = curated(candidates=16, min_score=threshold)
    post_id = posting.post_once(sessions, settings, channels, rng=Seeds(*seeds))
    post = _post(sessions, post_id)
    assert post.seed == seeds[first_ok] and post.score == pytest.approx(scores[first_ok], rel=1e-3)
    assert [c["seed"] for c in post.candidates] == seeds
    cfg = str(settings.data_dir.parent / "config.yaml")
    assert main(["--config", cfg, "status"]) == 0
    assert (f"the first of 16 candidates scoring at least {threshold:g}"
            in capsys.readouterr().out)
    assert post.seed != seeds[best]  # without min_score, seeds[best] (the test above)


def test_a_refused_best_candidate_falls_to_the_next(curated, expected, tmp_path, caplog):
    from PIL import Image
    seeds = [201, 202, 203, 204]
    scores = expected(seeds)
    best = seeds[int(np.argmax(scores))]
    # A "training face" that is the best candidate's image: the memorisation guard refuses it.
    faces = tmp_path / "training"
    faces.mkdir()
    Image.fromarray(generate_array(SHIPPED, [best])[0]).save(faces / "copied.png")
    index = build_index(faces, tmp_path / "index.npz", progress=False)
    settings, sessions, channels = curated(index=tmp_path / "index.npz")
    with caplog.at_level(logging.WARNING, logger="bot.posting"):
        post_id = posting.post_once(sessions, settings, channels, rng=Seeds(*seeds))
    post = _post(sessions, post_id)
    # The next best that the guard lets through (here: the second best, unless that one is
    # near the copied face too).
    near = index.nearest(generate_array(SHIPPED, seeds))[0] < settings.memorisation.min_distance
    order = [seeds[i] for i in np.argsort(-scores)]
    assert near[seeds.index(best)] and order[0] == best
    assert post.seed == next(k for k in order if not near[seeds.index(k)]) != best
    refused = {c["seed"]: c.get("refused") for c in post.candidates}
    assert refused[best] == "memorisation" and refused[post.seed] is None
    assert f"seed {best} is too close to the training face copied.png" in caplog.text


def test_when_all_candidates_are_refused_more_are_drawn(curated, expected, tmp_path):
    from PIL import Image
    first, second = [301, 302], [304, 303]
    faces = tmp_path / "training"
    faces.mkdir()
    for k, image in zip(first, generate_array(SHIPPED, first)):
        Image.fromarray(image).save(faces / f"copy-{k}.png")
    build_index(faces, tmp_path / "index.npz", progress=False)
    settings, sessions, channels = curated(candidates=2, index=tmp_path / "index.npz")
    post = _post(sessions, posting.post_once(sessions, settings, channels,
                                             rng=Seeds(*first, *second)))
    scores = expected(second)
    assert post.seed == second[int(np.argmax(scores))]
    assert [c["seed"] for c in post.candidates] == first + second
    assert [c.get("refused") for c in post.candidates[:2]] == ["memorisation"] * 2


def test_one_candidate_posts_the_first_seed_and_reads_no_critic(curated, tmp_path, caplog):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a critic")  # never read with candidates: 1
    settings, sessions, channels = curated(candidates=1, critic=junk)
    with caplog.at_level(logging.WARNING):
        post = _post(sessions, posting.post_once(sessions, settings, channels,
                                                 rng=Seeds(7, 8)))
    assert (post.seed, post.score, post.candidates) == (7, None, None)
    assert "curation" not in caplog.text
    assert post.caption.startswith("Face #1 (seed 7)")  # the default caption, no score in it
    # With two candidates the same file is read, and refused in one line naming the setting.
    settings.curate.candidates = 2
    with pytest.raises(BotError, match=r"^bot.curate.critic: .*junk.npz: not a readable "
                                       r"realism critic"):
        posting.post_once(sessions, settings, channels, rng=Seeds(9, 10))


def test_a_missing_critic_warns_once_and_posts_uncurated(curated, tmp_path, caplog):
    missing = tmp_path / "no-critic.npz"
    settings, sessions, channels = curated(candidates=8, critic=missing)
    with caplog.at_level(logging.WARNING):
        posts = [_post(sessions, posting.post_once(sessions, settings, channels, rng=Seeds(k)))
                 for k in (11, 12)]
    assert [(p.seed, p.score, p.candidates) for p in posts] == [(11, None, None),
                                                                (12, None, None)]
    warnings = [r.getMessage() for r in caplog.records if "curation off" in r.getMessage()]
    assert warnings == [f"curation off: the realism critic {missing} (bot.curate.critic) is "
                        "not there, so each post is the first fresh seed, not the best of "
                        "bot.curate.candidates; build it with `python train.py critic FACES "
                        "--out PATH`, or set critic: null to silence this"]


def test_post_seed_posts_exactly_that_seed_uncurated(curated):
    settings, sessions, channels = curated()
    post = _post(sessions, posting.post_once(sessions, settings, channels, seed=4242))
    assert (post.seed, post.score, post.candidates) == (4242, None, None)


def test_a_dry_run_shows_the_best_candidate_and_the_post_records_its_candidates(
        curated, expected):
    settings, sessions, channels = curated(candidates=3)
    seeds = [22, 23, 21]
    preview = posting.dry_run(sessions, settings, list(channels), rng=Seeds(*seeds))
    scores = expected(seeds)
    assert preview.seed == seeds[int(np.argmax(scores))] and preview.candidates == 3
    post = _post(sessions, posting.post_once(sessions, settings, channels))
    assert post.seed == preview.seed and post.score == pytest.approx(preview.score)
    assert [c["seed"] for c in post.candidates] == seeds


def test_posts_take_scored_candidates_drawn_ahead(curated, expected):
    """A post that loads the checkpoint draws COUNT posts' worth of candidates ahead, with
    their scores; the next post takes `candidates` of them and posts the best by those
    scores, which are the critic's."""
    settings, sessions, channels = curated(candidates=2)
    posting.post_once(sessions, settings, channels)  # draws, and fills
    with sessions() as s:
        ahead = Ahead(settings.data_dir, store.active_checkpoint(s).sha256)
    kept = ahead.seeds()
    assert len(kept) == COUNT * 2
    key = critic_key(CRITIC)
    stored = [ahead.get_scored(k, key)[1] for k in kept]
    np.testing.assert_allclose(stored, expected(kept), rtol=1e-3)
    post = _post(sessions, posting.post_once(sessions, settings, channels))
    taken = kept[:2]
    assert [c["seed"] for c in post.candidates] == taken
    assert post.seed == taken[int(np.argmax(stored[:2]))]
    assert ahead.seeds() == kept[2:]  # the one passed over is gone too
    assert posting.regenerate(sessions, settings, post.id)[1]
    # Scored by another critic (or none): drawn and scored again, not taken as they are.
    assert ahead.get_scored(kept[2], "another-critic")[1] is None


@pytest.mark.slow
def test_curated_posts_taken_ahead_import_no_torch(curated, expected):
    settings, sessions, channels = curated(candidates=2)
    cfg = settings.data_dir.parent / "config.yaml"
    assert post_in_a_fresh_process(cfg) == "0 True"  # draws, scores, and fills
    with sessions() as s:
        ahead = Ahead(settings.data_dir, store.active_checkpoint(s).sha256)
    kept = ahead.seeds()
    assert post_in_a_fresh_process(cfg) == "0 False"
    post = _post(sessions, 2)
    scores = expected(kept[:2])
    assert post.seed == kept[int(np.argmax(scores))]
    np.testing.assert_allclose([c["score"] for c in post.candidates], scores, rtol=1e-3)


@pytest.mark.slow
def test_in_the_daemon_the_worker_draws_and_scores_without_torch_here(curated, expected):
    settings, sessions, channels = curated(candidates=3)
    cfg = settings.data_dir.parent / "config.yaml"
    assert post_in_a_worker(cfg, [31, 32, 33]) == ["False", "False"]  # no torch here
    post = _post(sessions, 1)
    scores = expected([31, 32, 33])
    assert post.seed == [31, 32, 33][int(np.argmax(scores))]
    np.testing.assert_allclose([c["score"] for c in post.candidates], scores, rtol=1e-3)


def test_curate_settings_are_checked(write_config):
    with pytest.raises(ConfigError, match=r"bot.curate.candidates.*greater than or equal to 1"):
        load_settings(write_config(curate={"candidates": 0}))
    with pytest.raises(ConfigError, match=r"bot.curate.critcs"):
        load_settings(write_config(curate={"critcs": "x.npz"}))
    s = load_settings(write_config(curate={"critic": "sub/c.npz"}))
    assert s.curate.critic == s.data_dir.parent / "sub" / "c.npz"  # the config file's folder
    default = load_settings(write_config(curate={})).curate
    assert (default.candidates, default.critic) == (8, s.data_dir.parent / "checkpoints" /
                                                    "critic.npz")
    assert default.min_score is None  # the best candidate, unless a min_score is set
    with pytest.raises(ConfigError, match=r"bot.curate.min_score.*greater than 0"):
        load_settings(write_config(curate={"min_score": 0}))


def test_migration_0006_adds_and_removes_the_curation_columns(tmp_path):
    from alembic import command
    engine = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
        conn.execute(text(
            "INSERT INTO checkpoints (id, path, sha256, variant, step, images_seen, "
            "published_at, active) VALUES (1, 'x.pt', 'ab', 'dcgan', 1, 1, "
            "'2026-12-06 00:00:00', 1)"))
        conn.execute(text(
            "INSERT INTO posts (id, created_at, checkpoint_id, seed, image_path, image_sha256, "
            "phash, caption, alt_text) VALUES (1, '2026-12-06 00:00:00', 1, 5, 'a.png', 'cd', "
            "'ef', 'c', 'a')"))
    assert "score" not in {c["name"] for c in inspect(engine).get_columns("posts")}
    upgrade(engine)  # to head: the old post is uncurated
    with engine.begin() as conn:
        assert conn.execute(text("SELECT seed, score, candidates FROM posts")).one() == (
            5, None, None)
        conn.execute(text("UPDATE posts SET score = 1.5, candidates = '[{\"seed\": 5}]'"))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    columns = {c["name"] for c in inspect(engine).get_columns("posts")}
    assert {"score", "candidates"}.isdisjoint(columns) and "seed" in columns
    with engine.connect() as conn:
        assert conn.execute(text("SELECT seed FROM posts")).scalar() == 5  # the post stays


def test_the_daemon_says_at_start_whether_posts_are_curated(write_config, tmp_path, caplog):
    from bot.curate import log_curation

    def said(**curate):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="bot.curate"):
            log_curation(load_settings(write_config(curate=curate)).curate)
        return caplog.records[-1].getMessage()

    assert said(critic=str(CRITIC)) == (
        f"curation on: each still post is the best of 8 candidates by the realism critic "
        f"{CRITIC} ({RealismCritic.load(CRITIC).faces} training faces)")
    assert said(critic=str(CRITIC), min_score=0.65) == (
        f"curation on: each still post is the first of 8 candidates scoring at least 0.65 "
        f"(else the best) by the realism critic {CRITIC} "
        f"({RealismCritic.load(CRITIC).faces} training faces)")
    assert said(candidates=1, critic=str(CRITIC)) == ("curation off (bot.curate.candidates "
                                                      "is 1)")
    assert said(critic=None) == "curation off (bot.curate.critic is null)"
    assert said(critic="gone.npz").startswith(f"curation off: the realism critic "
                                              f"{tmp_path / 'gone.npz'} (bot.curate.critic) is "
                                              "not there")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(BotError, match=r"^bot.curate.critic: .*junk.npz: not a readable"):
        said(critic="junk.npz")  # a broken file stops the start, not the first post


def test_a_channels_own_caption_can_quote_the_score(tmp_path):
    from datetime import datetime, timezone

    from bot.channels.base import Outgoing
    out = Outgoing(post_id=3, idempotency_key="k", image_path=tmp_path / "x.png", caption="c",
                   alt_text="a", seed=5, checkpoint="default.pt", variant="dcgan", step=1,
                   images_seen=1000, created_at=datetime.now(timezone.utc), score=1.2345)
    assert out.render("#{post_number}, realism {score}") == "#3, realism 1.23"
    assert Outgoing(**{**out.__dict__, "score": None}).render("realism {score}") == "realism"
