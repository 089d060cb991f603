"""The memorisation guard: a training face fed as a sample is refused, a fresh sample passes;
the bot redraws such images and says why; publish records metrics.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot import BotError, guard, posting, store
from bot.checkpoints import publish
from bot.config import ConfigError, Memorisation, load_settings
from bot.db import open_database
from gan.memorisation import NearestIndex, build_index, thumbnails
from helpers import Seeds, draw_with, started
from tests.conftest import REAL_FACES

DEFAULT_MIN = Memorisation().min_distance
SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "default.pt"


class Recorder:
    def __init__(self):
        self.posts = []

    def deliver(self, post):
        from bot.channels.base import Receipt
        self.posts.append(post.post_id)
        return Receipt(str(post.post_id), None)


@pytest.fixture
def index_file(faces_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "index" / "faces.npz"
    build_index(faces_dir, out, cache_dir=None, progress=False)
    return out


def face(faces_dir: Path, i: int) -> np.ndarray:
    return np.asarray(Image.open(faces_dir / f"face{i:03d}.png").convert("RGB"))


def test_a_training_face_is_at_zero_and_found_by_name(faces_dir, index_file):
    index = NearestIndex.load(index_file)
    assert len(index) == 24 and index.source == str(faces_dir.resolve())
    for i in (0, 7, 23):
        d, name = index.nearest_face(face(faces_dir, i))
        assert d < 0.02 and name == f"face{i:03d}.png"  # float16 storage: ~0.001
        assert index.nearest_face(face(faces_dir, i)[:, ::-1])[0] < 0.02  # mirrored, too
    d, _ = index.nearest(np.stack([face(faces_dir, 3)] * 3))
    assert (d < DEFAULT_MIN).all()


def test_index_command_names_faces_also_from_the_decoded_cache(faces_dir, tmp_path, capsys):
    from gan.cli import main

    (faces_dir / "broken.png").write_bytes(b"not a png")  # skipped: names must still line up
    for _ in range(2):  # decoded, then from the cache
        out = tmp_path / "i.npz"
        assert main(["index", str(faces_dir), "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache")]) == 0
        assert "indexed 24 faces" in capsys.readouterr().out
        index = NearestIndex.load(out)
        assert index.nearest_face(face(faces_dir, 9))[1] == "face009.png"
        out.unlink()


def test_features_ignore_brightness_and_contrast_not_content():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 200, (64, 64, 3)).astype(np.uint8)
    brighter = (img * 1.2 + 10).astype(np.uint8)
    a, b = thumbnails(np.stack([img, brighter]))
    assert np.linalg.norm(a - b) < 0.02 and np.linalg.norm(a) == pytest.approx(1, abs=1e-5)
    other = thumbnails(rng.integers(0, 256, (64, 64, 3)).astype(np.uint8))[0]
    assert np.linalg.norm(a - other) > 1.0  # unrelated noise: ~sqrt(2)
    flat = thumbnails(np.full((1, 64, 64, 3), 128, np.uint8))[0]
    assert not flat.any()  # no direction: distance 1 from everything


def test_a_fresh_sample_passes(tiny_checkpoint, faces_dir, index_file):
    from gan.sampling import generate_array
    index = NearestIndex.load(index_file)
    d, _ = index.nearest(generate_array(tiny_checkpoint, [0, 1, 2, 3]))
    assert (d > DEFAULT_MIN).all()


def test_a_bad_index_file_is_a_clear_error(tmp_path):
    from gan.data import DataError
    with pytest.raises(DataError, match="memorisation index not found: .*nope.npz"):
        NearestIndex.load(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=np.zeros((2, 256)))
    with pytest.raises(DataError, match="not a memorisation index of this version"):
        NearestIndex.load(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable memorisation index"):
        NearestIndex.load(tmp_path / "junk.npz")


def post_past_a_training_face(settings, faces_dir, monkeypatch, caplog):
    """One post where seed 2 "draws" training face 5 (to be refused) and seed 3 is the
    model's own; returns the sessions and the copied face."""
    sessions = started(settings)
    copy = Image.fromarray(face(faces_dir, 5))
    draw_with(monkeypatch, lambda ck, seed: copy if seed == 2 else posting.render(ck, seed))
    with caplog.at_level(logging.INFO, logger="bot"):
        post_id = posting.post_once(sessions, settings, {"a": Recorder()}, rng=Seeds(2, 3))
    with sessions() as s:
        assert store.post(s, post_id).seed == 3
    return sessions, copy


def test_the_bot_redraws_a_training_face_and_says_why(write_config, faces_dir, index_file,
                                                      monkeypatch, caplog):
    settings = load_settings(write_config(memorisation={"index": str(index_file)}))
    assert settings.memorisation.min_distance == DEFAULT_MIN
    sessions, copy = post_past_a_training_face(settings, faces_dir, monkeypatch, caplog)
    assert "seed 2 is too close to the training face face005.png (distance 0.0" in caplog.text
    assert "below memorisation.min_distance 0.35" in caplog.text

    draw_with(monkeypatch, lambda ck, seed: copy)
    settings.dedup.max_draws = 3
    with pytest.raises(BotError, match="all 3 draws were too close to a training face"):
        posting.post_once(sessions, settings, {"a": Recorder()}, rng=Seeds(4, 5, 6))


def test_the_guard_has_four_sources(write_config, faces_dir):
    def kind(**memorisation):
        s = load_settings(write_config(memorisation=memorisation))
        return guard.guard_source(s.memorisation, s.data_dir).kind

    assert kind(faces=None) is guard.Source.OFF
    assert kind(index="x.npz", faces=None) is guard.Source.INDEX  # even when the file is not there
    assert kind(faces="no-such-folder") is guard.Source.MISSING
    assert kind(faces=str(faces_dir)) is guard.Source.FACES


def test_guard_off_when_both_null_and_said_at_start(write_config, tmp_path, caplog):
    settings = load_settings(write_config(memorisation={"faces": None}))
    assert settings.memorisation.index is None and settings.memorisation.faces is None
    assert guard.load_guard(settings.memorisation, settings.data_dir) is None
    with caplog.at_level(logging.INFO, logger="bot"):
        guard.log_guard(settings.memorisation, settings.data_dir)
    assert "memorisation guard off (bot.memorisation.index and .faces are null)" in caplog.text
    assert guard.describe_guard(settings.memorisation, settings.data_dir).startswith("off (")
    # A relative index path resolves against the config file; a missing one fails at start.
    missing = load_settings(write_config(memorisation={"index": "faces.npz",
                                                       "min_distance": 0.3}))
    assert missing.memorisation.index == tmp_path / "faces.npz"
    with pytest.raises(BotError, match="bot.memorisation.index: memorisation index not found"):
        guard.log_guard(missing.memorisation, missing.data_dir)
    with pytest.raises(ConfigError, match="bot.memorisation.min_distance"):
        load_settings(write_config(memorisation={"min_distance": 3}))


def test_faces_default_to_the_projects_layout_beside_the_config(tmp_path):
    cfg = tmp_path / "repo" / "config.yaml"
    cfg.parent.mkdir()
    cfg.write_text("bot: {}\n")
    faces = load_settings(cfg).memorisation.faces
    assert faces.resolve() == tmp_path / "shared" / "data" / "animefaces"


def test_the_bot_indexes_the_faces_folder_once_and_refuses_a_training_face(
        write_config, faces_dir, tmp_path, monkeypatch, caplog):
    # Relative to the config file, like every path there; no index file given.
    settings = load_settings(write_config(memorisation={"faces": "faces"}))
    assert settings.memorisation.faces == faces_dir and settings.memorisation.index is None
    own = settings.data_dir / "faces-index.npz"
    assert "built at the next start or post" in guard.describe_guard(
        settings.memorisation, settings.data_dir)

    # The first post of a one-shot `post` builds the index, then refuses a training face fed
    # as a sample.
    sessions, copy = post_past_a_training_face(settings, faces_dir, monkeypatch, caplog)
    assert f"building the memorisation index of {faces_dir} into {own} (once)" in caplog.text
    assert "memorisation index built: 24 faces" in caplog.text
    assert "seed 2 is too close to the training face face005.png (distance 0.0" in caplog.text
    index = NearestIndex.load(own)
    assert len(index) == 24 and index.source == str(faces_dir.resolve())
    status = guard.describe_guard(settings.memorisation, settings.data_dir)
    assert status.startswith(f"on (index of the training faces in {faces_dir}: {own}, built;")

    # Later posts and a (re)start use that file as it is.
    mtime = own.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bot"):
        guard.log_guard(settings.memorisation, settings.data_dir)
        posting.post_once(sessions, settings, {"a": Recorder()}, rng=Seeds(2, 4))
    assert "memorisation guard on: images nearer than 0.35 to one of the 24 training faces " \
        f"in {own}" in caplog.text
    assert "seed 2 is too close to the training face face005.png" in caplog.text
    assert "building" not in caplog.text
    assert own.stat().st_mtime_ns == mtime


def test_an_index_of_another_folder_or_a_broken_one_is_built_again(write_config, faces_dir,
                                                                   tmp_path, caplog):
    settings = load_settings(write_config(memorisation={"faces": str(faces_dir)}))
    own = settings.data_dir / "faces-index.npz"
    other = tmp_path / "other"
    other.mkdir()
    for i in range(3):
        (other / f"face{i:03d}.png").write_bytes((faces_dir / f"face{i:03d}.png").read_bytes())
    build_index(other, own, cache_dir=None, progress=False)
    assert len(NearestIndex.load(own)) == 3
    assert "built at the next start or post" in guard.describe_guard(
        settings.memorisation, settings.data_dir)
    with caplog.at_level(logging.INFO, logger="bot"):
        guard.log_guard(settings.memorisation, settings.data_dir)  # at the daemon's start
    assert f"(once) (the old one is of {other.resolve()}) ..." in caplog.text
    assert "one of the 24 training faces" in caplog.text
    index = guard.load_guard(settings.memorisation, settings.data_dir)
    assert len(index) == 24 and index.source == str(faces_dir.resolve())
    assert index.nearest_face(face(faces_dir, 20))[1] == "face020.png"

    own.write_bytes(b"not a zip")  # e.g. cut short by a full disk
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bot"):
        assert len(guard.load_guard(settings.memorisation, settings.data_dir)) == 24
    assert "(the old one is unreadable)" in caplog.text


def test_a_missing_faces_folder_turns_the_guard_off_with_a_warning(write_config, tmp_path,
                                                                   caplog):
    settings = load_settings(write_config(memorisation={"faces": "no-such-faces"}))
    missing = tmp_path / "no-such-faces"
    # The bot still posts; a one-shot post says why the guard is off, once per process.
    sessions = started(settings)
    with caplog.at_level(logging.WARNING, logger="bot"):
        posting.post_once(sessions, settings, {"a": Recorder()}, rng=Seeds(1))
        posting.post_once(sessions, settings, {"a": Recorder()}, rng=Seeds(2))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"memorisation guard off: the training faces folder {missing} ")
    assert "set bot.memorisation.faces" in warnings[0]
    assert "bot.memorisation.index" in warnings[0]
    assert guard.load_guard(settings.memorisation, settings.data_dir) is None
    assert not (settings.data_dir / "faces-index.npz").exists()
    assert guard.describe_guard(settings.memorisation, settings.data_dir).startswith(
        f"off (the training faces folder {missing} is not there")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bot"):
        guard.log_guard(settings.memorisation, settings.data_dir)  # the daemon: always said
    assert caplog.text.count("memorisation guard off: the training faces folder") == 1


def test_guard_on_is_said_at_start(index_file, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="bot"):
        guard.log_guard(Memorisation(index=index_file), tmp_path)
    assert "memorisation guard on: images nearer than 0.35 to one of the 24 training faces" \
        in caplog.text


def test_publish_records_the_metrics_beside_the_checkpoint(write_config, tmp_path, caplog):
    from gan.metrics import file_sha256
    from gan.testing import make_tiny_checkpoint

    ck = make_tiny_checkpoint(tmp_path / "run" / "mine.pt", seed=3)
    metrics = {"fhd": 4.8731, "kid_mean": 0.0091, "precision": 0.6, "recall": 0.3,
               "checkpoint": {"file": "mine.pt", "sha256": file_sha256(ck)}}
    (ck.parent / "mine.metrics.json").write_text(json.dumps(metrics))
    settings = load_settings(write_config(quality_metric="fhd", caption="{quality}"))
    sessions = open_database(settings.database_url)
    row = publish(sessions, ck)
    assert row.metrics == metrics
    post_id = posting.post_once(sessions, settings, {"a": Recorder()}, rng=Seeds(1))
    with sessions() as s:
        assert store.post(s, post_id).caption == "FHD 4.87"

    # metrics.json of another file (the checkpoint changed since) is not believed.
    make_tiny_checkpoint(ck, seed=4)
    with caplog.at_level(logging.WARNING):
        assert publish(sessions, ck).metrics is None
    assert "measured another file" in caplog.text


def test_the_caption_quotes_the_learned_feature_fld_by_default(write_config, tmp_path):
    # evaluate's default measure is FLD (EfficientNet-Lite2 features); the caption follows it.
    from gan.metrics import file_sha256
    from gan.testing import make_tiny_checkpoint

    ck = make_tiny_checkpoint(tmp_path / "run" / "mine.pt", seed=3)
    (ck.parent / "mine.metrics.json").write_text(json.dumps(
        {"fld": 1450.39, "fhd": 3.31, "checkpoint": {"file": "mine.pt", "sha256": file_sha256(ck)}}))
    settings = load_settings(write_config(caption="{quality}"))
    sessions = open_database(settings.database_url)
    publish(sessions, ck)
    post_id = posting.post_once(sessions, settings, {"a": Recorder()}, rng=Seeds(1))
    with sessions() as s:
        assert store.post(s, post_id).caption == "FLD 1450"


@pytest.mark.skipif(not REAL_FACES.is_dir(), reason=f"real faces not found at {REAL_FACES}")
def test_real_faces_refused_shipped_samples_accepted(tmp_path):
    """The default threshold on real data: 300 real faces are the index; they come back as
    copies (also JPEG re-encoded), while the shipped checkpoint's samples pass."""
    import io

    from gan.data import open_rgb, to_face
    from gan.sampling import generate_array

    files = sorted(REAL_FACES.glob("*.jpg"))[:300]
    real = np.stack([to_face(open_rgb(p)) for p in files])
    index = NearestIndex.from_images(real, [p.name for p in files])
    index.save(tmp_path / "real.npz")
    index = NearestIndex.load(tmp_path / "real.npz")
    d, i = index.nearest(real[::30])
    assert (d < 0.02).all() and (i == np.arange(0, 300, 30)).all()
    recoded = []
    for img in real[::30]:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=50)
        recoded.append(np.asarray(Image.open(buf).convert("RGB")))
    assert (index.nearest(np.stack(recoded))[0] < DEFAULT_MIN).all()
    d, _ = index.nearest(generate_array(SHIPPED, list(range(16))))
    assert (d > DEFAULT_MIN).all(), d


def test_hostile_faces_are_skipped_by_the_index_command_and_the_bots_build(
        write_config, faces_dir, tmp_path, capsys, caplog):
    from gan.cli import main
    from tests.conftest import write_bomb_png

    write_bomb_png(faces_dir / "bomb.png")
    (faces_dir / "album.jpg").mkdir()
    (faces_dir / "._face000.png").write_bytes(b"\0\5\x16\7" + b"\0" * 80)
    assert main(["index", str(faces_dir), "--out", str(tmp_path / "i.npz"),
                 "--cache-dir", "none"]) == 0
    assert "indexed 24 faces" in capsys.readouterr().out
    settings = load_settings(write_config(memorisation={"faces": str(faces_dir)}))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        guard.log_guard(settings.memorisation, settings.data_dir)
    assert "memorisation index built: 24 faces" in caplog.text
    skipped = next(r.getMessage() for r in caplog.records if "skipped 3 file(s)" in r.getMessage())
    assert all(n in skipped for n in ("bomb.png", "album.jpg", "._face000.png"))
