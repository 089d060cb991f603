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
    assert [name for name, _ in ds.skipped] == ["broken.png", "truncated.png"]
    assert "skipped 2 file(s)" in caplog.text


def test_cache_is_used_and_invalidated(faces_dir, tmp_path):
    cache = tmp_path / "cache"
    a = FaceDataset.load(faces_dir, cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.npz"))) == 1
    b = FaceDataset.load(faces_dir, cache_dir=cache, progress=False)
    assert np.array_equal(a.images, b.images)
    (faces_dir / "face000.png").unlink()
    c = FaceDataset.load(faces_dir, cache_dir=cache, progress=False)
    assert len(c) == 23


def test_a_cache_file_it_did_not_write_is_decoded_again(faces_dir, tmp_path):
    cache = tmp_path / "cache"
    a = FaceDataset.load(faces_dir, cache_dir=cache, progress=False)
    [file] = cache.glob("*.npz")
    np.savez(file, images=a.images.numpy()[:3])  # no names, no skip reasons: not ours
    b = FaceDataset.load(faces_dir, cache_dir=cache, progress=False)
    assert np.array_equal(a.images, b.images) and b.names == a.names
    with np.load(file) as z:
        assert {"images", "names", "skipped"} <= set(z.files)  # written again, whole


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


def _hostile(folder):
    """A bomb, a 16-bit grayscale ramp, a folder named like an image, AppleDouble files."""
    from tests.conftest import write_bomb_png
    write_bomb_png(folder / "bomb.png")
    ramp = (np.arange(64)[None, :].repeat(64, 0) * 1040).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(folder / "deep.png")
    (folder / "album.jpg").mkdir()
    (folder / "._face000.png").write_bytes(b"\0\5\x16\7" + b"\0" * 80)  # macOS metadata
    (folder / "._face001.png").write_bytes(b"\0\5\x16\7" + b"\0" * 80)
    return ramp


def test_hostile_files_are_skipped_and_named(faces_dir, tmp_path, caplog):
    ramp = _hostile(faces_dir)
    ds = FaceDataset.load(faces_dir, cache_dir=tmp_path / "cache", progress=False)
    assert len(ds) == 25  # the 24 faces and the 16-bit one
    assert [name for name, _ in ds.skipped] == ["._face000.png", "._face001.png",
                                                "album.jpg", "bomb.png"]
    assert "skipped 4 file(s)" in caplog.text
    for name in ("bomb.png", "album.jpg", "._face000.png", "._face001.png"):
        assert name in caplog.text
    assert "DecompressionBomb" not in caplog.text
    # 16 bits scaled to 8, not clipped to white: the ramp's ends are black and white.
    deep = ds.images[ds.names.index("deep.png")][0].numpy().astype(int)
    assert deep[:, 0].max() == 0 and deep[:, -1].min() >= 250
    assert np.abs(deep[0] - ramp[0] / 257).max() <= 3  # resampling changes a step or two
    # The decoded cache remembers what was skipped, and why.
    again = FaceDataset.load(faces_dir, cache_dir=tmp_path / "cache", progress=False)
    assert again.skip_reasons == ds.skip_reasons and len(again) == 25


def test_skip_warning_names_five_and_the_list_goes_to_a_file(faces_dir, tmp_path, caplog):
    for i in range(8):
        (faces_dir / f"bad{i}.png").write_bytes(b"not a png")
    ds = FaceDataset.load(faces_dir, cache_dir=None, progress=False)
    line = next(r.getMessage() for r in caplog.records if "skipped" in r.getMessage())
    assert sum(f"bad{i}.png" in line for i in range(8)) == 5 and "3 more" in line
    listing = ds.write_skipped(tmp_path / "run" / "skipped.txt").read_text().splitlines()
    assert [x.split("\t")[0] for x in listing] == [f"bad{i}.png" for i in range(8)]
    assert all("not an image" in x for x in listing)


def test_clean_reports_hostile_files(faces_dir):
    _hostile(faces_dir)
    report = clean(faces_dir, progress=False, near_dup_bits=-1)
    found = {cat: sorted(p.name for p, _ in items) for cat, items in report.problems.items()
             if items}
    assert found == {"not-image": ["._face000.png", "._face001.png", "album.jpg"],
                     "unreadable": ["bomb.png"]}
    assert "decompression bomb" in dict(report.problems["unreadable"])[faces_dir / "bomb.png"]


def test_training_lists_skipped_files_in_its_run_folder(faces_dir, tiny):
    from gan.config import load_config
    from gan.training import train
    for i in range(7):
        (faces_dir / f"bad{i}.png").write_bytes(b"not a png")
    (faces_dir / "album.jpg").mkdir()
    run_dir, _ = train(load_config(None, tiny + ["train.total_images=8"]))
    listed = [x.split("\t")[0] for x in (run_dir / "skipped.txt").read_text().splitlines()]
    assert listed == ["album.jpg"] + [f"bad{i}.png" for i in range(7)]
