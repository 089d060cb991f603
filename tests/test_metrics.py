"""Quality metrics: the Fréchet distance against a direct scipy computation and known cases,
KID's unbiasedness, precision/recall on identical and collapsed sets, the HOG features against
skimage, the Inception extractor's errors, and `evaluate` on a tiny checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from gan.config import ConfigError, MetricsConfig, load_metrics_config
from gan.metrics import (EXTRACTORS, HOGExtractor, build_extractor, frechet_distance,
                         frechet_distance_features, gaussian, kid, knn_radii, precision_recall,
                         read_metrics)
from gan.testing import make_tiny_checkpoint
from tests.conftest import synthetic_face


def direct_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """FID's formula the textbook way: scipy's sqrtm of the product, real part."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(np.real(covmean)))


def features(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """n draws of one correlated Gaussian in d dimensions (fixed per d), moved and spread."""
    mix = np.random.default_rng(d).normal(size=(d, d)) / np.sqrt(d)
    return np.random.default_rng(seed).normal(size=(n, d)) @ mix * scale + shift


# --- Fréchet ------------------------------------------------------------------------------

@pytest.mark.parametrize("shift,scale", [(0.0, 1.0), (0.3, 1.0), (0.0, 1.7), (1.0, 0.5)])
def test_frechet_matches_the_direct_scipy_computation(shift, scale):
    a = features(500, 12, seed=1)
    b = features(400, 12, seed=2, shift=shift, scale=scale)
    assert frechet_distance_features(a, b) == pytest.approx(direct_frechet(a, b), rel=1e-8,
                                                            abs=1e-10)


def test_frechet_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2; diagonal: the same summed over dimensions.
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = 3 * 0.5 ** 2 + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(np.zeros(3), np.diag(v1), np.full(3, 0.5), np.diag(v2)) \
        == pytest.approx(expected)


def test_frechet_is_real_and_finite_with_fewer_samples_than_dimensions():
    # Rank-deficient covariances: sqrtm of the product has complex rounding parts here; the
    # eigen route needs no eps offset and agrees with the eps-offset fallback peers use.
    a, b = features(20, 64, seed=3), features(20, 64, seed=4, shift=0.2)
    fd = frechet_distance_features(a, b)
    mu1, s1 = gaussian(a)
    mu2, s2 = gaussian(b)
    eps = 1e-6 * np.eye(64)
    covmean = np.real(scipy.linalg.sqrtm((s1 + eps) @ (s2 + eps)))
    fallback = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert np.isfinite(fd) and fd > 0
    assert fd == pytest.approx(fallback, rel=1e-3)


def test_identical_sets_are_at_zero():
    a = features(300, 16, seed=5)
    assert frechet_distance_features(a, a) == pytest.approx(0, abs=1e-9)
    assert frechet_distance_features(a, a.copy()) >= 0


def test_frechet_grows_with_the_shift_and_the_spread():
    a = features(2000, 8, seed=6)
    shifts = [frechet_distance_features(a, features(2000, 8, seed=7, shift=s))
              for s in (0.0, 0.1, 0.3, 1.0, 3.0)]
    assert shifts == sorted(shifts) and shifts[0] < 0.05 < shifts[1]
    scales = [frechet_distance_features(a, features(2000, 8, seed=7, scale=s))
              for s in (1.0, 1.5, 2.5)]
    assert scales == sorted(scales)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- KID ------------------------------------------------------------------------------------

def test_kid_is_near_zero_for_one_distribution_and_unbiased():
    x, y = features(4000, 16, seed=8), features(4000, 16, seed=9)
    mean, std = kid(x, y, subsets=200, subset_size=100)
    # Unbiased: the mean over subsets straddles 0 (a biased V-statistic would sit at about
    # 2 E[k(x,x) - k(x,y)] / m, tens of standard errors above it).
    assert abs(mean) < 3 * std / np.sqrt(200) + 1e-12
    same, _ = kid(x, x, subsets=50, subset_size=100)
    assert abs(same) < 3 * std / np.sqrt(50)
    shifted, _ = kid(x, features(4000, 16, seed=9, shift=0.5), subsets=50, subset_size=100)
    far, _ = kid(x, features(4000, 16, seed=9, shift=1.0), subsets=50, subset_size=100)
    assert 0 < 10 * std < shifted < far


def test_kid_subsets_are_seeded():
    x, y = features(300, 8, seed=10), features(300, 8, seed=11, shift=0.2)
    assert kid(x, y, 10, 50) == kid(x, y, 10, 50)
    with pytest.raises(ValueError, match="at least 2"):
        kid(x[:1], y)


# --- precision / recall -----------------------------------------------------------------------

def test_precision_recall_identical_sets_are_one():
    a = features(200, 10, seed=12)
    assert precision_recall(a, a.copy()) == (1.0, 1.0)


def test_a_collapsed_generator_has_a_low_recall():
    real = features(500, 10, seed=13)
    rng = np.random.default_rng(0)
    # All 500 "samples" near 5 real points: every one is realistic, the variety is gone.
    collapsed = real[rng.integers(0, 5, 500)] + 1e-3 * rng.normal(size=(500, 10))
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.1
    elsewhere = features(500, 10, seed=14, shift=5.0)
    assert precision_recall(real, elsewhere)[0] < 0.05


def test_knn_radii_skip_the_point_itself():
    pts = np.array([[0.0], [1.0], [3.0], [7.0]], np.float32)
    np.testing.assert_allclose(knn_radii(pts, k=1), [1, 1, 4, 16])
    np.testing.assert_allclose(knn_radii(pts, k=2), [9, 4, 9, 36])


# --- extractors -----------------------------------------------------------------------------

def faces(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([synthetic_face(rng) for _ in range(n)])


def test_hog_features_are_skimage_hog():
    from skimage.feature import hog

    imgs = faces(3)
    ours = HOGExtractor(MetricsConfig(batch_size=2)).features(imgs)
    ref = np.stack([hog(im / 127.5 - 1, orientations=9, pixels_per_cell=(8, 8),
                        cells_per_block=(2, 2), block_norm="L2-Hys", channel_axis=-1)
                    for im in imgs])
    assert ours.shape == (3, 1764)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_extractor_registry():
    assert set(EXTRACTORS) == {"lite2", "hog", "inception"}
    assert build_extractor(MetricsConfig()).metric == "fld"  # the default: learned features
    assert build_extractor(MetricsConfig(features="hog")).metric == "fhd"


def test_missing_inception_weights_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        build_extractor(MetricsConfig(features="inception"))
    msg = str(e.value)
    assert "\n" not in msg and "pt_inception-2015-12-05-6726825d.pth" in msg
    assert "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" in msg
    assert "metrics.inception_weights" in msg
    with pytest.raises(ConfigError, match="Inception weights not found: .*nope.pth"):
        build_extractor(MetricsConfig(features="inception",
                                      inception_weights=tmp_path / "nope.pth"))
    wrong = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ConfigError, match="not pytorch-fid's"):
        build_extractor(MetricsConfig(features="inception", inception_weights=wrong))


def test_fid_inception_network_gives_2048_features():
    from gan.models.inception import FIDInceptionV3

    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 2048) and torch.isfinite(out).all()
    keys = net.net.state_dict().keys()
    assert "fc.weight" in keys and not any(k.startswith("AuxLogits") for k in keys)
    assert net.net.fc.out_features == 1008


INCEPTION = Path(os.environ.get("WAIFU_INCEPTION_WEIGHTS", Path.home() / ".cache" / "torch" /
                 "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"))


@pytest.mark.skipif(not INCEPTION.is_file(), reason=f"no Inception weights at {INCEPTION} "
                    "(set WAIFU_INCEPTION_WEIGHTS to pytorch-fid's file)")
def test_inception_weights_load_strictly():
    ex = build_extractor(MetricsConfig(features="inception", inception_weights=INCEPTION,
                                       device="cpu"))
    f = ex.features(faces(2))
    assert f.shape == (2, 2048) and np.isfinite(f).all() and (f >= 0).all()  # after ReLU


def test_metrics_section_of_the_config(tmp_path):
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text("variant: dcgan\nmetrics:\n  samples: 123\n"
                        "  inception_weights: w/pt_inception.pth\n")
    cfg = load_metrics_config(cfg_file, {"features": None, "kid_subsets": 7})
    assert (cfg.samples, cfg.features, cfg.kid_subsets) == (123, "lite2", 7)
    assert cfg.resolution == 64
    assert cfg.inception_weights == tmp_path / "w" / "pt_inception.pth"
    cfg_file.write_text("metrics:\n  sample: 5\n")
    with pytest.raises(ConfigError, match="metrics.sample: unknown key"):
        load_metrics_config(cfg_file)


# --- evaluate -------------------------------------------------------------------------------

@pytest.mark.parametrize("features", [None, "hog"])
def test_evaluate_writes_metrics_json(features, faces_dir, tmp_path, capsys):
    from gan.cli import main

    ck = make_tiny_checkpoint(tmp_path / "run" / "tiny.pt")
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    rc = main(["evaluate", str(ck), "--data", str(faces_dir), "--samples", "16",
               "--config", str(empty), "--cache-dir", "none"]
              + (["--features", features] if features else []))
    out = capsys.readouterr().out
    assert rc == 0 and "FHD" in out and "nearest training face" in out
    m = json.loads((tmp_path / "run" / "tiny.metrics.json").read_text())
    assert m["samples"] == 16 and m["reference_images"] == 24
    if features is None:  # the default: EfficientNet-Lite2 features, and FHD beside them
        assert m["extractor"] == "lite2" and m["feature_dim"] == 1280 and "FLD" in out
        assert m["fld"] > 0 and m["resolution"] == 64
    else:
        assert m["extractor"] == "hog" and "fld" not in m and "resolution" not in m
    assert m["fhd"] > 0 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert {"kid_mean", "kid_std", "seconds", "feature_dim"} <= set(m)
    nn = m["nn_distance"]
    assert 0 <= nn["min"] <= nn["p5"] <= nn["p50"] <= 2
    assert nn["closest"]["face"].startswith("face")
    assert m["checkpoint"]["file"] == "tiny.pt"
    assert read_metrics(ck) == m  # it measured this very file
    assert main(["export", str(ck), "--out", str(tmp_path / "export.pt")]) == 0
    from gan.checkpoint import load_checkpoint
    assert load_checkpoint(tmp_path / "export.pt").metrics == m  # they travel along
    make_tiny_checkpoint(ck, seed=5)  # other weights: the file no longer matches
    assert read_metrics(ck) is None


def test_evaluate_with_inception_and_no_weights_is_one_line(faces_dir, tmp_path, capsys):
    from gan.cli import main

    ck = make_tiny_checkpoint(tmp_path / "tiny.pt")
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    rc = main(["evaluate", str(ck), "--data", str(faces_dir), "--features", "inception",
               "--config", str(empty), "--cache-dir", "none"])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert "pt_inception-2015-12-05-6726825d.pth" in err[0]
    assert not (tmp_path / "tiny.metrics.json").exists()
