"""Is the metric a metric? Real vs real, blurred, noised and a checkpoint's samples, per extractor.

    python bench/metric_checks.py [--faces DIR] [--checkpoint checkpoints/default.pt]
                                  [--features lite2,hog] [--resolutions 64] [--n 5000]
                                  [--n-ref 0] [--blur 1.0] [--noise 16]

The faces (decoded as training decodes them) are shuffled (seed 0) and split into two disjoint
halves. The first half (all of it, or --n-ref faces) is the reference; each row compares it
with --n images of one kind:

- real: faces of the other half (a perfect generator: every number should be near its floor);
- blurred: those faces, Gaussian blur of sigma --blur pixels;
- noised: those faces plus Gaussian noise of sigma --noise grey levels (of 255);
- samples: the checkpoint's EMA samples, seeds 0..n-1 (as `evaluate` draws them).

Per row: the Fréchet distance, the same divided by the real row's (how far above the floor),
KID, precision and recall (k = 3, --n images on each side), and the extractor's images/s on
this machine. The real faces' features are cached as `evaluate` caches them, so a run after
`evaluate` (or a second run) skips them. docs/metrics.md quotes this table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan.config import MetricsConfig  # noqa: E402
from gan.metrics import build_extractor, feature_metrics  # noqa: E402

DEFAULT_FACES = Path(os.environ.get("WAIFU_FACES_DIR",
                                    REPO.parent / "shared" / "data" / "animefaces"))


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    from torchvision.transforms.functional import gaussian_blur
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    k = 2 * int(np.ceil(3 * sigma)) + 1
    out = gaussian_blur(x, [k, k], [sigma, sigma])
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def noised(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, images.shape)
    return np.clip(np.round(images + noise), 0, 255).astype(np.uint8)


def samples(checkpoint: Path, n: int) -> np.ndarray:
    from gan.checkpoint import load_checkpoint
    from gan.sampling import generate_array
    ck = load_checkpoint(checkpoint)
    return np.concatenate([generate_array(ck, list(range(i, min(i + 250, n))))
                           for i in range(0, n, 250)])


def split_faces(folder: Path, cache_dir: Path | None, seed: int = 0):
    """(all faces N x 64 x 64 x 3 uint8, shuffled indices of the first half, of the second)."""
    from gan.data import FaceDataset
    real = FaceDataset.load(folder, cache_dir, progress=False).images.permute(0, 2, 3, 1).numpy()
    order = np.random.default_rng(seed).permutation(len(real))
    return real, order[:len(real) // 2], order[len(real) // 2:]


def rows_for(extractor, real, ref_idx, other_idx, sets, cfg, cache_dir, progress):
    """[(name, metrics, images/s)] for each of `sets` (name -> images) against the reference."""
    t0 = time.perf_counter()
    f_all = extractor.cached_features(real, cache_dir, progress)
    f_ref = f_all[ref_idx]
    out = [("real", feature_metrics(f_ref, f_all[other_idx], cfg), None)]
    for name, images in sets.items():
        t0 = time.perf_counter()
        f = extractor.features(images, progress, name)
        speed = len(images) / (time.perf_counter() - t0)
        out.append((name, feature_metrics(f_ref, f, cfg), speed))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    ap.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "default.pt")
    ap.add_argument("--features", default="lite2,hog", help="comma list of extractors")
    ap.add_argument("--resolutions", default="64", help="lite2: comma list of input sizes")
    ap.add_argument("--n", type=int, default=5000, help="images per compared set")
    ap.add_argument("--n-ref", type=int, default=0, help="reference faces (0: the whole half)")
    ap.add_argument("--blur", type=float, default=1.0, help="Gaussian blur sigma, pixels")
    ap.add_argument("--noise", type=float, default=16.0, help="noise sigma, grey levels")
    ap.add_argument("--cache-dir", default=str(REPO / ".cache" / "datasets"),
                    help="decoded faces and real features cache; 'none' for none")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cache_dir = None if a.cache_dir.lower() == "none" else Path(a.cache_dir)

    real, ref_idx, other_idx = split_faces(a.faces, cache_dir)
    if a.n_ref:
        ref_idx = ref_idx[:a.n_ref]
    other_idx = other_idx[:a.n]
    if a.n_ref:  # a small run: only the faces it needs, and no cache of a subset
        real = real[np.concatenate([ref_idx, other_idx])]
        ref_idx, other_idx = np.arange(len(ref_idx)), np.arange(len(ref_idx), len(real))
        cache_dir = None
    base = real[other_idx]
    sets = {"blurred": blurred(base, a.blur), "noised": noised(base, a.noise)}
    if a.checkpoint and a.checkpoint.is_file():
        sets["samples"] = samples(a.checkpoint, len(base))
    # KID on 100 subsets of up to 1000, precision/recall k = 3: evaluate's settings.
    print(f"{len(ref_idx)} reference faces vs {len(base)} images per row; blur sigma {a.blur} "
          f"px, noise sigma {a.noise}/255; checkpoint {a.checkpoint.name if a.checkpoint else '-'}"
          f"; {torch.get_num_threads()} threads")
    print("| features | set | Fréchet | / real | KID | precision | recall | images/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for feat in a.features.split(","):
        for res in (a.resolutions.split(",") if feat == "lite2" else ["64"]):
            cfg = MetricsConfig(features=feat, resolution=int(res), device="cpu")
            rows = rows_for(build_extractor(cfg), real, ref_idx, other_idx, sets, cfg,
                            cache_dir, a.progress)
            floor = rows[0][1]["fd"]
            label = f"{feat} {res}px" if feat == "lite2" else feat
            for name, m, speed in rows:
                print(f"| {label} | {name} | {m['fd']:.4g} | {m['fd'] / floor:.1f}x | "
                      f"{m['kid_mean']:.3g} | {m['precision']:.3f} | {m['recall']:.3f} | "
                      f"{'' if speed is None else f'{speed:.0f}'} |", flush=True)


if __name__ == "__main__":
    main()
