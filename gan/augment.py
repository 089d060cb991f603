"""DiffAugment (Zhao et al. 2020, mit-han-lab/data-efficient-gans): differentiable augmentations
applied to every image the discriminator sees, real and fake alike, in D's step and G's.

Because the same random transforms hit both classes and the ops are differentiable, D cannot
use them as a cue and G is not taught to draw them; what D gains is that it cannot memorise the
few thousand training faces, which is what limits small-data, short-budget training.

Ops, as in the reference code on images in [-1, 1]: `color` (brightness +-0.5, saturation
x0-2, contrast x0.5-1.5), `translation` (up to 1/8 of the side, zero fill), `cutout` (a square
of half the side set to zero). Each sample is augmented with probability `p` (all its ops or
none), drawn from the step's CPU generator, so a resumed run sees the same augmentations.

A HOG pair (image, cell grid) is moved in whole cells, so the grid still describes its image;
colour and cutout touch the image only, the same for real and fake pairs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

OPS = ("color", "translation", "cutout")


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """'translation,color' -> ('translation', 'color'); '', 'none' or None -> ()."""
    if not policy or policy.strip().lower() == "none":
        return ()
    ops = tuple(p.strip() for p in policy.split(",") if p.strip())
    for op in ops:
        if op not in OPS:
            raise ValueError(f"unknown augmentation '{op}' (known: {', '.join(OPS)})")
    return ops


def _translate(x: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Shift each image of x (B x C x H x W) by (tx, ty) pixels, filling with zeros."""
    b, _, h, w = x.shape
    dev = x.device
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=dev), torch.arange(h, device=dev),
                                torch.arange(w, device=dev), indexing="ij")
    # Index into a one-pixel zero border: positions shifted off the image land on it.
    gy = (gy - ty.to(dev).view(b, 1, 1) + 1).clamp(0, h + 1)
    gx = (gx - tx.to(dev).view(b, 1, 1) + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2)


class DiffAugment:
    def __init__(self, policy: str | None, p: float = 1.0, cell: int = 8):
        self.ops = parse_policy(policy)
        self.p = p
        self.cell = cell  # HOG cell size in pixels: pairs translate by whole cells

    def __bool__(self) -> bool:
        return bool(self.ops) and self.p > 0

    def __call__(self, x: Any, generator: torch.Generator) -> Any:
        if not self:
            return x
        pair = isinstance(x, (tuple, list))
        image, grid = (x[0], x[1]) if pair else (x, None)
        b, _, h, w = image.shape
        dev = image.device
        on = (torch.rand(b, generator=generator) < self.p).float()  # B, 1 = augment this one
        out = image
        for op in self.ops:
            if op == "color":
                r = torch.rand(3, b, generator=generator)
                bright = ((r[0] - 0.5) * on).view(b, 1, 1, 1).to(dev)
                sat = (1 + (r[1] * 2 - 1) * on).view(b, 1, 1, 1).to(dev)
                con = (1 + (r[2] - 0.5) * on).view(b, 1, 1, 1).to(dev)
                out = out + bright
                mean = out.mean(dim=1, keepdim=True)
                out = (out - mean) * sat + mean
                mean = out.mean(dim=(1, 2, 3), keepdim=True)
                out = (out - mean) * con + mean
            elif op == "translation":
                if pair:  # whole cells: -1, 0 or +1 cell (8 px = 1/8 of 64)
                    c = torch.randint(-1, 2, (2, b), generator=generator) * on.long()
                    out = _translate(out, c[0] * self.cell, c[1] * self.cell)
                    grid = _translate(grid, c[0], c[1])
                else:
                    s = max(1, round(h / 8))
                    t = torch.randint(-s, s + 1, (2, b), generator=generator) * on.long()
                    out = _translate(out, t[0], t[1])
            elif op == "cutout":
                size = h // 2
                off = torch.randint(0, h - size + 1, (2, b), generator=generator)
                ys = torch.arange(h).view(1, h, 1)
                xs = torch.arange(w).view(1, 1, w)
                oy, ox = off[0].view(b, 1, 1), off[1].view(b, 1, 1)
                hole = (ys >= oy) & (ys < oy + size) & (xs >= ox) & (xs < ox + size)
                hole = hole & on.bool().view(b, 1, 1)
                out = out * (~hole).unsqueeze(1).to(dev, out.dtype)
        if not image.is_contiguous() and image.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)  # keep the fast layout
        return (out, grid) if pair else out
