"""Torch HOG (gan.models.hog) against skimage.feature.hog on real faces: agreement and speed.

    python bench/hog_parity.py [--n 256] [--faces DIR]

Both get the same float32 images in [-1, 1] (skimage as H x W x C with channel_axis=-1), 9
orientations, 8x8 cells, L2-Hys. Prints one row per (blocks, binning): the correlation over all
features, the worst per-image correlation, max and mean absolute error, and the time for the
whole batch (skimage loops over images on the CPU; ours is one batched call), the best of
--repeat runs, so that other work on the machine distorts it less.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.feature import hog as sk_hog

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan.models.hog import HOG  # noqa: E402

DEFAULT_FACES = Path(os.environ.get("WAIFU_FACES_DIR",
                                    REPO.parent / "shared" / "data" / "animefaces"))


def best_time(fn, repeat: int):
    """(result, fastest wall time) of `repeat` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="number of faces (first by name)")
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    ap.add_argument("--repeat", type=int, default=3, help="timing runs; the best is shown")
    a = ap.parse_args()
    paths = sorted(a.faces.glob("*.jpg"))[:a.n]
    if not paths:
        sys.exit(f"no .jpg faces in {a.faces} (set --faces or WAIFU_FACES_DIR)")
    arr = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) / 127.5 - 1
                    for p in paths])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    print(f"{len(paths)} faces from {a.faces}, torch threads {torch.get_num_threads()}")
    print(f"{'blocks':>6} {'binning':<22} {'corr':>8} {'min img':>8} {'max|err|':>9} "
          f"{'mean|err|':>9} {'skimage s':>9} {'torch s':>8} {'ratio':>6}")
    for cpb in (2, 1):
        ref, t_ref = best_time(lambda: np.stack([
            sk_hog(im, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(cpb, cpb),
                   block_norm="L2-Hys", channel_axis=-1) for im in arr]), a.repeat)
        for name, hog in [("hard", HOG(cells_per_block=cpb, soft=False)),
                          ("soft 0.25 (default)", HOG(cells_per_block=cpb)),
                          ("soft 1.0 (linear int.)", HOG(cells_per_block=cpb, softness=1.0))]:
            with torch.no_grad():
                out, t_ours = best_time(lambda: hog(x), a.repeat)
            out = out.double().numpy()
            err = np.abs(out - ref)
            corr = np.corrcoef(out.ravel(), ref.ravel())[0, 1]
            worst = min(np.corrcoef(o, r)[0, 1] for o, r in zip(out, ref))
            print(f"{f'{cpb}x{cpb}':>6} {name:<22} {corr:8.5f} {worst:8.5f} {err.max():9.2e} "
                  f"{err.mean():9.2e} {t_ref:9.3f} {t_ours:8.3f} {t_ref / t_ours:6.1f}")


if __name__ == "__main__":
    main()
