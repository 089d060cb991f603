"""Shared fixtures: small synthetic face folders, tiny model settings, the real faces."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Tiny models gain nothing from threads, and one thread keeps runs repeatable and leaves the
# other core to a second process (the DDP test runs two).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
REAL_FACES = Path(os.environ.get("WAIFU_FACES_DIR", REPO.parent / "shared" / "data" / "animefaces"))

# A generator/discriminator this narrow trains a step in milliseconds.
TINY = ["model.g_width=8", "model.d_width=8", "train.batch_size=8", "train.progress=false",
        "data.cache_dir=null"]


def synthetic_face(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A coloured disc on a coloured background with two 'eyes': varied, never blank."""
    yy, xx = np.mgrid[:size, :size]
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    cx, cy, r = rng.integers(size // 3, 2 * size // 3, 2).tolist() + [rng.integers(10, 20)]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
    for ex in (cx - r // 2, cx + r // 2):
        img[(xx - ex) ** 2 + (yy - cy + 3) ** 2 < 9] = 0
    return img


@pytest.fixture
def faces_dir(tmp_path: Path) -> Path:
    """24 synthetic 64x64 PNG faces."""
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(synthetic_face(rng)).save(folder / f"face{i:03d}.png")
    return folder


@pytest.fixture
def tiny(faces_dir: Path, tmp_path: Path) -> list[str]:
    """Overrides for a tiny, fast training run on the synthetic faces."""
    return TINY + [f"data.path={faces_dir}", f"train.runs_dir={tmp_path / 'runs'}",
                   "train.total_images=32", "train.log_every=1", "train.grid_every=2",
                   "train.checkpoint_every=2"]


@pytest.fixture
def real_faces() -> list[Path]:
    if not REAL_FACES.is_dir():
        pytest.skip(f"real faces not found at {REAL_FACES} (set WAIFU_FACES_DIR; "
                    "they live in ../shared beside the repo)")
    return sorted(REAL_FACES.glob("*.jpg"))[:8]


def write_bomb_png(path: Path, side: int = 30000) -> Path:
    """A decompression bomb: a side x side all-black 1-bit PNG, ~100 kB on disk, written
    without ever holding the image (Pillow would need side**2 bytes to make one)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    z = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    idat = b"".join(z.compress(row * 1000) for _ in range(side // 1000))
    idat += z.compress(row * (side % 1000)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path
