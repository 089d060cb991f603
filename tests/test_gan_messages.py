"""Trainer messages that say what happened: the frame count of the GIF actually written, the
folders `--out` created, and the nearest known setting for a misspelt one."""

from __future__ import annotations

import pytest
from PIL import Image

from gan.cli import main
from gan.config import ConfigError, load_config, load_metrics_config
from gan.testing import make_tiny_checkpoint


def test_interpolate_counts_the_frames_it_wrote(tmp_path, capsys):
    ck = make_tiny_checkpoint(tmp_path / "t.pt")
    out = tmp_path / "w.gif"
    assert main(["interpolate", str(ck), "1", "2", "--frames", "32", "--out", str(out)]) == 0
    with Image.open(out) as gif:
        frames = gif.n_frames
    assert frames == 62  # 32 there, 30 back (the ends are not repeated)
    assert f"wrote {out}: 62 frames, seed 1 -> 2 in 32 and back" in capsys.readouterr().out


def test_sample_says_which_folders_it_created(tmp_path, capsys):
    ck = make_tiny_checkpoint(tmp_path / "t.pt")
    grid = tmp_path / "new" / "dir" / "x.png"
    assert main(["sample", str(ck), "--seeds", "0-3", "--out", str(grid)]) == 0
    out = capsys.readouterr().out
    assert f"created the folder {grid.parent}" in out and grid.is_file()
    assert main(["sample", str(ck), "--seeds", "0-3", "--out", str(grid)]) == 0
    assert "created" not in capsys.readouterr().out  # it is there now: nothing to say
    assert main(["sample", str(ck), "--seeds", "1", "--separate", "--out",
                 str(tmp_path / "faces")]) == 0
    assert f"created the folder {tmp_path / 'faces'}" in capsys.readouterr().out


@pytest.mark.parametrize("override, expected", [
    ("train.batch_sise=32", "train.batch_sise: unknown key (did you mean train.batch_size?)"),
    ("model.g_widht=8", "(did you mean model.g_width?)"),
    ("trian.batch_size=32", "trian: unknown key (did you mean train?)"),
])
def test_a_misspelt_setting_gets_the_nearest_known_one(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert expected in str(e.value)


def test_no_suggestion_when_nothing_is_close():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.zzz=1"])
    assert str(e.value) == "command line train.zzz=1: train.zzz: unknown key"


def test_suggestions_in_files_and_the_metrics_section(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  batchsize: 5\n")
    with pytest.raises(ConfigError, match=r"c.yaml: train.batchsize: unknown key "
                       r"\(did you mean train.batch_size\?\)"):
        load_config(cfg)
    cfg.write_text("metrics:\n  sample: 5\n")
    with pytest.raises(ConfigError, match=r"c.yaml: metrics.sample: unknown key "
                       r"\(did you mean metrics.samples\?\)"):
        load_metrics_config(cfg)
