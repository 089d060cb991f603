"""Helpers for tests of code that needs a checkpoint (the bot's, too)."""

from __future__ import annotations

from pathlib import Path

import torch

from gan.checkpoint import atomic_save, checkpoint_dict
from gan.config import load_config
from gan.models import build_generator


def make_tiny_checkpoint(path: str | Path, seed: int = 0, variant: str = "forcecore",
                         width: int = 8) -> Path:
    """A valid exported checkpoint with random weights and a narrow generator (fast)."""
    cfg = load_config(None, [f"variant={variant}", f"model.g_width={width}",
                             f"model.d_width={width}", "name=tiny"])
    torch.manual_seed(seed)
    G = build_generator(cfg).eval()
    atomic_save(checkpoint_dict("export", cfg, 0, 0, G_ema=G.state_dict()), Path(path))
    return Path(path)
