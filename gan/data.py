"""Face folders: load into memory as uint8, and clean.

The whole dataset is decoded once into an N x 3 x 64 x 64 uint8 tensor (20k faces ~ 250 MB),
so an epoch does no disk I/O; a decoded copy is cached on disk, keyed by the folder's listing.
Every dataset file is decoded by `open_rgb`, which turns anything hostile (a decompression
bomb, a truncated file, macOS metadata, a folder named like an image) into a `BadImage` with a
short reason, so each caller skips and names the file instead of crashing.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from gan.errors import UserError
from gan.files import atomic_write

if TYPE_CHECKING:  # torch is imported where tensors are made: the bot's guard needs none
    import torch

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
SIZE = 64
# A face photo is far smaller; a file claiming more pixels is refused before decoding (a
# decompression bomb: 30000x30000 PNG of zeros is ~100 kB on disk and 900 MB decoded).
MAX_PIXELS = 8192 * 8192
SHOWN_SKIPPED = 5  # files named in the "skipped" warning; the rest are counted


class DataError(UserError, ValueError):
    """A problem with the image folder; the message is one readable line."""


class BadImage(ValueError):
    """A file that is no usable image. `kind`: "not-image" or "unreadable"."""

    def __init__(self, reason: str, kind: str = "unreadable"):
        super().__init__(reason)
        self.kind = kind


def _image_named(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)


def image_files(folder: str | Path) -> list[Path]:
    """Everything named like an image in a folder (recursive, sorted), folders too: `open_rgb`
    refuses those with a reason, so they are counted and named like other skipped files."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    files = _image_named(folder)
    if not files:
        raise DataError(f"no image files (jpg, png, webp) in {folder}")
    return files


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit grayscale (mode I;16*, or I from some decoders) scaled to 8 bits; Pillow's own
    convert clips it, so a 16-bit face would come out white."""
    a = np.asarray(im)
    if im.mode == "I" and a.max() <= 255:  # already 8-bit values
        return Image.fromarray(a.astype(np.uint8), "L")
    return Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), "L")


def open_rgb(path: Path) -> Image.Image:
    """Decode fully (truncated files fail here, not later) and convert any mode to RGB.

    Raises BadImage for anything that is not a usable image; never a decoder's own error."""
    path = Path(path)
    if path.is_dir():
        raise BadImage("a folder named like an image", "not-image")
    if path.name.startswith("._"):
        raise BadImage("AppleDouble file (macOS metadata), not an image", "not-image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            if im.width * im.height > MAX_PIXELS:
                raise BadImage(f"{im.width}x{im.height} pixels: too large to decode safely "
                               "(a decompression bomb?)")
            im.load()
            if im.mode.startswith("I;16") or im.mode == "I":
                im = _to_8bit(im)
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                # Transparent pixels often hide black: put the face on white instead.
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(bg, rgba).convert("RGB")
            return im.convert("RGB")
    except BadImage:
        raise
    except Image.DecompressionBombError:
        raise BadImage("too many pixels to decode safely (a decompression bomb?)") from None
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can identify", "not-image") from None
    except Exception as e:  # noqa: BLE001 - a hostile file can make any plugin raise anything
        raise BadImage(f"{type(e).__name__}: {e}"[:100]) from None


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
        if p.is_file():  # as before folders were listed: old caches stay valid
            st = p.stat()
            h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def decode_faces(files: list[Path], folder: str | Path, skipped: list[tuple[str, str]],
                 progress: bool = False) -> Iterator[tuple[str, np.ndarray]]:
    """(name relative to folder, 64 x 64 x 3 uint8) for each usable file, one at a time, so a
    caller that only needs features never holds every decoded face; the others are appended
    to `skipped` as (name, reason)."""
    from tqdm import tqdm
    for p in tqdm(files, desc="decoding faces", unit="img", disable=not progress, leave=False):
        try:
            face = to_face(open_rgb(p))
        except BadImage as e:
            skipped.append((_rel(p, folder), str(e)))
            continue
        yield _rel(p, folder), face


def warn_skipped(skipped: list[tuple[str, str]], folder: str | Path) -> None:
    if not skipped:
        return
    shown = ", ".join(f"{name} ({why})" for name, why in skipped[:SHOWN_SKIPPED])
    more = len(skipped) - SHOWN_SKIPPED
    log.warning("skipped %d file(s) in %s that are no usable image: %s%s", len(skipped),
                folder, shown, f", and {more} more" if more > 0 else "")


@dataclass
class FaceDataset:
    """All faces of a folder, decoded: `images` is N x 3 x 64 x 64 uint8."""

    images: torch.Tensor
    # (file relative to the folder, why it was skipped), in name order.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Each image's file, relative to the folder (None: images made in memory, not loaded).
    names: list[str] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def skip_reasons(self) -> dict[str, str]:
        return dict(self.skipped)

    def write_skipped(self, path: str | Path) -> Path:
        """Every skipped file and why, one `name<TAB>reason` a line (the warning names five)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{name}\t{why}\n" for name, why in self.skipped))
        return path

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
            if cache.is_file() and (cached := cls._from_cache(cache, folder)) is not None:
                return cached
        # Filled in place: a list of 20k arrays and their stacked copy would need twice the memory.
        images = np.empty((len(files), 3, SIZE, SIZE), np.uint8)
        skipped: list[tuple[str, str]] = []
        names = []
        for name, face in decode_faces(files, folder, skipped, progress):
            images[len(names)] = face.transpose(2, 0, 1)
            names.append(name)
        if not names:
            raise DataError(f"no readable image in {folder} ({len(files)} files tried)")
        warn_skipped(skipped, folder)
        images = images[:len(names)]
        if cache is not None:
            atomic_write(cache, lambda tmp: np.savez(
                tmp, images=images, names=np.array(names),
                skipped=np.array([f"{n}\t{w}" for n, w in skipped], dtype=str)), suffix=".npz")
        import torch
        return cls(torch.from_numpy(images), skipped, names)

    @classmethod
    def _from_cache(cls, cache: Path, folder: str | Path) -> "FaceDataset | None":
        """The faces as `load` cached them; None for a file it did not write (decoded again)."""
        import torch
        with np.load(cache) as z:
            if not {"images", "names", "skipped"} <= set(z.files):
                return None
            images = torch.from_numpy(z["images"])
            names = z["names"].tolist()
            skipped = [tuple(x.split("\t", 1)) for x in z["skipped"].tolist()]
        warn_skipped(skipped, folder)
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
    # Hidden files (.DS_Store, editors' swap files) are no dataset; AppleDouble files and
    # folders named like images look like one, so they are reported.
    files = sorted(p for p in folder.rglob("*") if (p.is_file() and not p.name.startswith("."))
                   or (p.name.startswith("._") and p.is_file())
                   or (p.is_dir() and p.suffix.lower() in IMAGE_EXTS))
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
        except BadImage as e:
            problems[e.kind].append((p, str(e)))
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
                if p.is_dir():  # a folder named like an image: its files were checked one by one
                    continue
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
