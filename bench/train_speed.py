#!/usr/bin/env python3
"""Training speed: our loop against the pytorch/examples DCGAN loop, in one process.

    python bench/train_speed.py                 # CPU, batch 64, all rows
    python bench/train_speed.py --steps 5 --variants dcgan,capsule --bf16 --contiguous
    python bench/train_speed.py --batch 8 --steps 1   # a quick check that every row runs

Rows: the reference step (pytorch/examples dcgan/main.py: D on real, D on detached fake, one D
step; G step through D with D's weight gradients computed and thrown away), our step on the
same architecture ("dcgan"), then each requested variant; images/s, the ratio to the reference,
GFLOP per step (counted by torch's FlopCounterMode) and the achieved fraction of a measured fp32
peak (the faster of a matmul and a convolution of the models' shape). Then `generate` for 1 and 64 images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan.config import load_config  # noqa: E402
from gan.data import FaceDataset  # noqa: E402
from gan.training import Trainer  # noqa: E402


# One row per variant: the two DCGAN baselines, then each experiment.
VARIANTS = ["dcgan", "forcecore", "modern", "forcecore+mbstd", "capsule", "capsule-ensemble", "hog",
            "capsule+hog+mbstd"]


class RefG(nn.Module):  # pytorch/examples dcgan Generator, nz=100, ngf=64
    def __init__(self, nz=100, ngf=64):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.main(z)


class RefD(nn.Module):  # pytorch/examples dcgan Discriminator, ndf=64
    def __init__(self, ndf=64):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


def reference_step_fn(batch: int, data: torch.Tensor):
    """One iteration of pytorch/examples dcgan/main.py's loop, as written there."""
    netG, netD = RefG(), RefD()
    crit = nn.BCELoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    i = [0]

    def step():
        start = (i[0] * batch) % (len(data) - batch)
        i[0] += 1
        real = data[start:start + batch].float().div(127.5).sub(1)
        netD.zero_grad()
        label = torch.full((batch,), 1.0)
        errD_real = crit(netD(real), label)
        errD_real.backward()
        noise = torch.randn(batch, 100, 1, 1)
        fake = netG(noise)
        label.fill_(0.0)
        errD_fake = crit(netD(fake.detach()), label)
        errD_fake.backward()
        optD.step()
        netG.zero_grad()
        label.fill_(1.0)
        errG = crit(netD(fake), label)
        errG.backward()
        optG.step()
    return step


def time_steps(step, steps: int, warmup: int = 2) -> float:
    """Median seconds per step."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def flops_of(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def profile_step(name: str, step, top: int) -> None:
    """Where one step's time goes: torch.profiler's `top` operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(f"\n{name}: one step, top {top} operators by self CPU time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def _best_rate(fn, flops: float, trials: int = 5) -> float:
    """FLOP/s of `fn` (which does `flops`), the best of `trials` after two warm-up calls."""
    fn(), fn()
    best = 0.0
    for _ in range(trials):
        t = time.perf_counter()
        fn()
        best = max(best, flops / (time.perf_counter() - t))
    return best


def matmul_peak(n: int = 2048) -> float:
    """An fp32 matmul (BLAS: MKL in the PyTorch wheels)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return _best_rate(lambda: a @ b, 2 * n ** 3)


def conv_peak() -> float:
    """An fp32 4x4 stride-2 convolution, the layer shape of these models, through oneDNN
    (channels_last). On CPUs where MKL's matmul takes a slow path (MKL on AMD does not use
    AVX-512) this is the faster of the two, and the honest ceiling for conv nets."""
    x = torch.randn(64, 256, 16, 16).to(memory_format=torch.channels_last)
    w = torch.randn(512, 256, 4, 4).to(memory_format=torch.channels_last)
    return _best_rate(lambda: torch.nn.functional.conv2d(x, w, stride=2, padding=1),
                      2 * 64 * 8 * 8 * 512 * 256 * 16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated variants, one row each (default: all of issue 5's); "
                         "`variant;key=value;...` for extra settings")
    ap.add_argument("--bf16", action="store_true", help="also time our step with bf16 autocast")
    ap.add_argument("--contiguous", action="store_true",
                    help="also time dcgan without channels_last (channels_last is the default layout)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="print each row's top N operators (torch profiler, one step)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (max(4 * a.batch, 256), 3, 64, 64), dtype=torch.uint8)
    data = FaceDataset(images)
    mm, conv = matmul_peak(), conv_peak()
    peak = max(mm, conv)

    rows = []
    ref = reference_step_fn(a.batch, images)
    ref_flops = flops_of(ref)
    ref_s = time_steps(ref, a.steps)
    rows.append(("reference (pytorch/examples)", ref_s, ref_flops))

    def ours(variant: str, *extra: str):
        cfg = load_config(None, [f"variant={variant}", f"train.batch_size={a.batch}",
                                 "train.progress=false", "data.cache_dir=null", *extra])
        tr = Trainer(cfg, data, run_dir=None)
        return tr.train_step

    # `variant;key=value;...` times a variant with its own settings (e.g. a capsule trunk).
    configs = [(v, tuple(extra)) for v, *extra in (e.split(";") for e in a.variants.split(","))]
    if a.contiguous:
        configs.append(("dcgan", ("train.channels_last=false",)))
    if a.bf16:
        configs.append(("dcgan", ("train.bf16=true",)))
    for variant, extra in configs:
        step = ours(variant, *extra, "optim.d_warmup_steps=0")
        name = f"ours: {variant} {' '.join(e.split('.')[-1] for e in extra)}".strip()
        rows.append((name, time_steps(step, a.steps), flops_of(step)))
        if a.profile:
            profile_step(name, step, a.profile)

    print(f"\nbatch {a.batch}, {torch.get_num_threads()} threads, median of {a.steps} steps; "
          f"measured fp32 peak {peak / 1e9:.0f} GFLOP/s (the faster of a 2048^2 matmul, "
          f"{mm / 1e9:.0f}, and a 4x4 stride-2 conv, {conv / 1e9:.0f})\n")
    print(f"{'loop':<34} {'images/s':>9} {'vs ref':>7} {'GFLOP/step':>11} {'GFLOP/s':>8} "
          f"{'% peak':>7}")
    for name, sec, fl in rows:
        print(f"{name:<34} {a.batch / sec:9.1f} {ref_s / sec:7.2f} {fl / 1e9:11.1f} "
              f"{fl / sec / 1e9:8.1f} {100 * fl / sec / peak:6.0f}%")

    from gan.sampling import generate_array
    from gan.testing import make_tiny_checkpoint
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        ck = make_tiny_checkpoint(Path(tmp) / "g.pt", width=64)
        generate_array(ck, [0])
        print()
        for n in (1, 64):
            t = time.perf_counter()
            generate_array(ck, list(range(n)))
            dt = time.perf_counter() - t
            print(f"generate {n:>2} image(s): {dt * 1000:8.1f} ms  ({n / dt:.0f} images/s)")


if __name__ == "__main__":
    main()
