"""The two DCGAN pairs: forcecore's Keras baseline and pytorch/examples' reference."""

from __future__ import annotations

import torch
from torch import nn

from gan.models.layers import DiscriminatorHead


def _bn(ch: int, keras: bool) -> nn.BatchNorm2d:
    # Keras BatchNormalization(momentum=0.3) keeps 0.3 of the old statistic; PyTorch's momentum
    # is the weight of the new one, so the faithful value is 0.7. Keras' epsilon is 1e-3.
    return nn.BatchNorm2d(ch, momentum=0.7, eps=1e-3) if keras else nn.BatchNorm2d(ch)


def glorot_init(module: nn.Module) -> None:
    """Keras defaults: glorot_uniform kernels, zero biases, BN gamma 1 / beta 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def dcgan_init(module: nn.Module) -> None:
    """pytorch/examples: N(0, 0.02) kernels, BN gamma N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class ForcecoreGenerator(nn.Module):
    """forcecore/Keras-GAN-Animeface-Character `build_gen`, LeakyReLU 0.2 and biases."""

    def __init__(self, latent_dim: int = 100, width: int = 64, channels: int = 3):
        super().__init__()
        w = width
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, w * 8, 4, 1, 0), _bn(w * 8, True), act(),  # 4x4
            nn.ConvTranspose2d(w * 8, w * 4, 4, 2, 1), _bn(w * 4, True), act(),  # 8x8
            nn.ConvTranspose2d(w * 4, w * 2, 4, 2, 1), _bn(w * 2, True), act(),  # 16x16
            nn.ConvTranspose2d(w * 2, w, 4, 2, 1), _bn(w, True), act(),  # 32x32
            nn.Conv2d(w, w, 3, 1, 1), _bn(w, True), act(),  # 32x32, forcecore's "extra layer"
            nn.ConvTranspose2d(w, channels, 4, 2, 1), nn.Tanh(),  # 64x64
        )
        glorot_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # B x latent -> B x 3 x 64 x 64
        return self.net(z.view(z.shape[0], -1, 1, 1))


class ForcecoreDiscriminator(nn.Module):
    """forcecore `build_discriminator`: 64 (no BN) -> 128 -> 256 -> 512 -> dense."""

    output = "logit"

    def __init__(self, width: int = 64, channels: int = 3, mbstd_group: int = 0,
                 minibatch_disc: bool = False):
        super().__init__()
        w = width
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1), act(),  # 32x32, no BN on the first layer
            nn.Conv2d(w, w * 2, 4, 2, 1), _bn(w * 2, True), act(),  # 16x16
            nn.Conv2d(w * 2, w * 4, 4, 2, 1), _bn(w * 4, True), act(),  # 8x8
            nn.Conv2d(w * 4, w * 8, 4, 2, 1), _bn(w * 8, True), act(),  # 4x4
        )
        self.head = DiscriminatorHead(w * 8, mbstd_group=mbstd_group,
                                      minibatch_disc=minibatch_disc)
        glorot_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x 3 x 64 x 64 -> B logits
        return self.head(self.trunk(x))


class DCGANGenerator(nn.Module):
    """pytorch/examples dcgan `Generator`: ReLU, no biases, no extra layer."""

    def __init__(self, latent_dim: int = 100, width: int = 64, channels: int = 3):
        super().__init__()
        w = width
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, w * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(w * 8),
            nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(w * 8, w * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(w * 4),
            nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(w * 4, w * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(w * 2),
            nn.ReLU(True),  # 16x16
            nn.ConvTranspose2d(w * 2, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w),
            nn.ReLU(True),  # 32x32
            nn.ConvTranspose2d(w, channels, 4, 2, 1, bias=False), nn.Tanh(),  # 64x64
        )
        dcgan_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """pytorch/examples dcgan `Discriminator`, its final 4x4 conv as the shared dense head."""

    output = "logit"

    def __init__(self, width: int = 64, channels: int = 3, mbstd_group: int = 0,
                 minibatch_disc: bool = False):
        super().__init__()
        w = width
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1, bias=False), act(),
            nn.Conv2d(w, w * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(w * 2), act(),
            nn.Conv2d(w * 2, w * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(w * 4), act(),
            nn.Conv2d(w * 4, w * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(w * 8), act(),
        )
        self.head = DiscriminatorHead(w * 8, mbstd_group=mbstd_group,
                                      minibatch_disc=minibatch_disc, bias=False)
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))
