"""The memorisation guard: how far a generated face is from its nearest training face.

Features ("gray16"): the 64x64 image in grayscale (BT.601 luma), box-averaged to 16x16, minus
its mean, scaled to unit length. The distance of two faces is the Euclidean distance of their
features, in [0, 2]; d^2 = 2 (1 - r) with r the Pearson correlation of the two thumbnails, so a
copy is at 0 even when brighter or with more contrast, and unrelated faces sit near 1. Cheap
(256 numbers a face) and blind to what a GAN changes least when it copies: fine texture and
exact colours. Training flips faces at random, so a sample is compared as drawn and mirrored.

The index is an .npz (features as float16, the files' names relative to the face folder, a
format tag), built once from the face folder with `python train.py index`. It loads without
pickle: it is plain arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gan.data import DataError, FaceDataset, decode_faces, image_files, warn_skipped
from gan.files import atomic_write, while_unchanged

log = logging.getLogger(__name__)

FEATURES = "gray16"
INDEX_FORMAT = "waifu-gen-nn-index-1"
THUMB = 16
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def thumbnails(images: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 (H, W multiples of 16) -> N x 256 float32 unit vectors."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    n, h, w, _ = images.shape
    if h % THUMB or w % THUMB:
        raise ValueError(f"images must be a multiple of {THUMB} pixels a side, got {h}x{w}")
    x = images.astype(np.float32) @ _LUMA  # N x H x W
    x = x.reshape(n, THUMB, h // THUMB, THUMB, w // THUMB).mean((2, 4)).reshape(n, -1)
    x -= x.mean(1, keepdims=True)
    # A flat image has no direction: it stays 0, at distance 1 from every face.
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def _mirror(features: np.ndarray) -> np.ndarray:
    # Box averaging commutes with a horizontal flip: flip the 16x16 thumbnail.
    return features.reshape(-1, THUMB, THUMB)[:, :, ::-1].reshape(len(features), -1)


@dataclass
class NearestIndex:
    """Training-face features; `nearest(images)` -> (distances, row of the nearest face)."""

    features: np.ndarray  # N x 256 float32, unit rows
    names: np.ndarray  # N file names (str), relative to `source`
    source: str = ""

    def __len__(self) -> int:
        return len(self.features)

    @classmethod
    def from_images(cls, images: np.ndarray, names: list[str] | None = None, source: str = "",
                    chunk: int = 2048, progress: bool = False) -> "NearestIndex":
        """N x 64 x 64 x 3 uint8 (a numpy array or a torch tensor N x 3 x 64 x 64)."""
        from tqdm import tqdm
        if hasattr(images, "permute"):  # torch N x 3 x H x W -> numpy N x H x W x 3
            images = images.permute(0, 2, 3, 1).numpy()
        feats = [thumbnails(images[i:i + chunk])
                 for i in tqdm(range(0, len(images), chunk), desc="indexing faces",
                               unit="chunk", disable=not progress, leave=False)]
        features = np.concatenate(feats) if feats else np.zeros((0, THUMB * THUMB), np.float32)
        names = np.array(names if names is not None else [f"#{i}" for i in range(len(images))])
        return cls(features, names, source)

    def nearest(self, images: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """N x H x W x 3 uint8 -> (distances N, index of the nearest training face N), the
        smaller of the image's and its mirror image's distance."""
        q = thumbnails(images)
        dist, idx = np.empty(len(q), np.float32), np.empty(len(q), np.int64)
        ref = self.features
        if len(ref) == 0:
            raise DataError("the memorisation index holds no faces")
        for i in range(0, len(q), chunk):
            block = q[i:i + chunk]
            sim = np.maximum(block @ ref.T, _mirror(block) @ ref.T)  # cosine similarity
            j = sim.argmax(1)
            best = sim[np.arange(len(block)), j]
            dist[i:i + chunk] = np.sqrt(np.clip(2 - 2 * best, 0, None))
            idx[i:i + chunk] = j
        return dist, idx

    def nearest_face(self, image: np.ndarray) -> tuple[float, str]:
        """One H x W x 3 uint8 image (or a PIL image) -> (distance, the nearest face's name)."""
        d, i = self.nearest(np.asarray(image)[None])
        return float(d[0]), str(self.names[i[0]])

    def save(self, path: str | Path) -> Path:
        return atomic_write(path, lambda tmp: np.savez_compressed(
            tmp, format=np.array(INDEX_FORMAT), features_kind=np.array(FEATURES),
            features=self.features.astype(np.float16), names=self.names,
            source=np.array(self.source)), suffix=".npz")

    @classmethod
    def load(cls, path: str | Path) -> "NearestIndex":
        """Read an index file; a clear DataError (naming the file) for anything else."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"memorisation index not found: {path} (build it with "
                            "`python train.py index FACES_FOLDER --out PATH`)")
        try:
            with np.load(path, allow_pickle=False) as z:
                fmt = str(z["format"]) if "format" in z.files else None
                if fmt != INDEX_FORMAT or str(z["features_kind"]) != FEATURES:
                    raise DataError(f"{path}: not a memorisation index of this version "
                                    f"({fmt or 'no format tag'}); build it again")
                features = z["features"].astype(np.float32)
                names, source = z["names"], str(z["source"])
        except DataError:
            raise
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise DataError(f"{path}: not a readable memorisation index "
                            f"({type(e).__name__})") from None
        if features.ndim != 2 or features.shape[1] != THUMB * THUMB or len(names) != len(features):
            raise DataError(f"{path}: malformed memorisation index (features "
                            f"{features.shape}, {len(names)} names)")
        return cls(features, names, source)


_load_index = while_unchanged(NearestIndex.load)


def load_index(path: str | Path) -> NearestIndex:
    """`NearestIndex.load`, remembered while the file is unchanged (the bot asks every draw)."""
    return _load_index(path)


def build_index(folder: str | Path, out: str | Path, cache_dir: str | Path | None = None,
                progress: bool = True, chunk: int = 2048) -> NearestIndex:
    """Index every face of `folder` (as training loads them) into the file `out`.

    Without a decoded-faces cache the faces are decoded and reduced to features `chunk` at a
    time: the index of 20k faces then never holds their 250 MB of pixels."""
    source = str(Path(folder).expanduser().resolve())
    faces = FaceDataset.load(folder, cache_dir, progress=progress) if cache_dir else None
    if faces is not None:
        index = NearestIndex.from_images(faces.images, faces.names, source, progress=progress)
    else:  # no cache: decoded and reduced chunk by chunk
        files = image_files(folder)
        skipped: list[tuple[str, str]] = []
        names, feats, block = [], [], []
        for name, face in decode_faces(files, folder, skipped, progress):
            names.append(name)
            block.append(face)
            if len(block) == chunk:
                feats.append(thumbnails(np.stack(block)))
                block = []
        if block:
            feats.append(thumbnails(np.stack(block)))
        if not names:
            raise DataError(f"no readable image in {folder} ({len(files)} files tried)")
        warn_skipped(skipped, folder)
        index = NearestIndex(np.concatenate(feats), np.array(names), source)
    index.save(out)
    log.info("indexed %d faces of %s into %s", len(index), folder, out)
    return index
