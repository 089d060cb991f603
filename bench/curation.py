#!/usr/bin/env python3
"""Curation: do the posts the critic picks look better than the posts it would not have picked?

    python bench/curation.py --data ../shared/data/animefaces            # default.pt, 500 posts
    python bench/curation.py --data FACES --checkpoint checkpoints/x.pt --posts 500 --k 8

The bot draws K fresh candidate seeds for a post (bot.curate.candidates) and posts the one the
realism critic (gan/realism.py: EfficientNet-Lite0 features) scores highest, picked by
`gan.realism.pick` (and, for one row, the first scoring at least bot.curate.min_score).
This bench draws K candidates for each of N posts (seeds K*i .. K*i+K-1
for post i), picks with that same function and measures, with EfficientNet-Lite2 (the judge of
`python train.py evaluate`, never the critic's network), the N curated images against the N
uncurated ones (each post's first candidate, i.e. what the bot posts with curation off), and the
curated sets for smaller K too (the first k candidates of each post). Each row: FLD, KID,
precision and recall against every training face, and the critic's mean score. Same seeds,
same sample count, same measurement in every row. The bot's dedup and memorisation checks are
left out here (they refuse a few candidates a day, not a share that moves these numbers).
Writes the picked and passed-over faces of the first --grid-posts (8) posts to --grid.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan.config import MetricsConfig  # noqa: E402
from gan.data import FaceDataset  # noqa: E402
from gan.metrics import EfficientNetExtractor, feature_metrics  # noqa: E402
from gan.realism import Curator, RealismCritic, build_critic, pick  # noqa: E402
from gan.sampling import cached_checkpoint, generate_array, grid  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the training faces folder")
    p.add_argument("--checkpoint", type=Path, default=Path("checkpoints/default.pt"))
    p.add_argument("--posts", type=int, default=500)
    p.add_argument("--k", type=int, default=8, help="candidates per post (bot.curate.candidates)")
    p.add_argument("--critic", type=Path, default=Path("checkpoints/critic.npz"),
                   help="the critic file (default: the one the bot ships); built from --data "
                   "when missing")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/datasets"))
    p.add_argument("--grid", type=Path, default=Path("out/curation.png"))
    p.add_argument("--grid-posts", type=int, default=8, help="posts (rows) in --grid")
    a = p.parse_args()
    if not a.data.is_dir():
        p.error(f"--data {a.data}: not a folder of faces")

    t0 = time.perf_counter()
    critic = (RealismCritic.load(a.critic) if a.critic.is_file()
              else build_critic(a.data, a.critic, a.cache_dir))
    ck = cached_checkpoint(a.checkpoint)
    seeds = list(range(a.posts * a.k))
    images = generate_array(ck, seeds).reshape(a.posts, a.k, 64, 64, 3)
    scores = Curator(critic).scores(images.reshape(-1, 64, 64, 3)).reshape(a.posts, a.k)

    mcfg = MetricsConfig(samples=a.posts)
    judge = EfficientNetExtractor(mcfg)
    faces = FaceDataset.load(a.data, a.cache_dir, progress=False)
    f_real = judge.cached_features(faces.images.permute(0, 2, 3, 1).numpy(), a.cache_dir)
    f_all = judge.features(images.reshape(-1, 64, 64, 3)).reshape(a.posts, a.k, -1)

    rows = []
    ks = sorted({1, *[k for k in (2, 4, 8, 16) if k < a.k], a.k})
    for k in ks:
        chosen = np.array([pick(row[:k]) for row in scores])  # the bot's choice, no checks
        picked = f_all[np.arange(a.posts), chosen]
        m = feature_metrics(f_real, picked, mcfg, "fld")
        label = "uncurated (first candidate)" if k == 1 else f"curated, best of {k}"
        rows.append((label, m, float(scores[np.arange(a.posts), chosen].mean())))

    # bot.curate.min_score: the first candidate (drawn order) scoring at least the 20th
    # percentile of the uncurated posts' scores, else the best: cuts the tail only.
    tau = round(float(np.quantile(scores[:, 0], 0.2)), 2)
    first_ok = np.array([pick(row, min_score=tau) for row in scores])
    m = feature_metrics(f_real, f_all[np.arange(a.posts), first_ok], mcfg, "fld")
    rows.append((f"first of {a.k} scoring >= {tau:.2f} (min_score; p20)", m,
                 float(scores[np.arange(a.posts), first_ok].mean())))
    # How much an uncurated set varies by chance: candidate j of every post, j = 0..k-1.
    spread = [feature_metrics(f_real, f_all[:, j], mcfg, "fld") for j in range(a.k)]

    base = rows[0][1]
    print(f"\n{ck.path.name} ({ck.variant}, {ck.images_seen:,} images), {a.posts} posts, "
          f"{len(faces):,} real faces; Lite2 features at 64 px; critic: Lite0, "
          f"{critic.faces:,} real faces ({a.critic}); {time.perf_counter() - t0:.0f} s\n")
    print("| posts | FLD ↓ | vs uncurated | KID ↓ | precision ↑ | recall ↑ | critic score |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, m, s in rows:
        print(f"| {label} | {m['fld']:.0f} | {m['fld'] / base['fld']:.2f}x | "
              f"{m['kid_mean']:.1f} ± {m['kid_std']:.1f} | {m['precision']:.3f} | "
              f"{m['recall']:.3f} | {s:.3f} |")

    def span(key: str, fmt: str) -> str:
        values = [x[key] for x in spread]
        return f"{min(values):{fmt}}-{max(values):{fmt}}"

    print(f"\nchance: the {a.k} uncurated sets (candidate j of every post) span FLD "
          f"{span('fld', '.0f')}, KID {span('kid_mean', '.1f')}, precision "
          f"{span('precision', '.3f')}")

    # The first posts: the picked face, then the candidates passed over, one post a row.
    n = min(a.grid_posts, a.posts)
    order = np.argsort(-scores[:n], axis=1, kind="stable")  # pick's order
    a.grid.parent.mkdir(parents=True, exist_ok=True)
    grid(images[np.arange(n)[:, None], order].reshape(-1, 64, 64, 3), cols=a.k,
         scale=2).save(a.grid)
    print(f"\n{a.grid}: the first {n} posts, one a row, candidates best first (the picked one "
          "leftmost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
