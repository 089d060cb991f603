"""Images drawn ahead, so that most posts need no torch (its import alone is ~2.5 s of CPU).

Whenever a draw has the checkpoint loaded anyway, it also draws COUNT more random seeds and
keeps their PNGs in <data_dir>/ahead/, named by checkpoint and seed. Later draws of a random
seed (or of a seed a dry run showed) take one from there first. A kept image is exactly what
drawing its seed gives (the same code, a lossless PNG: `regenerate` finds it identical), and
it is checked like a fresh one when taken: a seed not posted yet, an image unlike the earlier
posts and (the guard runs on its pixels then) not a near-copy of a training face.

With curation (bot/curate.py) a post takes `candidates` kept images at once, so the folder
keeps COUNT posts' worth of candidates, each PNG with its realism score and the critic that
gave it (text chunks): a curated post needs no torch either. An image without a score of the
critic in use (drawn before curation was on, or by another critic) is drawn and scored again.
"""

from __future__ import annotations

import io
import logging
import random
from pathlib import Path
from typing import Callable

from PIL import Image, PngImagePlugin

from gan import atomic_write

log = logging.getLogger(__name__)

COUNT = 8  # one draw in COUNT + 1 loads the checkpoint, for posts hours apart
FOLDER = "ahead"


class Ahead:
    """The kept images of one checkpoint (by its sha256) in a data folder."""

    def __init__(self, data_dir: Path, checkpoint_sha256: str):
        self.folder = Path(data_dir) / FOLDER
        self.prefix = checkpoint_sha256[:16]

    def _path(self, seed: int) -> Path:
        return self.folder / f"{self.prefix}-{seed}.png"

    def seeds(self) -> list[int]:
        return sorted(int(p.stem.rpartition("-")[2])
                      for p in self.folder.glob(f"{self.prefix}-*.png"))

    def unposted(self, used: set[int]) -> list[int]:
        """The kept seeds not posted yet; posted ones (by a `post --seed`) are removed."""
        for seed in used.intersection(self.seeds()):
            self.drop(seed)
        return [k for k in self.seeds() if k not in used]

    def get(self, seed: int) -> Image.Image | None:
        """The kept image of `seed`, or None."""
        return self.get_scored(seed)[0]

    def get_scored(self, seed: int,
                   critic: str | None = None) -> tuple[Image.Image | None, float | None]:
        """The kept image of `seed` (or None) and its realism score by the critic `critic`
        (bot.curate.critic_key), None when it has none by that critic."""
        try:
            data = self._path(seed).read_bytes()
        except FileNotFoundError:  # not kept, or taken by a concurrent dry run
            return None, None
        with Image.open(io.BytesIO(data)) as im:
            text = getattr(im, "text", {})
            score = (float(text["score"]) if critic is not None and "score" in text
                     and text.get("critic") == critic else None)
            return im.convert("RGB"), score

    def drop(self, seed: int) -> None:
        self._path(seed).unlink(missing_ok=True)

    def fill(self, draw: Callable[[list[int]], tuple[list[Image.Image], list[float] | None]],
             rng: random.Random, used: set[int],
             pick: Callable[[random.Random, set[int]], int], count: int = COUNT,
             critic: str | None = None) -> None:
        """Draw random seeds until `count` are kept (the checkpoint is loaded: ~20 ms each),
        all in one call of `draw` (seeds -> images, and their scores by the critic `critic`
        or None)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):  # another checkpoint's: never taken again
            if not old.name.startswith(self.prefix):
                old.unlink(missing_ok=True)
        have = set(self.seeds())
        seeds = []
        for _ in range(count - len(have)):
            seeds.append(pick(rng, used | have))
            have.add(seeds[-1])
        if not seeds:
            return
        images, scores = draw(seeds)
        for i, seed in enumerate(seeds):
            info = PngImagePlugin.PngInfo()
            if scores is not None and critic is not None:
                info.add_text("score", repr(scores[i]))
                info.add_text("critic", critic)
            buf = io.BytesIO()
            images[i].save(buf, format="PNG", pnginfo=info)
            atomic_write(self._path(seed), buf.getvalue())
