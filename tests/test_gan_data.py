"""Loading any image folder into uint8 faces, and cleaning it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from gan.data import DataError, FaceDataset, clean
from tests.conftest import synthetic_face


def test_any_format_mode_and_size_becomes_64px_rgb(tmp_path):
    rng = np.random.default_rng(1)
    face = Image.fromarray(synthetic_face(rng, 96))
    face.save(tmp_path / "a.jpg")
    face.convert("L").save(tmp_path / "b.png")  # grayscale
    face.convert("P").save(tmp_path / "c.png")  # palette
    rgba = face.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: must come out white, not black
    rgba.save(tmp_path / "d.png")
    face.resize((120, 80)).save(tmp_path / "e.webp")  # wide: center-cropped
    ds = FaceDataset.load(tmp_path, cache_dir=None, progress=False)
    assert ds.images.shape == (5, 3, 64, 64) and ds.images.dtype.is_floating_point is False
    assert int(ds.images[3].min()) == 255
    x = ds.batch(np.arange(5))
    assert x.min() >= -1 and x.max() <= 1
    gray = ds.images[1]
    assert np.array_equal(gray[0], gray[1])


def test_flip_mirrors_selected_rows(faces_dir):
    import torch
    ds = FaceDataset.load(faces_dir, cache_dir=None, progress=False)
    idx = torch.tensor([0, 1])
    plain = ds.batch(idx)
    flipped = ds.batch(idx, torch.tensor([True, False]))
    assert torch.equal(flipped[0], plain[0].flip(-1)) and torch.equal(flipped[1], plain[1])


def test_unreadable_files_are_skipped_and_counted(faces_dir, caplog):
    (faces_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    good = (faces_dir / "face000.png").read_bytes()
    (faces_dir / "truncated.png").write_bytes(good[: len(good) // 2])
    ds = FaceDataset.load(faces_dir, cache_dir=None, progress=False)
    assert len(ds) == 24
    assert sorted(p.name for p in ds.skipped) == ["broken.png", "truncated.png"]
    assert "skipped 2 unreadable image(s)" in caplog.text


def test_cache_is_used_and_invalidated(faces_dir, tmp_path):
    cache = tmp_path / "cache"
    a = FaceDataset.load(faces_dir, cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.npz"))) == 1
    b = FaceDataset.load(faces_dir, cache_dir=cache, progress=False)
    assert np.array_equal(a.images, b.images)
    (faces_dir / "face000.png").unlink()
    c = FaceDataset.load(faces_dir, cache_dir=cache, progress=False)
    assert len(c) == 23


@pytest.mark.parametrize("setup,message", [
    (lambda p: None, "image folder not found"),
    (lambda p: p.mkdir(), "no image files"),
    (lambda p: (p.mkdir(), (p / "x.jpg").write_text("not an image")), "no readable image"),
])
def test_bad_folders_are_clear_errors(tmp_path, setup, message):
    folder = tmp_path / "faces"
    setup(folder)
    with pytest.raises(DataError, match=message):
        FaceDataset.load(folder, cache_dir=None, progress=False)


def test_clean_finds_and_moves_each_kind_of_problem(faces_dir, tmp_path):
    rng = np.random.default_rng(5)
    (faces_dir / "notes.txt").write_text("hello")
    good = (faces_dir / "face001.png").read_bytes()
    (faces_dir / "cut.png").write_bytes(good[: len(good) // 3])
    Image.fromarray(synthetic_face(rng, 20)).save(faces_dir / "tiny.png")
    Image.new("RGB", (64, 64), (200, 200, 200)).save(faces_dir / "blank.png")
    shutil.copy(faces_dir / "face002.png", faces_dir / "z-copy-of-face002.png")
    Image.open(faces_dir / "face003.png").save(faces_dir / "z-again-face003.jpg", quality=90)
    report = clean(faces_dir, progress=False)
    found = {cat: sorted(p.name for p, _ in items) for cat, items in report.problems.items()}
    assert found == {"unreadable": ["cut.png"], "not-image": ["notes.txt"],
                     "too-small": ["tiny.png"], "near-blank": ["blank.png"],
                     "duplicate": ["z-copy-of-face002.png"],
                     "near-duplicate": ["z-again-face003.jpg"]}
    moved = tmp_path / "rejected"
    clean(faces_dir, moved, progress=False)
    assert (moved / "duplicate" / "z-copy-of-face002.png").is_file()
    assert not (faces_dir / "blank.png").exists()
    assert len(list(faces_dir.iterdir())) == 24
    assert clean(faces_dir, progress=False).flagged == 0


def test_real_faces_load(real_faces, tmp_path):
    for p in real_faces:
        shutil.copy(p, tmp_path / p.name)
    ds = FaceDataset.load(tmp_path, cache_dir=None, progress=False)
    assert ds.images.shape == (len(real_faces), 3, 64, 64)
    assert ds.images.float().std() > 20  # real pictures, not blanks
    assert clean(tmp_path, progress=False).flagged == 0
