"""Model registry: config names -> classes. New variants add entries here, never a loop."""

from __future__ import annotations

from torch import nn

from gan.models.dcgan import (DCGANDiscriminator, DCGANGenerator, ForcecoreDiscriminator,
                              ForcecoreGenerator)

GENERATORS: dict[str, type[nn.Module]] = {
    "forcecore": ForcecoreGenerator,
    "dcgan": DCGANGenerator,
}
DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "forcecore": ForcecoreDiscriminator,
    "dcgan": DCGANDiscriminator,
}


def build_generator(cfg) -> nn.Module:
    """The generator a resolved `Config` describes."""
    m = cfg.model
    return _lookup(GENERATORS, m.generator, "model.generator")(
        latent_dim=m.latent_dim, width=m.g_width, **m.g_options)


def build_discriminator(cfg) -> nn.Module:
    m = cfg.model
    return _lookup(DISCRIMINATORS, m.discriminator, "model.discriminator")(
        width=m.d_width, mbstd_group=m.mbstd_group, minibatch_disc=m.minibatch_disc,
        **m.d_options)


def _lookup(table: dict[str, type[nn.Module]], name: str, key: str) -> type[nn.Module]:
    if name not in table:
        from gan.config import ConfigError
        raise ConfigError(f"unknown {key} '{name}' (known: {', '.join(sorted(table))})")
    return table[name]
