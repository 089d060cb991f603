"""The realism critic: how typical of the training faces a sample looks, to pick the best of K.

A Gaussian is fitted to the training faces' features; a sample's distance to it is the
Mahalanobis distance |W (f - mu)| / sqrt(d), with W the whitening matrix of the covariance (shrunk
a little towards a multiple of the identity, so the directions the faces barely vary in do not
dominate). Its score is the median training face's distance over the sample's: 1.0 is as
typical as the median training face, 0.5 twice as far out; higher is better. The bot posts the
candidate with the highest score (bot.curate).

Measured before choosing it (500 x 8 candidates of checkpoints/default.pt, the curated set's
FLD on Lite2; docs/metrics.md): this score and the k-NN realism score of Kynkäänniemi et al.
2019 pick equally well (FLD -14% against uncurated for both), at 64 px as well as 128; the
Gaussian needs only a mean and a whitening matrix, aggregate statistics from which no face can
be recovered, so it ships with the repository (`checkpoints/critic.npz`) and curation works on a
machine without the training faces, where the k-NN score would need every face's features.

Features: EfficientNet-Lite0's pooled 1,280-d features of the 64x64 face. Not Lite2: Lite2 is
the judge of `python train.py evaluate` (FLD), and a curation picked by the network that then
grades it would flatter itself; `bench/curation.py` measures the curated posts with Lite2.

Limits: the score ranks samples of one generator. Lite0 at 64 px is a poor judge of what no
generator of faces draws: per-pixel colour noise scores about as well as an average sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from gan.data import DataError, FaceDataset
from gan.files import atomic_write, while_unchanged

log = logging.getLogger(__name__)

CRITIC_FORMAT = "waifu-gen-critic-1"
NETWORK = "lite0"  # never lite2, the judge of `evaluate` (see the module docstring)
RESOLUTION = 64
SHRINK = 0.01  # weight of the identity (scaled to the mean variance) in the covariance


class FeatureNet:
    """EfficientNet-Lite0 on the CPU: uint8 faces N x 64 x 64 x 3 -> N x 1280 float32."""

    def __init__(self) -> None:
        import torch

        from gan.models.efficientnet import load_pretrained
        try:
            net = load_pretrained(NETWORK)
        except FileNotFoundError as e:
            raise DataError(str(e)) from None
        self.net = net.requires_grad_(False).to(memory_format=torch.channels_last)

    def __call__(self, images: np.ndarray, batch: int = 256, progress: bool = False) -> np.ndarray:
        import torch
        from tqdm import tqdm

        from gan.models.efficientnet import face_features
        out = []
        with torch.inference_mode():
            for i in tqdm(range(0, len(images), batch), desc="critic features", unit="batch",
                          disable=not progress, leave=False):
                x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch]))
                out.append(face_features(self.net, x.permute(0, 3, 1, 2), RESOLUTION).numpy())
        return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


@dataclass
class RealismCritic:
    """The training faces' feature Gaussian: `score_features(f)`, higher = more typical."""

    mean: np.ndarray  # d
    whiten: np.ndarray  # d x d: |whiten @ (f - mean)|^2 = the squared Mahalanobis distance
    median_distance: float  # of the training faces themselves
    faces: int = 0  # how many faces the statistics come from

    @classmethod
    def from_features(cls, features: np.ndarray, shrink: float = SHRINK) -> "RealismCritic":
        f = np.asarray(features, np.float64)
        if f.ndim != 2 or len(f) < 2:
            raise DataError(f"the critic needs at least 2 feature rows, got shape {f.shape}")
        mean = f.mean(0)
        cov = np.cov(f, rowvar=False)
        d = len(cov)
        cov = (1 - shrink) * cov + shrink * np.trace(cov) / d * np.eye(d)
        w, v = np.linalg.eigh(cov)
        whiten = (v / np.sqrt(np.clip(w, 1e-12, None))).T  # diag(w^-1/2) V^T
        critic = cls(mean.astype(np.float32), whiten.astype(np.float32), 1.0, len(f))
        critic.median_distance = float(np.median(critic.distance(f)))
        return critic

    def distance(self, features: np.ndarray) -> np.ndarray:
        """N x d features -> N Mahalanobis distances per dimension (about 1 for a face)."""
        z = (np.asarray(features, np.float32) - self.mean) @ self.whiten.T
        return np.sqrt((z * z).sum(1) / len(self.mean))

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """N x d features -> N scores: the median training face's distance over theirs."""
        return self.median_distance / np.maximum(self.distance(features), 1e-12)

    def save(self, path: str | Path) -> Path:
        return atomic_write(path, lambda tmp: np.savez_compressed(
            tmp, format=np.array(CRITIC_FORMAT), network=np.array(NETWORK),
            resolution=np.array(RESOLUTION), mean=self.mean, whiten=self.whiten.astype(np.float16),
            median_distance=np.array(self.median_distance), faces=np.array(self.faces)),
            suffix=".npz")

    @classmethod
    def load(cls, path: str | Path) -> "RealismCritic":
        """Read a critic file; a DataError naming the file for anything else."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"realism critic not found: {path} (build it with `python train.py "
                            "critic FACES_FOLDER --out PATH`)")
        try:
            with np.load(path, allow_pickle=False) as z:
                fmt = str(z["format"]) if "format" in z.files else None
                if (fmt != CRITIC_FORMAT or str(z["network"]) != NETWORK
                        or int(z["resolution"]) != RESOLUTION):
                    raise DataError(f"{path}: not a realism critic of this version "
                                    f"({fmt or 'no format tag'}); build it again")
                critic = cls(z["mean"].astype(np.float32), z["whiten"].astype(np.float32),
                             float(z["median_distance"]), int(z["faces"]))
        except DataError:
            raise
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise DataError(f"{path}: not a readable realism critic ({type(e).__name__})") from None
        d = len(critic.mean)
        if critic.whiten.shape != (d, d):
            raise DataError(f"{path}: malformed realism critic (mean {critic.mean.shape}, "
                            f"whitening {critic.whiten.shape})")
        return critic


_load_critic = while_unchanged(RealismCritic.load)


def load_critic(path: str | Path) -> RealismCritic:
    """`RealismCritic.load`, remembered while the file is unchanged."""
    return _load_critic(path)


def build_critic(folder: str | Path, out: str | Path, cache_dir: str | Path | None = None,
                 progress: bool = True) -> RealismCritic:
    """The critic of every face in `folder` (decoded as training decodes them), saved to `out`."""
    faces = FaceDataset.load(folder, cache_dir, progress=progress)
    images = faces.images.permute(0, 2, 3, 1).numpy()  # N x 64 x 64 x 3 uint8
    critic = RealismCritic.from_features(FeatureNet()(images, progress=progress))
    critic.save(out)
    log.info("realism critic of %d faces of %s in %s", len(images), folder, out)
    return critic


class Curator:
    """Scores sample images with a critic: `scores(images)` -> N realism scores."""

    def __init__(self, critic: RealismCritic, net: FeatureNet | None = None) -> None:
        self.critic = critic
        self.net = net or FeatureNet()

    def scores(self, images: np.ndarray) -> np.ndarray:
        return self.critic.score_features(self.net(np.asarray(images)))


@lru_cache(maxsize=1)
def _feature_net() -> FeatureNet:
    return FeatureNet()


def score_images(critic_path: str | Path, images: np.ndarray) -> np.ndarray:
    """The realism scores of N x 64 x 64 x 3 uint8 images by the critic file at `critic_path`
    (the file and Lite0 loaded once a process: the bot's render worker scores every post)."""
    return Curator(load_critic(critic_path), _feature_net()).scores(images)


def pick(scores: Sequence[float], accept: Callable[[int], bool] | None = None,
         min_score: float | None = None) -> int | None:
    """Curation's choice among candidates: the index of the highest-scoring one that `accept`
    lets through (asked best first; of equal scores, the earlier candidate), or None when it
    refuses them all. With `min_score`, the first candidate in drawn order scoring at least
    that is asked first, then the next such, and only then the rest best first: this cuts the
    tail of poor faces without narrowing the posts to the most typical ones. The bot's
    `accept` is its dedup and memorisation checks; bench/curation.py measures the same choice
    with no checks."""
    s = np.asarray(scores, np.float64)
    order = [int(i) for i in np.argsort(-s, kind="stable")]
    if min_score is not None:
        order = [i for i in range(len(s)) if s[i] >= min_score] + \
                [i for i in order if s[i] < min_score]
    for i in order:
        if accept is None or accept(i):
            return i
    return None
