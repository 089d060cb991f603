#!/usr/bin/env python3
"""How fast can each discriminator tell real faces from a fixed generator's output?

    python bench/d_probe.py --data ../shared/data/animefaces --steps 100

Trains only D, with its variant's loss and optimiser settings, on real faces against the
samples of an untrained (freshly initialised, frozen) generator, then against a frozen
trained one (--checkpoint, optional), and prints D's mean output on held-out real and fake
batches every --every steps. A discriminator that cannot push its fakes' output down here
gives its generator little to learn from; this isolates D from the generator's dynamics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan.checkpoint import load_checkpoint  # noqa: E402
from gan.config import ConfigError, load_config  # noqa: E402
from gan.data import FaceDataset  # noqa: E402
from gan.latent import sample_latent  # noqa: E402
from gan.losses import Objective  # noqa: E402
from gan.models import build_discriminator, build_generator  # noqa: E402
from gan.sampling import image_of  # noqa: E402


def probe(variant: str, faces: torch.Tensor, G: torch.nn.Module | None, steps: int, every: int,
          batch: int, extra: list[str]) -> list[tuple[int, float, float]]:
    torch.manual_seed(0)
    cfg = load_config(None, [f"variant={variant}", "data.path=.", *extra])
    D = build_discriminator(cfg).train()
    G = G if G is not None else build_generator(cfg).eval()
    obj = Objective(cfg.loss.kind, cfg.loss.label_noise)
    opt = torch.optim.Adam(D.parameters(), cfg.optim.lr_d, (cfg.optim.beta1, cfg.optim.beta2))
    gen = torch.Generator().manual_seed(0)
    hold_real = faces[-batch:].float() / 127.5 - 1
    with torch.no_grad():
        hold_fake = image_of(G(sample_latent(cfg.model.latent, batch, cfg.model.latent_dim, gen)))

    def prob(x):
        out = D(x)
        return torch.sigmoid(out) if D.output == "logit" else out

    rows = []
    for step in range(steps + 1):
        if step % every == 0:
            with torch.no_grad():
                rows.append((step, float(prob(hold_real).mean()), float(prob(hold_fake).mean())))
        if step == steps:
            break
        idx = torch.randint(len(faces) - batch, (batch,), generator=gen)
        real = faces[idx].float() / 127.5 - 1
        with torch.no_grad():
            fake = image_of(G(sample_latent(cfg.model.latent, batch, cfg.model.latent_dim,
                                            gen)))
        loss = obj.d_loss(D(real), D(fake), D.output, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--variants", default="forcecore,dcgan,capsule,capsule;loss.kind=bce",
                   help="comma-separated; `variant;key=value;...` for extra settings")
    p.add_argument("--checkpoint", type=Path, help="also probe against this frozen generator")
    a = p.parse_args()
    if not a.data.is_dir():
        p.error(f"--data {a.data}: not a folder of faces")
    entries = [e.split(";") for e in a.variants.split(",")]
    for variant, *extra in entries:
        try:
            load_config(None, [f"variant={variant}", "data.path=.", *extra])
        except ConfigError as e:
            p.error(f"{variant}: {e}")
    faces = FaceDataset.load(a.data, ".cache/datasets", progress=False).images
    gens: list[tuple[str, torch.nn.Module | None]] = [("untrained G", None)]
    if a.checkpoint:
        gens.append((f"{a.checkpoint.name}", load_checkpoint(a.checkpoint).generator().eval()))
    print("| fakes from | D | " + " | ".join(f"step {s}: real / fake" for s in
                                           range(0, a.steps + 1, a.every)) + " |")
    print("|---|---|" + "---:|" * len(range(0, a.steps + 1, a.every)))
    for gname, G in gens:
        for variant, *extra in entries:
            rows = probe(variant, faces, G, a.steps, a.every, a.batch, extra)
            cells = " | ".join(f"{r:.2f} / {f:.2f}" for _, r, f in rows)
            print(f"| {gname} | {';'.join([variant, *extra])} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
