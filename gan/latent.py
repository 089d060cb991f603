"""Latent vectors. Always drawn on the CPU from an explicit generator, so they are the same on
every machine and every device."""

from __future__ import annotations

import torch


def sample_latent(kind: str, n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    if kind == "gaussian":
        return torch.randn(n, dim, generator=generator)
    if kind == "binary":
        # forcecore's "binary noise": each entry +-1 plus uniform jitter of +-0.1.
        sign = torch.randint(0, 2, (n, dim), generator=generator).float() * 2 - 1
        return sign + (torch.rand(n, dim, generator=generator) * 0.2 - 0.1)
    raise ValueError(f"unknown latent kind '{kind}'")


def seed_latents(kind: str, dim: int, seeds: list[int]) -> torch.Tensor:
    """One latent per seed, each from its own generator: seed 7 gives the same face whatever
    else is in the batch."""
    return torch.cat([sample_latent(kind, 1, dim, torch.Generator().manual_seed(int(s)))
                      for s in seeds])
