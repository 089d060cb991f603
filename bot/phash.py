"""The perceptual hash of a post's image, the same bits as `imagehash.phash` (stored in the
database as 16 hex digits), without imagehash's scipy import (~100 ms and ~15 MB per post).

pHash: the image in grayscale, resized to 32x32 (Lanczos), its 2-D DCT-II (unnormalised, as
scipy.fftpack.dct); the top-left 8x8 coefficients against their median give 64 bits.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HASH, SIDE = 8, 32
# Rows 0..7 of the unnormalised DCT-II matrix: y[k] = 2 sum_n x[n] cos(pi k (2n + 1) / 2N).
_DCT = 2 * np.cos(np.pi * np.arange(HASH)[:, None] * (2 * np.arange(SIDE)[None, :] + 1)
                  / (2 * SIDE))


def phash(image: Image.Image) -> str:
    """16 hex digits, as `str(imagehash.phash(image))`."""
    pixels = np.asarray(image.convert("L").resize((SIDE, SIDE), Image.Resampling.LANCZOS),
                        dtype=np.float64)
    low = _DCT @ pixels @ _DCT.T
    # Rounding noise around an exact zero (a flat image) is 0, as in scipy's result.
    low[np.abs(low) < 1e-6] = 0.0
    bits = (low > np.median(low)).ravel()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def distance(a: str, b: str) -> int:
    """Hamming distance of two hashes in hex (imagehash's `h1 - h2`)."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
