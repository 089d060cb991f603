"""Make docs/gallery.png: real posts from the shipped checkpoints into a throw-away outbox,
then a headless Chromium screenshot of its first page (issue 14, part 6).

    python bench/gallery_screenshot.py --out docs/gallery.png

Posts go through the bot's own pipeline (`post_once` with fixed seeds, the outbox channel
only, the memorisation guard off: no training faces are needed), from checkpoints/default.pt
and, to show the checkpoint filter, checkpoints/capsule.pt when it is there; the newest is
an animated post (its video shows its first frame in the picture).
Needs `chromium` (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot import posting  # noqa: E402
from bot.channels import build_channels  # noqa: E402
from bot.channels.outbox import screenshot  # noqa: E402
from bot.checkpoints import ensure_active, publish  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.db import open_database  # noqa: E402


class Seeds(random.Random):
    def __init__(self, seeds: list[int]):
        super().__init__()
        self.seeds = seeds

    def randrange(self, *_args: object) -> int:
        return self.seeds.pop(0)


def make_gallery(folder: Path) -> Path:
    """Posts into an outbox under `folder`; returns its index.html."""
    (folder / "config.yaml").write_text(
        "bot:\n"
        f"  default_checkpoint: {REPO / 'checkpoints' / 'default.pt'}\n"
        "  max_posts_per_day: null\n"
        "  memorisation: {faces: null}\n"
        f"  curate: {{critic: {REPO / 'checkpoints' / 'critic.npz'}}}\n"
        "  channels: {outbox: {title: waifu-gen outbox, per_page: 6}}\n")
    settings = load_settings(folder / "config.yaml")
    sessions = open_database(settings.database_url)
    ensure_active(sessions, settings)
    channels = build_channels(settings.channels, settings.data_dir)
    other = REPO / "checkpoints" / "capsule.pt"
    plan = [(None, [7, 42, 3])] + ([(other, [11, 5])] if other.is_file() else []) + [
        (settings.default_checkpoint, [64])]
    for checkpoint, seeds in plan:
        if checkpoint is not None:
            publish(sessions, checkpoint)
        for seed in seeds:  # a curated post draws its candidates from seed*1000 on
            posting.post_once(sessions, settings, channels,
                              rng=Seeds(list(range(seed * 1000, seed * 1000 + 64))))
    # The newest: an animated post, a walk from seed 2024 through two more faces and back.
    posting.post_once(sessions, settings, channels, rng=Seeds([2024, 9, 77]), animated=True)
    return channels["outbox"].folder / "index.html"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "gallery.png")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=1300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        index = make_gallery(Path(tmp))
        screenshot(index, args.out, args.width, args.height)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
