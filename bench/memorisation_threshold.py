#!/usr/bin/env python3
"""The memorisation guard's threshold, measured for one checkpoint (docs/metrics.md).

    python bench/memorisation_threshold.py --data ../shared/data/animefaces \\
        --checkpoint checkpoints/default.pt --samples 5000 --pairs out/closest.png

Rows: training faces fed as samples (the guard must refuse them), altered copies of training
faces (re-encoded, noised, recoloured, blurred, shifted: copies a model might make), each
training face against the *other* training faces (how close different files of the data set
are), and fresh samples of the checkpoint (what the guard must let through). Each row gives the
distance to the nearest training face (gray16 features, `gan.memorisation`): min, 1st and 5th
percentile, median. With --pairs, the closest fresh samples beside their nearest training
faces are drawn to a PNG, to look at (not to publish: it holds training faces).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan.data import FaceDataset  # noqa: E402
from gan.memorisation import NearestIndex  # noqa: E402
from gan.sampling import generate_array, grid  # noqa: E402


def jpeg(img: np.ndarray, q: int = 50) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("RGB"))


ALTERATIONS = {
    "re-encoded JPEG q50": jpeg,
    "noise sigma 16": lambda x: np.clip(x + np.random.default_rng(0).normal(0, 16, x.shape),
                                        0, 255).astype(np.uint8),
    "red and blue swapped": lambda x: x[..., ::-1].copy(),
    "blurred sigma 1.5": lambda x: np.asarray(Image.fromarray(x).filter(
        ImageFilter.GaussianBlur(1.5))),
    "shifted 2 px": lambda x: np.roll(x, 2, axis=1),
}


def row(label: str, d: np.ndarray) -> str:
    p1, p5, p50 = np.percentile(d, [1, 5, 50])
    return f"| {label} | {len(d)} | {d.min():.3f} | {p1:.3f} | {p5:.3f} | {p50:.3f} |"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the training faces folder")
    p.add_argument("--checkpoint", type=Path, default=Path("checkpoints/default.pt"))
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--copies", type=int, default=300, help="faces per altered-copy row")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/datasets"))
    p.add_argument("--pairs", type=Path, help="PNG of the closest samples and their faces")
    a = p.parse_args()
    if not a.data.is_dir():
        p.error(f"--data {a.data}: not a folder of faces")

    faces = FaceDataset.load(a.data, a.cache_dir, progress=False)
    real = faces.images.permute(0, 2, 3, 1).numpy()
    index = NearestIndex.from_images(real, faces.names, str(a.data))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(real), a.copies, replace=False)
    print(f"{a.checkpoint}: nearest-training-face distance (gray16; 0 = a copy) against "
          f"{len(real):,} faces\n")
    print("| images compared with the index | n | min | p1 | p5 | median |")
    print("|---|---:|---:|---:|---:|---:|")
    print(row("training faces fed as samples", index.nearest(real[pick])[0]))
    for label, alter in ALTERATIONS.items():
        print(row(f"training faces, {label}",
                  index.nearest(np.stack([alter(real[i]) for i in pick]))[0]))
    # Each face against the others: drop it from the index and ask.
    others = []
    for i in pick:
        keep = np.ones(len(real), bool)
        keep[i] = False
        sub = NearestIndex(index.features[keep], index.names[keep])
        others.append(sub.nearest(real[i:i + 1])[0][0])
    print(row("each training face vs the other training faces", np.array(others)))
    samples = generate_array(a.checkpoint, list(range(a.samples)))
    d, j = index.nearest(samples)
    print(row(f"fresh samples (seeds 0-{a.samples - 1})", d))
    order = np.argsort(d)[:8]
    print("\nclosest samples: " + ", ".join(f"seed {s} ~ {faces.names[j[s]]} ({d[s]:.3f})"
                                            for s in order))
    if a.pairs:
        a.pairs.parent.mkdir(parents=True, exist_ok=True)
        pairs = np.stack([x for s in order for x in (samples[s], real[j[s]])])
        grid(pairs, cols=4, scale=2).save(a.pairs)
        print(f"{a.pairs}: each sample beside its nearest training face (not for publishing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
