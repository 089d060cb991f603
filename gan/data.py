"""Face folders: load into memory as uint8, and clean.

The whole dataset is decoded once into an N x 3 x 64 x 64 uint8 tensor (20k faces ~ 250 MB),
so an epoch does no disk I/O; a decoded copy is cached on disk, keyed by the folder's listing.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
SIZE = 64


class DataError(ValueError):
    """A problem with the image folder; the message is one readable line."""


def image_files(folder: str | Path) -> list[Path]:
    """The image files of a folder (recursive, sorted); a clear error when there are none."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise DataError(f"no image files (jpg, png, webp) in {folder}")
    return files


def open_rgb(path: Path) -> Image.Image:
    """Decode fully (truncated files raise here, not later) and convert any mode to RGB."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            # Transparent pixels often hide black: put the face on white instead.
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(bg, rgba).convert("RGB")
        return im.convert("RGB")


def to_face(im: Image.Image, size: int = SIZE) -> np.ndarray:
    """Center-crop to a square and resize: -> size x size x 3 uint8."""
    w, h = im.size
    s = min(w, h)
    if (w, h) != (s, s):
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
    if s != size:
        im = im.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def _rel(path: Path, folder: str | Path) -> str:
    return path.relative_to(Path(folder).expanduser()).as_posix()


def _listing_key(files: list[Path]) -> str:
    h = hashlib.sha1()
    for p in files:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


@dataclass
class FaceDataset:
    """All faces of a folder, decoded: `images` is N x 3 x 64 x 64 uint8."""

    images: torch.Tensor
    skipped: list[Path] = field(default_factory=list)
    # Each image's file, relative to the folder (None: a cache written before names were kept
    # that cannot tell which files were skipped).
    names: list[str] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, index: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 rows -> float in [-1, 1]; `flip` is a boolean mask of rows to mirror."""
        x = self.images[index].float().div_(127.5).sub_(1.0)
        if flip is not None and bool(flip.any()):
            x[flip] = x[flip].flip(-1)
        return x

    @classmethod
    def load(cls, folder: str | Path, cache_dir: str | Path | None = None,
             progress: bool = True) -> "FaceDataset":
        files = image_files(folder)
        cache = None
        if cache_dir is not None:
            cache = Path(cache_dir) / f"faces-{_listing_key(files)}.npz"
            if cache.is_file():
                with np.load(cache) as z:
                    images = torch.from_numpy(z["images"])
                    names = z["names"].tolist() if "names" in z.files else None
                if names is None and len(images) == len(files):  # nothing was skipped
                    names = [_rel(p, folder) for p in files]
                return cls(images, names=names)
        arrays, skipped, names = [], [], []
        from tqdm import tqdm
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            for p in tqdm(files, desc="decoding faces", unit="img", disable=not progress,
                          leave=False):
                try:
                    arrays.append(to_face(open_rgb(p)))
                    names.append(_rel(p, folder))
                except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
                    skipped.append(p)
        if not arrays:
            raise DataError(f"no readable image in {folder} ({len(files)} files tried)")
        if skipped:
            log.warning("skipped %d unreadable image(s) in %s (first: %s)", len(skipped),
                        folder, skipped[0].name)
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, images=images.numpy(), names=np.array(names))
            tmp.replace(cache)
        return cls(images, skipped, names)


# --- cleaning -----------------------------------------------------------------------------

@dataclass
class CleanReport:
    total: int
    problems: dict[str, list[tuple[Path, str]]]  # category -> (file, detail)

    @property
    def flagged(self) -> int:
        return sum(len(v) for v in self.problems.values())

    def lines(self) -> list[str]:
        out = [f"{self.total} files, {self.flagged} flagged"]
        for cat, items in self.problems.items():
            if items:
                out.append(f"  {cat}: {len(items)}")
                out += [f"    {p.name}  {detail}" for p, detail in items[:10]]
                if len(items) > 10:
                    out.append(f"    ... and {len(items) - 10} more")
        return out


CATEGORIES = ("unreadable", "not-image", "too-small", "near-blank", "duplicate",
              "near-duplicate")


def clean(folder: str | Path, move_to: str | Path | None = None, min_size: int = 32,
          blank_std: float = 8.0, near_dup_bits: int = 4, progress: bool = True) -> CleanReport:
    """Find files not worth training on; with `move_to`, move them there (one folder each).

    Near-duplicates are perceptual-hash (pHash, 64 bits) matches within `near_dup_bits`;
    the first file in name order is kept.
    """
    import imagehash
    from tqdm import tqdm

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if move_to is not None:
        files = [p for p in files if Path(move_to).resolve() not in p.resolve().parents]
    if not files:
        raise DataError(f"no files in {folder}")
    problems: dict[str, list[tuple[Path, str]]] = {c: [] for c in CATEGORIES}
    seen_bytes: dict[str, Path] = {}
    keep: list[Path] = []
    hashes: list[int] = []
    for p in tqdm(files, desc="checking", unit="file", disable=not progress, leave=False):
        try:
            im = open_rgb(p)
        except UnidentifiedImageError:
            problems["not-image"].append((p, "not an image Pillow can identify"))
            continue
        except (OSError, ValueError, SyntaxError) as e:
            problems["unreadable"].append((p, f"{type(e).__name__}: {e}"[:100]))
            continue
        if min(im.size) < min_size:
            problems["too-small"].append((p, f"{im.width}x{im.height}"))
            continue
        std = float(np.asarray(im, dtype=np.float32).std())
        if std < blank_std:
            problems["near-blank"].append((p, f"pixel std {std:.1f}"))
            continue
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest in seen_bytes:
            problems["duplicate"].append((p, f"same bytes as {seen_bytes[digest].name}"))
            continue
        seen_bytes[digest] = p
        keep.append(p)
        hashes.append(int(str(imagehash.phash(im)), 16))
    if hashes and near_dup_bits >= 0:
        for i, j, d in _near_pairs(np.array(hashes, dtype=np.uint64), near_dup_bits):
            problems["near-duplicate"].append((keep[j], f"pHash {d} bits from {keep[i].name}"))
    report = CleanReport(len(files), problems)
    if move_to is not None:
        for cat, items in problems.items():
            for p, _ in items:
                dest = Path(move_to) / cat / p.relative_to(folder)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(p), dest)
    return report


def _near_pairs(h: np.ndarray, max_bits: int, chunk: int = 512):
    """(first, later, distance) for each later hash within max_bits of an earlier kept one."""
    flagged = np.zeros(len(h), bool)
    for start in range(0, len(h), chunk):
        block = h[start:start + chunk]
        d = np.bitwise_count(block[:, None] ^ h[None, :])  # chunk x N Hamming distances
        for r in range(len(block)):
            i = start + r
            if flagged[i]:
                continue
            later = np.nonzero(d[r, i + 1:] <= max_bits)[0] + i + 1
            for j in later:
                if not flagged[j]:
                    flagged[j] = True
                    yield i, int(j), int(d[r, j])
