"""Layers shared by several discriminators."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


def spectral_normalize(module: nn.Module) -> nn.Module:
    """Spectral norm on every conv and dense layer of a discriminator, its BatchNorms removed
    (SNGAN, Miyato et al. 2018): D becomes ~1-Lipschitz per layer, so its gradients stay
    informative for G; BN would mix the samples of a batch, which SN's theory does not cover.
    Layers already normalised (a D that applies SN itself) are left as they are."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        elif isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if not parametrize.is_parametrized(child, "weight"):
                spectral_norm(child)
        else:
            spectral_normalize(child)
    return module


def _group_for(batch: int, group_size: int) -> int:
    # ProGAN needs the batch to split into equal groups; take the largest group <= group_size
    # that divides it, so odd evaluation batches still work.
    g = min(group_size, batch)
    while batch % g:
        g -= 1
    return g


class MinibatchStd(nn.Module):
    """ProGAN's minibatch standard deviation (Karras et al. 2018), as in stylegan2-ada.

    Appends `num_channels` feature maps holding the average standard deviation of the features
    across each group of `group_size` samples: the discriminator sees how varied a batch is,
    which punishes a generator that collapses to a few faces.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x C x H x W -> B x (C+F) x H x W
        n, c, h, w = x.shape
        g = _group_for(n, self.group_size)
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # G x M x F x c x H x W
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # M x F x c x H x W
        y = y.mean(dim=(2, 3, 4))  # M x F
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # B x F x H x W
        return torch.cat([x, y], dim=1)


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016 minibatch discrimination (forcecore defines it, commented out).

    For each sample, `kernels` features measure how close it is to the rest of the batch
    (L1 distance between learned `kernel_dim`-d projections).
    """

    def __init__(self, in_features: int, kernels: int = 16, kernel_dim: int = 3):
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.02)

    @property
    def out_features(self) -> int:
        return self.T.shape[0] + self.kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x F -> B x (F + kernels)
        m = (x @ self.T).view(-1, self.kernels, self.kernel_dim)  # B x K x D
        dist = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3)  # B x B x K
        # exp(0) = 1 for the sample itself: subtract it so a lone sample scores 0.
        o = torch.exp(-dist).sum(dim=0) - 1  # B x K
        return torch.cat([x, o], dim=1)


class DiscriminatorHead(nn.Module):
    """The end of a CNN discriminator: features B x C x 4 x 4 -> one logit per image.

    A 4x4 convolution over a 4x4 map (pytorch/examples) equals a dense layer over the flattened
    map (forcecore), so both share this head; the optional batch-statistics layers sit here,
    "before the last layer" as ProGAN puts them.
    """

    def __init__(self, channels: int, size: int = 4, *, mbstd_group: int = 0,
                 minibatch_disc: bool = False, bias: bool = True):
        super().__init__()
        self.mbstd = MinibatchStd(mbstd_group) if mbstd_group else nn.Identity()
        features = (channels + (1 if mbstd_group else 0)) * size * size
        self.mbdisc = MinibatchDiscrimination(features) if minibatch_disc else None
        self.fc = nn.Linear(self.mbdisc.out_features if self.mbdisc else features, 1, bias=bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # B x C x 4 x 4 -> B
        h = self.mbstd(h).flatten(1)
        if self.mbdisc is not None:
            h = self.mbdisc(h)
        return self.fc(h).squeeze(1)
