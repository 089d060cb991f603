"""Generation as a pure function of (checkpoint, seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from gan.checkpoint import LoadedCheckpoint, load_checkpoint
from gan.files import while_unchanged
from gan.latent import seed_latents


def image_of(out: Any) -> torch.Tensor:
    """A generator's output may carry extras after the image (the HOG variant's prediction)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """B x 3 x H x W in [-1, 1] -> B x H x W x 3 uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


_load_checkpoint = while_unchanged(load_checkpoint, size=4)


def cached_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """The checkpoint file, loaded once while it is unchanged (its G_ema is built once too)."""
    return _load_checkpoint(path)


def _resolve(ck: LoadedCheckpoint | str | Path) -> tuple[LoadedCheckpoint, torch.nn.Module]:
    loaded = ck if isinstance(ck, LoadedCheckpoint) else cached_checkpoint(ck)
    return loaded, loaded.G_ema


MICRO_BATCH = 8  # G always runs on exactly this many latents (see generate_array)


@torch.inference_mode()
def generate_array(ck: LoadedCheckpoint | str | Path, seeds: Sequence[int]) -> np.ndarray:
    """seeds -> N x 64 x 64 x 3 uint8. Same (checkpoint, seed), same pixels, on any machine
    and whatever else is in the call: latents come from a seeded CPU generator, the model runs
    in float32 on the CPU, and always on micro-batches of MICRO_BATCH latents (the last one
    padded), because the CPU kernels pick their blocking by batch size and a face drawn in a
    batch of 3 would otherwise differ from the same face in a batch of 64 by a level here and
    there."""
    loaded, G = _resolve(ck)
    m = loaded.cfg.model
    out = []
    for i in range(0, len(seeds), MICRO_BATCH):
        z = seed_latents(m.latent, m.latent_dim, list(seeds[i:i + MICRO_BATCH]))
        n = z.shape[0]
        if n < MICRO_BATCH:
            z = torch.cat([z, z.new_zeros(MICRO_BATCH - n, z.shape[1])])
        out.append(to_uint8(image_of(G(z)))[:n])
    return np.concatenate(out) if out else np.zeros((0, 64, 64, 3), np.uint8)


def generate(ck: LoadedCheckpoint | str | Path, seeds: Sequence[int]) -> list[Image.Image]:
    """seeds -> 64x64 RGB PIL images, one per seed."""
    return [Image.fromarray(a) for a in generate_array(ck, seeds)]


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2,
         scale: int = 1) -> Image.Image:
    """N x H x W x 3 uint8 -> one image, `cols` per row, white gaps."""
    n, h, w, _ = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y:y + h, x:x + w] = img
    out = Image.fromarray(canvas)
    return out.resize((out.width * scale, out.height * scale), Image.NEAREST) if scale > 1 else out


@torch.inference_mode()
def interpolate(ck: LoadedCheckpoint | str | Path, seed_a: int, seed_b: int,
                frames: int = 32) -> list[Image.Image]:
    """Frames walking from seed_a's face to seed_b's (spherical for Gaussian latents)."""
    loaded, G = _resolve(ck)
    m = loaded.cfg.model
    za, zb = seed_latents(m.latent, m.latent_dim, [seed_a, seed_b])
    t = torch.linspace(0, 1, frames).unsqueeze(1)
    if m.latent == "gaussian":
        omega = torch.acos((za / za.norm() * zb / zb.norm()).sum().clamp(-1 + 1e-7, 1 - 1e-7))
        z = (torch.sin((1 - t) * omega) * za + torch.sin(t * omega) * zb) / torch.sin(omega)
    else:
        z = (1 - t) * za + t * zb
    return [Image.fromarray(a) for a in to_uint8(image_of(G(z)))]
