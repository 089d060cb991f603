"""bench/compare_variants.py: tiny runs of two variants (one a variant with its own settings),
trained, evaluated and tabulated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from gan.config import load_config
from gan.metrics import read_metrics
from gan.training import latest_checkpoint, train
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "compare_variants.py"
ENV = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": "/tmp"}


def compare(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--runs-dir", "runs", "--images", "32",
                           "--samples", "24", "--out", "results", "--markdown", "results.md",
                           *args], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_compare_trains_evaluates_and_writes_the_table(faces_dir, tmp_path):
    (tmp_path / "results.md").write_text(
        "# Results\n\nbefore\n<!-- results:table -->\nold\n<!-- /results:table -->\nafter\n")
    overrides = [x for o in TINY for x in ("--override", o)]
    p = compare(tmp_path, "--data", str(faces_dir), "--variants", "forcecore,capsule-bce=capsule;loss.kind=bce",
                "--train", "--threads", "1", "--no-channels-last", *overrides)
    assert p.returncode == 0, p.stderr

    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["00000-cmp-forcecore", "00001-cmp-capsule-bce"]
    for run, label, variant, loss in zip(runs, ("forcecore", "capsule-bce"),
                                         ("forcecore", "capsule"), ("soft-bce", "bce")):
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["variant"] == variant and cfg["seed"] == 0 and cfg["loss"]["kind"] == loss
        assert cfg["train"]["total_images"] == 32 and cfg["model"]["g_width"] == 8
        metrics = read_metrics(latest_checkpoint(run))
        assert metrics["samples"] == 24 and metrics["checkpoint"]["images_seen"] == 32
        assert Image.open(tmp_path / "results" / f"{label}.jpg").size == (8 * 66 + 2,) * 2
    assert Image.open(tmp_path / "results" / "overview.jpg").width == 16 * 66 + 2
    assert (tmp_path / "results" / "losses.png").stat().st_size > 0

    doc = (tmp_path / "results.md").read_text()
    assert doc.startswith("# Results\n\nbefore\n") and doc.endswith("after\n") and "old" not in doc
    rows = [line for line in doc.splitlines() if line.startswith("| forcecore")
            or line.startswith("| capsule-bce |")]
    assert len(rows) == 2
    first = read_metrics(latest_checkpoint(runs[0]))
    row = f"| forcecore | 1 | {first['fld']:.2f} | {first['fhd']:.2f} |"  # learned features first
    assert first["extractor"] == "lite2" and row in doc

    # A second call reuses the finished runs and their metrics: no new run folder.
    again = compare(tmp_path, "--data", str(faces_dir), "--variants", "forcecore", "--train")
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 2
    assert row in again.stdout

    # Several seeds: one more run per extra seed, the row their mean and sample deviation.
    seeds = compare(tmp_path, "--data", str(faces_dir), "--variants", "forcecore", "--train",
                    "--seeds", "0,1", "--threads", "1", "--no-channels-last", *overrides)
    assert seeds.returncode == 0, seeds.stderr
    s1 = next((tmp_path / "runs").glob("*-cmp-forcecore-s1"))
    assert json.loads((s1 / "config.json").read_text())["seed"] == 1
    fld = [read_metrics(latest_checkpoint(r))["fld"] for r in (runs[0], s1)]
    mean, std = sum(fld) / 2, abs(fld[0] - fld[1]) / 2 ** 0.5
    assert fld[0] != fld[1] and f"| forcecore | 2 | {mean:.2f} ± {std:.2f} |" in seeds.stdout

    # A run trained elsewhere is measured at the checkpoint of the budget it passed through,
    # and one that kept no checkpoint there is not measured at a later one.
    longer, _ = train(load_config(None, TINY + [f"data.path={faces_dir}", "name=longer",
                                                f"train.runs_dir={tmp_path / 'elsewhere'}",
                                                "train.total_images=32",
                                                "train.checkpoint_every=2"]))
    early = compare(tmp_path, "--data", str(faces_dir), "--variants",
                    f"early@{longer},late@{runs[0]}", "--images", "16")
    assert early.returncode == 0, early.stderr
    measured = read_metrics(longer / "ckpt-000002.pt")
    assert measured["checkpoint"]["images_seen"] == 16 and "| early |" in early.stdout
    assert "| late |" not in early.stdout and "kept no checkpoint at 16" in early.stderr


def test_compare_without_runs_says_so(faces_dir, tmp_path):
    p = compare(tmp_path, "--data", str(faces_dir), "--variants", "hog")
    assert p.returncode == 1
    assert "no finished run cmp-hog" in p.stderr and "--train" in p.stderr


def test_compare_rejects_a_missing_data_folder(tmp_path):
    p = compare(tmp_path, "--data", str(tmp_path / "nope"))
    assert p.returncode == 2 and "not a folder of faces" in p.stderr


def test_d_probe_prints_one_row_per_discriminator(faces_dir, tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "bench" / "d_probe.py"), "--data",
                        str(faces_dir), "--steps", "2", "--every", "1", "--batch", "4",
                        "--variants", "dcgan,capsule;loss.kind=bce"],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = [line for line in p.stdout.splitlines() if line.startswith("| untrained G")]
    assert [r.split(" | ")[1] for r in rows] == ["dcgan", "capsule;loss.kind=bce"]
    for r in rows:  # steps 0, 1, 2: "real / fake" probabilities
        cells = [c.strip() for c in r.strip("| ").split(" | ")[2:]]
        assert len(cells) == 3
        assert all(0 <= float(x) <= 1 for c in cells for x in c.split(" / "))


def test_a_bad_entry_is_one_line_before_any_training(faces_dir, tmp_path):
    p = compare(tmp_path, "--data", str(faces_dir), "--variants", "forcecore,capsule+bogus",
                "--train")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert ("capsule+bogus: command line variant=capsule+bogus: variant: unknown variant part "
            "'bogus'") in p.stderr
    assert not (tmp_path / "runs").exists()
    probe = subprocess.run([sys.executable, str(REPO / "bench" / "d_probe.py"), "--data",
                            str(faces_dir), "--variants", "capsule;loss.kind=nope"],
                           cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 2 and "loss.kind=nope: loss.kind: Input should be" in probe.stderr


def test_d_probe_noise_generator_is_per_pixel_colour_noise():
    from bench.d_probe import NoiseGenerator, mean_colour
    faces = torch.zeros(4, 3, 64, 64, dtype=torch.uint8)
    faces[:, 0] = 255  # red faces: mean colour (1, -1, -1)
    colour = mean_colour(faces)
    torch.testing.assert_close(colour, torch.tensor([1.0, -1.0, -1.0]))
    G = NoiseGenerator(torch.tensor([0.2, 0.0, -0.2]))
    x = G(torch.zeros(32, 100))
    assert x.shape == (32, 3, 64, 64) and x.abs().max() <= 1
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.tensor([0.2, 0.0, -0.2]),
                               atol=0.01, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3)), torch.full((3,), 0.3), atol=0.01, rtol=0)
    # High-frequency: neighbouring pixels are uncorrelated (a face's are close to 1).
    a, b = x[:, 0, :, :-1].flatten(), x[:, 0, :, 1:].flatten()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.02
    # Reproducible: a new generator with the same seed draws the same noise.
    torch.testing.assert_close(NoiseGenerator(torch.zeros(3))(torch.zeros(2, 1)),
                               NoiseGenerator(torch.zeros(3))(torch.zeros(2, 1)))


def test_d_probe_fakes_option(faces_dir, tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "bench" / "d_probe.py"), "--data",
                        str(faces_dir), "--steps", "1", "--every", "1", "--batch", "4",
                        "--variants", "dcgan", "--fakes", "noise"],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert [line.split(" | ")[0] for line in p.stdout.splitlines()[2:]] == ["| noise G"]
    bad = subprocess.run([sys.executable, str(REPO / "bench" / "d_probe.py"), "--data",
                          str(faces_dir), "--fakes", "noise,blobs"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--fakes: unknown kind blobs" in bad.stderr
    assert "Traceback" not in bad.stderr
