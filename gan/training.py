"""The one training loop. Every variant trains here; the loop never looks at a variant's name.

Variants plug in through the models themselves: a discriminator says whether it outputs a
logit or a probability (`D.output`), may map real images to its input (`D.prepare_real`), and a
generator may add its own loss term (`G.aux_loss(out)`) and return more than an image (a tuple
whose first item is the image).

Randomness is stateless: the batch order of epoch e and the noise of step s come from
generators seeded with (seed, e) and (seed, s, rank). A resumed run therefore continues the
exact trajectory without saving RNG state.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from gan.augment import DiffAugment
from gan.checkpoint import (CheckpointError, LoadedCheckpoint, atomic_save, checkpoint_dict,
                            load_checkpoint)
from gan.config import Config, ConfigError
from gan.data import DataError, FaceDataset
from gan.latent import sample_latent, seed_latents
from gan.losses import Objective
from gan.models import build_discriminator, build_generator
from gan.report import keep_stats_until, plot_losses, progress_gif
from gan.sampling import grid, image_of, to_uint8

log = logging.getLogger(__name__)

GRID_SEEDS = list(range(64))  # the fixed latent batch: the same faces `generate` gives for 0-63


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


def _detach(out: Any) -> Any:
    return type(out)(o.detach() for o in out) if isinstance(out, (tuple, list)) else out.detach()


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + rank)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_kind: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", local)
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is available")
    return dev


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """runs/<00000>-<name>, numbered after the highest existing run; never reuses a folder."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    ids = [int(m.group(1)) for p in runs_dir.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
    for run_id in range(max(ids, default=-1) + 1, 100_000):
        path = runs_dir / f"{run_id:05d}-{name}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run id in {runs_dir}")


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted(run_dir.glob("ckpt-*.pt"))
    return ckpts[-1] if ckpts else None


class EMA:
    """Exponential moving average of G, its half-life stated in images seen (stylegan2-ada)."""

    def __init__(self, half_life: float, rampup: float | None):
        self.half_life, self.rampup = half_life, rampup

    @torch.no_grad()
    def update(self, ema: nn.Module, model: nn.Module, batch: int, images_seen: int) -> None:
        half = self.half_life
        if self.rampup is not None:
            half = min(half, images_seen * self.rampup)
        beta = 0.5 ** (batch / max(half, 1e-8)) if half > 0 else 0.0
        for pe, p in zip(ema.parameters(), model.parameters()):
            pe.lerp_(p.detach(), 1 - beta)
        for be, b in zip(ema.buffers(), model.buffers()):
            be.copy_(b)


class Trainer:
    def __init__(self, cfg: Config, dataset: FaceDataset, run_dir: Path | None,
                 resume: LoadedCheckpoint | None = None):
        self.cfg = cfg
        t = cfg.train
        self.device = pick_device(t.device)
        self.dist = _init_distributed(self.device.type)
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.batch_size % self.dist.world:
            raise ConfigError(f"train.batch_size {t.batch_size} does not split over "
                              f"{self.dist.world} processes")
        self.local_batch = t.batch_size // self.dist.world
        if len(dataset) < t.batch_size:
            raise DataError(f"the dataset has {len(dataset)} images, fewer than "
                            f"train.batch_size {t.batch_size}")
        self.data = dataset
        self.run_dir = run_dir
        self.fmt = torch.channels_last if t.channels_last else torch.contiguous_format

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.G = build_generator(cfg).to(self.device, memory_format=self.fmt)
        self.D = build_discriminator(cfg).to(self.device, memory_format=self.fmt)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        o = cfg.optim
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2))
        self.objective = Objective(cfg.loss.kind, cfg.loss.label_noise)
        self.augment = DiffAugment(cfg.augment.policy, cfg.augment.p)
        self.ema = EMA(t.ema_half_life_images, t.ema_rampup)
        self.step = 0
        self.images_seen = 0
        if resume is not None:
            self._load_state(resume)
        self.total_steps = math.ceil(t.total_images / t.batch_size)
        self.fixed_z = seed_latents(cfg.model.latent, cfg.model.latent_dim, GRID_SEEDS)
        self._perm_epoch, self._perm = -1, None
        self._stop = False

    # --- state ------------------------------------------------------------------------------

    def _load_state(self, ck: LoadedCheckpoint) -> None:
        for key, module in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            ck.load_weights(module, key)
        self.opt_G.load_state_dict(ck.state["opt_G"])
        self.opt_D.load_state_dict(ck.state["opt_D"])
        self.step, self.images_seen = ck.step, ck.images_seen

    def save_checkpoint(self) -> Path | None:
        if not self.dist.main:
            return None
        path = self.run_dir / f"ckpt-{self.step:06d}.pt"
        atomic_save(checkpoint_dict(
            "training", self.cfg, self.step, self.images_seen,
            G=self.G.state_dict(), G_ema=self.G_ema.state_dict(), D=self.D.state_dict(),
            opt_G=self.opt_G.state_dict(), opt_D=self.opt_D.state_dict()), path)
        for old in sorted(self.run_dir.glob("ckpt-*.pt"))[:-self.cfg.train.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    # --- one step ---------------------------------------------------------------------------

    def _indices(self, step: int) -> torch.Tensor:
        """This rank's rows for a step: an epoch-wise permutation, drop-last, no repeats."""
        B = self.cfg.train.batch_size
        per_epoch = len(self.data) // B
        epoch, pos = divmod(step, per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.data), generator=g), epoch
        start = pos * B + self.dist.rank * self.local_batch
        return self._perm[start:start + self.local_batch]

    def _sync_grads(self, model: nn.Module) -> None:
        # Data parallel across processes: average gradients with one all-reduce per model
        # (stylegan2-ada's scheme). It tolerates D being called several times per step,
        # which the separate real and fake batches of forcecore need.
        if self.dist.world == 1:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= self.dist.world
        torch.nn.utils.vector_to_parameters(flat, grads)

    def _autocast(self):
        if not self.cfg.train.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def train_step(self) -> dict[str, torch.Tensor]:
        cfg, dev, b = self.cfg, self.device, self.local_batch
        gen = _step_generator(cfg.seed, self.step, self.dist.rank)
        idx = self._indices(self.step)
        flip = torch.rand(b, generator=gen) < 0.5 if cfg.data.flip else None
        real = self.data.batch(idx, flip).to(dev, non_blocking=True)
        real = real.contiguous(memory_format=self.fmt)
        z = sample_latent(cfg.model.latent, b, cfg.model.latent_dim, gen).to(dev)
        output = self.D.output
        prepare = getattr(self.D, "prepare_real", None)
        aug = self.augment
        real_in = prepare(real) if prepare else real

        # D step. Real and fake go through D separately, as in forcecore and pytorch/examples:
        # BatchNorm then sees one class per batch. DiffAugment (if on) hits both the same way.
        self.D.requires_grad_(True)
        with self._autocast():
            fake = self.G(z)
            d_real = self.D(aug(real_in, gen))
            d_fake = self.D(aug(_detach(fake), gen))
            loss_d = self.objective.d_loss(d_real, d_fake, output, gen)
        self.opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        self._sync_grads(self.D)
        self.opt_D.step()

        stats = {"loss_d": loss_d.detach(), "d_real": d_real.detach(), "d_fake": d_fake.detach()}
        if cfg.loss.r1_gamma and self.step % cfg.loss.r1_interval == 0:
            stats["loss_r1"] = self._r1_step(real, prepare, gen)
        if self.step >= cfg.optim.d_warmup_steps:
            # G step on the same fakes. D's weights need no gradient here: freezing them skips
            # D's weight-gradient work (the reference loop computes and discards it).
            self.D.requires_grad_(False)
            with self._autocast():
                loss_g = self.objective.g_loss(self.D(aug(fake, gen)), output, gen)
                aux = getattr(self.G, "aux_loss", None)
                if aux is not None:
                    extra = aux(fake)
                    stats["loss_aux"] = extra.detach()
                    loss_g = loss_g + extra
            self.opt_G.zero_grad(set_to_none=True)
            loss_g.backward()
            self._sync_grads(self.G)
            self.opt_G.step()
            stats["loss_g"] = loss_g.detach()
        self.step += 1
        self.images_seen += cfg.train.batch_size
        self.ema.update(self.G_ema, self.G, cfg.train.batch_size, self.images_seen)
        return stats

    def _r1_step(self, real: torch.Tensor, prepare, gen: torch.Generator) -> torch.Tensor:
        """Lazy R1 (stylegan2): every r1_interval steps, gamma/2 * E|grad_x D(x)|^2 on reals,
        scaled by the interval so the average strength does not depend on it. The gradient is
        taken of D's raw output (a logit, or a capsule length) with respect to the image."""
        cfg = self.cfg.loss
        x = real.detach().requires_grad_(True)
        with self._autocast():
            out = self.D(self.augment(prepare(x) if prepare else x, gen))
        (grad,) = torch.autograd.grad(out.float().sum(), x, create_graph=True)
        penalty = grad.float().square().sum(dim=(1, 2, 3)).mean()
        self.opt_D.zero_grad(set_to_none=True)
        (penalty * (cfg.r1_gamma / 2 * cfg.r1_interval)).backward()
        self._sync_grads(self.D)
        self.opt_D.step()
        return penalty.detach()

    # --- outputs ----------------------------------------------------------------------------

    @torch.no_grad()
    def save_grid(self) -> None:
        if not self.dist.main:
            return
        imgs = to_uint8(image_of(self.G_ema(self.fixed_z.to(self.device))))
        folder = self.run_dir / "grids"
        folder.mkdir(exist_ok=True)
        grid(imgs, cols=8).save(folder / f"grid-{self.step:06d}.png")
        grid(imgs[:16], cols=4).save(folder / f"frame-{self.step:06d}.png")

    def finish_outputs(self) -> None:
        if not self.dist.main:
            return
        progress_gif(self.run_dir)
        plot_losses(self.run_dir)

    def request_stop(self, *_: Any) -> None:
        self._stop = True

    # --- the loop ---------------------------------------------------------------------------

    def fit(self) -> Path | None:
        """Train to train.total_images; returns the last checkpoint's path (main process)."""
        t = self.cfg.train
        stats_file = None
        if self.dist.main:
            keep_stats_until(self.run_dir, self.step)
            stats_file = open(self.run_dir / "stats.jsonl", "a")
        bar = None
        if self.dist.main and t.progress:
            from tqdm import tqdm
            bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                       desc=self.run_dir.name)
        acc: dict[str, list[torch.Tensor]] = {}
        tick, tick_images = time.perf_counter(), self.images_seen
        last_ckpt = latest_checkpoint(self.run_dir) if self.dist.main else None
        if self.step == 0:
            self.save_grid()
        try:
            while self.step < self.total_steps and not self._stop:
                stats = self.train_step()
                for k, v in stats.items():
                    acc.setdefault(k, []).append(v.float().mean())
                done = self.step >= self.total_steps
                ckpt_now = done or self.step % t.checkpoint_every == 0
                if self.step % t.log_every == 0 or ckpt_now:
                    now = time.perf_counter()
                    line = self._flush(acc, (self.images_seen - tick_images) / (now - tick))
                    tick, tick_images = now, self.images_seen
                    if stats_file:
                        stats_file.write(json.dumps(line) + "\n")
                        stats_file.flush()
                    if bar:
                        bar.set_postfix(d=f"{line['loss_d']:.3f}", g=f"{line.get('loss_g', 0):.3f}",
                                        ips=f"{line['images_per_s']:.0f}")
                if self.step % t.grid_every == 0 or done:
                    self.save_grid()
                if ckpt_now:
                    last_ckpt = self.save_checkpoint() or last_ckpt
                if bar:
                    bar.update(1)
        except TrainingDiverged as e:
            where = f"; last good checkpoint: {last_ckpt}" if last_ckpt else ""
            raise TrainingDiverged(f"{e}{where}") from None
        finally:
            if bar:
                bar.close()
            if stats_file:
                stats_file.close()
        if self._stop and self.step < self.total_steps:
            # Interrupted: keep everything up to now, but only if it is sound.
            if acc:
                self._flush(acc, 0.0)
            last_ckpt = self.save_checkpoint() or last_ckpt
            self.save_grid()
        self.finish_outputs()
        return last_ckpt

    def _flush(self, acc: dict[str, list[torch.Tensor]], ips: float) -> dict[str, Any]:
        """Average the accumulated step stats (one device sync) and refuse non-finite losses."""
        line: dict[str, Any] = {"step": self.step, "images_seen": self.images_seen}
        output = self.D.output
        for k, vals in acc.items():
            v = torch.stack(vals).mean()
            if self.dist.world > 1:
                dist.all_reduce(v)
                v /= self.dist.world
            if k in ("d_real", "d_fake"):
                v = torch.sigmoid(v) if output == "logit" else v
            line[k] = float(v)
        acc.clear()
        for k in ("loss_d", "loss_g", "loss_aux"):
            if k in line and not math.isfinite(line[k]):
                raise TrainingDiverged(f"{k} became {line[k]} by step {self.step}")
        line["images_per_s"] = round(ips, 1)
        line["time"] = round(time.time(), 3)
        return line


def prepare_run(cfg: Config) -> Path:
    """Create the run folder (named `name`, else after the variant) and write the resolved
    config before the first step."""
    run_dir = new_run_dir(Path(cfg.train.runs_dir), cfg.name or cfg.variant)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_plain(), indent=2) + "\n")
    return run_dir


def _describe(trainer: "Trainer", dataset: FaceDataset) -> str:
    cfg, t = trainer.cfg, trainer.cfg.train
    dev = trainer.device
    where = (f"{dev} ({torch.get_num_threads()} threads)" if dev.type == "cpu"
             else f"{dev} ({torch.cuda.get_device_name(dev)})")
    left = max(trainer.total_steps - trainer.step, 0)
    return (f"training {cfg.variant} on {where}, {trainer.dist.world} process(es); "
            f"{len(dataset):,} faces; {t.total_images:,} images = {trainer.total_steps:,} steps "
            f"of {t.batch_size} ({left:,} to go)")


def train(cfg: Config, resume: Path | None = None,
          dataset: FaceDataset | None = None) -> tuple[Path, Path | None]:
    """Train a new run (or resume one from its checkpoint); -> (run folder, last checkpoint)."""
    if cfg.data.path is None and dataset is None:
        raise ConfigError("data.path is not set: point it at a folder of face images "
                          "(e.g. data.path=../shared/data/animefaces)")
    ck = None
    if resume is not None:
        ck = load_checkpoint(resume)
        if ck.kind != "training":
            raise CheckpointError(f"{resume}: an exported checkpoint has no optimizer state to "
                                  "resume")
    main = int(os.environ.get("RANK", "0")) == 0
    if dataset is None:
        dataset = FaceDataset.load(cfg.data.path, cfg.data.cache_dir,
                                   progress=cfg.train.progress and main)
    # Built before the run folder exists: a run that cannot start (no such device, fewer faces
    # than a batch) leaves no empty folder behind.
    trainer = Trainer(cfg, dataset, None, ck)
    if ck is not None and ck.images_seen >= cfg.train.total_images:  # after its weights fit
        raise ConfigError(
            f"{Path(resume).parent} is finished ({ck.images_seen:,} of train.total_images="
            f"{cfg.train.total_images:,} images seen); to train longer: python train.py "
            f"resume {Path(resume).parent} train.total_images={2 * ck.images_seen}")
    if resume is not None:
        run_dir = Path(resume).parent
    elif main:
        run_dir = prepare_run(cfg)
    else:
        run_dir = None
    trainer.run_dir = run_dir
    if run_dir is not None and dataset.skipped:
        listed = dataset.write_skipped(run_dir / "skipped.txt")
        log.warning("the %d skipped file(s) of the dataset are listed in %s",
                    len(dataset.skipped), listed)
    if trainer.dist.world > 1:
        # Only rank 0 names the run folder; the others learn it to find the grids' seeds etc.
        holder = [str(run_dir) if run_dir else None]
        dist.broadcast_object_list(holder, src=0)
        trainer.run_dir = Path(holder[0])
    if main:
        log.info("%s; run folder %s", _describe(trainer, dataset), trainer.run_dir)
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, trainer.request_stop)
    finished = False
    try:
        last = trainer.fit()
        finished = True
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if trainer.dist.world > 1 and dist.is_initialized():
            # Every rank waits for rank 0's last files, then the group is closed: a gloo
            # group left open at exit aborts its process ("terminate called without an active
            # exception", SIGABRT), which failed the 2-process test now and then.
            if finished:
                dist.barrier()
            dist.destroy_process_group()
    if main and trainer.step < trainer.total_steps:
        log.warning("stopped at step %d (%d images seen); checkpoint %s; resume with: "
                    "python train.py resume %s", trainer.step, trainer.images_seen, last,
                    trainer.run_dir)
    return trainer.run_dir, last
