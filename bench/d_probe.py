#!/usr/bin/env python3
"""How fast can each discriminator tell real faces from a fixed generator's output?

    python bench/d_probe.py --data ../shared/data/animefaces --steps 100

Trains only D, with its variant's loss and optimiser settings, on real faces against each
kind of frozen fakes in --fakes, then against a frozen trained generator (--checkpoint,
optional), and prints D's mean output on held-out real and fake batches every --every steps.
A discriminator that cannot push its fakes' output down here gives its generator little to
learn from; this isolates D from the generator's dynamics.

Fakes: `untrained` is a freshly initialised generator of the variant (smooth blobs); `noise`
is per-pixel colour noise around the real faces' mean colour (`NoiseGenerator`), what all the
capsule runs of docs/results.md drifted to, reproducible without their checkpoint.
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


FAKES = ("untrained", "noise")


class NoiseGenerator(torch.nn.Module):
    """A frozen "generator" of high-frequency colour noise: every pixel and channel drawn
    independently, N(mean colour, `std`) clamped to [-1, 1]. `std` 0.3 and the mean colour
    match the grids of the capsule runs that drifted to noise (pixel std about 0.28 there, no
    correlation between neighbouring pixels). Draws from its own seeded RNG, so a probe is
    repeatable; the latent only sets the batch size."""

    def __init__(self, mean_colour: torch.Tensor, std: float = 0.3, seed: int = 0, size: int = 64):
        super().__init__()
        self.register_buffer("mean_colour", mean_colour.view(1, 3, 1, 1).float())
        self.std, self.size = std, size
        self.rng = torch.Generator().manual_seed(seed)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(z.shape[0], 3, self.size, self.size, generator=self.rng)
        return (self.mean_colour + self.std * noise).clamp(-1, 1)


def mean_colour(faces: torch.Tensor) -> torch.Tensor:
    """The faces' (uint8 B x 3 x H x W) mean colour in [-1, 1], per channel."""
    return faces.float().mean(dim=(0, 2, 3)) / 127.5 - 1


def probe(variant: str, faces: torch.Tensor, G: torch.nn.Module | None, steps: int, every: int,
          batch: int, extra: list[str]) -> list[tuple[int, float, float]]:
    """D's mean output on held-out (real, fake) batches at steps 0, every, 2 every, ... steps;
    G None = an untrained generator of the variant."""
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
    p.add_argument("--variants", default="forcecore,dcgan,capsule,capsule;loss.kind=bce,"
                   "capsule;model.d_options.trunk=legacy",
                   help="comma-separated; `variant;key=value;...` for extra settings")
    p.add_argument("--fakes", default=",".join(FAKES),
                   help=f"comma-separated kinds of frozen fakes: {', '.join(FAKES)}")
    p.add_argument("--checkpoint", type=Path, help="also probe against this frozen generator")
    a = p.parse_args()
    if not a.data.is_dir():
        p.error(f"--data {a.data}: not a folder of faces")
    fakes = [f for f in a.fakes.split(",") if f]
    if bad := sorted(set(fakes) - set(FAKES)):
        p.error(f"--fakes: unknown kind {', '.join(bad)} (known: {', '.join(FAKES)})")
    entries = [e.split(";") for e in a.variants.split(",")]
    for variant, *extra in entries:
        try:
            load_config(None, [f"variant={variant}", "data.path=.", *extra])
        except ConfigError as e:
            p.error(f"{variant}: {e}")
    faces = FaceDataset.load(a.data, ".cache/datasets", progress=False).images
    # Factories, so every probe starts its noise generator from the same seed.
    colour = mean_colour(faces)
    kinds = {"untrained": ("untrained G", lambda: None),
             "noise": ("noise G", lambda: NoiseGenerator(colour).eval())}
    gens = [kinds[f] for f in fakes]
    if a.checkpoint:
        trained = load_checkpoint(a.checkpoint).generator().eval()
        gens.append((a.checkpoint.name, lambda: trained))
    print("| fakes from | D | " + " | ".join(f"step {s}: real / fake" for s in
                                           range(0, a.steps + 1, a.every)) + " |")
    print("|---|---|" + "---:|" * len(range(0, a.steps + 1, a.every)))
    for gname, make_g in gens:
        for variant, *extra in entries:
            rows = probe(variant, faces, make_g(), a.steps, a.every, a.batch, extra)
            cells = " | ".join(f"{r:.2f} / {f:.2f}" for _, r, f in rows)
            print(f"| {gname} | {';'.join([variant, *extra])} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
