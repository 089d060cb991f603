"""Our FID pieces against pytorch-fid's: the Inception network and the Fréchet distance.

    pip install pytorch-fid   # the package only; no weights are downloaded
    python bench/fid_parity.py [--weights pt_inception-2015-12-05-6726825d.pth] [--n 2000]

1. Inception: gan.models.inception.FIDInceptionV3 and pytorch_fid.inception.InceptionV3 get the
   same state dict (the weights file when given, else random weights in its layout; both load
   it strictly) and the same images; prints the largest feature difference.
2. Fréchet distance: gan.metrics.frechet_distance (eigen route) against pytorch-fid's
   calculate_frechet_distance (scipy sqrtm, eps fallback) on HOG features of real faces (two
   disjoint halves) and on well- and ill-conditioned synthetic features; values, relative
   difference and time of each.
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
from gan.metrics import HOGExtractor, frechet_distance, gaussian  # noqa: E402
from gan.models.inception import FIDInceptionV3  # noqa: E402

DEFAULT_FACES = Path(os.environ.get("WAIFU_FACES_DIR",
                                    REPO.parent / "shared" / "data" / "animefaces"))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def random_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    sd = {}
    for k, v in net.state_dict().items():
        if k.endswith("running_var"):
            sd[k] = torch.rand_like(v) + 0.5
        elif k.endswith("num_batches_tracked"):
            sd[k] = v
        elif v.dim() == 4:  # He-scaled convolutions keep activations finite through 90 layers
            sd[k] = torch.randn_like(v) * (2.0 / v[0].numel()) ** 0.5
        else:
            sd[k] = torch.randn_like(v) * 0.1
    return sd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, help="pytorch-fid's weights file (optional)")
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    ap.add_argument("--n", type=int, default=2000, help="real faces for the Fréchet rows")
    a = ap.parse_args()
    try:
        import pytorch_fid.inception as pfi
        from pytorch_fid.fid_score import calculate_frechet_distance
    except ImportError:
        sys.exit("needs pytorch-fid: pip install pytorch-fid")

    ours = FIDInceptionV3().eval()
    state = (torch.load(a.weights, map_location="cpu", weights_only=True) if a.weights
             else random_state(ours.net))
    ours.net.load_state_dict(state)
    pfi.load_state_dict_from_url = lambda *_a, **_k: state  # no download: the same weights
    ref = pfi.InceptionV3([3]).eval()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        f_ref, t_ref = timed(lambda: ref(x)[0].flatten(1))
        f_ours, t_ours = timed(lambda: ours(x))
    print(f"Inception ({'weights file' if a.weights else 'random weights'}, 4 images 64x64): "
          f"max |ours - pytorch-fid| {(f_ours - f_ref).abs().max().item():.2e} "
          f"(features ~{f_ref.abs().mean().item():.2e}); {t_ref:.2f} s vs {t_ours:.2f} s")

    rows = []
    paths = sorted(a.faces.glob("*.jpg"))[:a.n]
    if paths:
        from PIL import Image
        imgs = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in paths])
        f = HOGExtractor(MetricsConfig()).features(imgs)
        half = len(f) // 2
        rows.append((f"HOG, 2 x {half} real faces", f[:half], f[half:]))
    else:
        print(f"(no faces in {a.faces}: synthetic rows only)")
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(64, 64)) / 8
    rows.append(("synthetic d=64, N=5000", rng.normal(size=(5000, 64)) @ mix,
                 rng.normal(size=(5000, 64)) @ mix + 0.1))
    rows.append(("synthetic d=256, N=100 (rank-deficient)", rng.normal(size=(100, 256)),
                 rng.normal(size=(100, 256)) * 1.1))
    print(f"{'features':<40} {'pytorch-fid':>12} {'ours':>12} {'rel diff':>9} "
          f"{'pfid s':>7} {'ours s':>7} {'ratio':>6}")
    for name, p, q in rows:
        s1, s2 = gaussian(p), gaussian(q)
        ref_fd, t_ref = timed(lambda: float(calculate_frechet_distance(*s1, *s2)))
        our_fd, t_ours = timed(lambda: frechet_distance(*s1, *s2))
        print(f"{name:<40} {ref_fd:12.6g} {our_fd:12.6g} "
              f"{abs(our_fd - ref_fd) / max(abs(ref_fd), 1e-12):9.1e} {t_ref:7.2f} "
              f"{t_ours:7.2f} {t_ref / t_ours:6.1f}")


if __name__ == "__main__":
    main()
