"""Model registry: config names -> classes. New variants add entries here, never a loop.

`model.generator` and `model.discriminator` pick the classes; `model.hog` wraps whichever pair
that is for the HOG variant (a G that also predicts its image's HOG, a D of (image, HOG)
pairs), so HOG composes with every base without a registry entry per combination.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from gan.errors import ConfigError
from gan.models.capsule import CapsuleDiscriminator, CapsuleEnsemble
from gan.models.dcgan import (DCGANDiscriminator, DCGANGenerator, ForcecoreDiscriminator,
                              ForcecoreGenerator)
from gan.models.hog import HOGGenerator, HOGPairDiscriminator
from gan.models.layers import spectral_normalize

GENERATORS: dict[str, type[nn.Module]] = {
    "forcecore": ForcecoreGenerator,
    "dcgan": DCGANGenerator,
}
DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "forcecore": ForcecoreDiscriminator,
    "dcgan": DCGANDiscriminator,
    "capsule": CapsuleDiscriminator,
    "capsule-ensemble": CapsuleEnsemble,  # d_options.k members
}


def build_generator(cfg) -> nn.Module:
    """The generator a resolved `Config` describes."""
    m = cfg.model
    G = _lookup(GENERATORS, m.generator, "model.generator")(
        latent_dim=m.latent_dim, width=m.g_width, **m.g_options)
    return HOGGenerator(G, consistency_weight=cfg.loss.hog_weight) if m.hog else G


def build_discriminator(cfg) -> nn.Module:
    m = cfg.model
    cls = _lookup(DISCRIMINATORS, m.discriminator, "model.discriminator")
    if m.hog:
        cls = functools.partial(HOGPairDiscriminator, cls)
    D = cls(width=m.d_width, mbstd_group=m.mbstd_group, minibatch_disc=m.minibatch_disc,
            **m.d_options)
    return spectral_normalize(D) if m.d_norm == "spectral" else D


def check_buildable(cfg) -> None:
    """Raise a ConfigError if the models of `cfg` cannot be built (a combination a model
    rejects, such as capsule+minibatch-disc, or an option it does not take).

    The constructors are the ones that know what they accept, so they are asked: both models
    are built on the meta device, which allocates and computes nothing, so a config fails when
    it resolves rather than deep inside a training run.
    """
    with torch.device("meta"):
        for build in (build_generator, build_discriminator):
            try:
                build(cfg)
            except ConfigError:
                raise
            except TypeError as e:  # an argument the class does not take
                raise ConfigError(f"variant '{cfg.variant}' cannot be built: {e} (see "
                                  "model.d_options and model.g_options)") from None
            except ValueError as e:
                raise ConfigError(f"variant '{cfg.variant}' cannot be built: {e}") from None


def _lookup(table: dict[str, type[nn.Module]], name: str, key: str) -> type[nn.Module]:
    if name not in table:
        raise ConfigError(f"unknown {key} '{name}' (known: {', '.join(sorted(table))})")
    return table[name]
