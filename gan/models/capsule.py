"""Capsule discriminators (CapsuleGAN, Jaiswal et al. 2018); their loss is
`gan.losses.margin_loss` (loss.kind=margin), or BCE on the length (loss.kind=bce).

D = strided CNN trunk -> primary capsules -> one output capsule by dynamic routing-by-agreement
(Sabour et al. 2017); the output capsule's length is the probability that the image is real,
so these discriminators have `output = "prob"`.

The trunk has spectral norm on every conv and no BatchNorm (`trunk="sn"`). The seed's trunk
(`trunk="legacy"`, BN on the second conv) had a blind spot: trained alone against frozen
per-pixel colour noise, the noise all capsule runs drifted to, it still gave the noise 0.28
after 100 steps, the SN trunk 0.09 after 25 (`bench/d_probe.py --fakes noise`, docs/results.md).
Real and fake batches pass through D separately, so training-mode BN normalises each batch
by its own statistics and erases what sets noise apart per channel (its energy); without BN
(`nobn`) the blind spot goes too, and spectral norm keeps the trunk smooth and starts it
calibrated. Routing iterations and the loss on the length did not matter for it.

Routing with a single output capsule: Sabour's couplings are a softmax over the *output*
capsules, which with one output capsule is identically 1 and routing would do nothing. We take
the softmax over the *input* (primary) capsules instead, which is what the CapsuleGAN PyTorch
code does (vivonasg/CapsuleGAN-pytorch `DigitCaps`: `F.softmax(b_ij)` on a
routes x capsules tensor takes the legacy implicit dim=1, the routes). The output capsule is
then an agreement-weighted average of the primary capsules' predictions: those that agree with
the consensus get more weight each iteration. The weighted sum is scaled by N, the number of
input capsules: uniform couplings (1/N each, the first iteration) then give exactly Sabour's
one-output-capsule total s = sum_i u_hat_i, and routing re-weights around that. Without the
factor, s is an average, no longer than the longest single prediction: the margin loss's 0.9
(|s| = 3) would need every agreeing prediction to be that long, i.e. W entries ~sqrt(N) = 40
times larger, which Adam's fixed-size steps take thousands of iterations to reach.
Unlike that code, the routing logits are per sample (it averages them over the batch, mixing
images) and the squash acts on the 16-D capsule axis (it squashes a size-1 axis).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from gan.models.layers import MinibatchStd

_EPS = 1e-8


def squash(s: torch.Tensor, dim: int = -1, eps: float = _EPS) -> torch.Tensor:
    """Sabour's squash: (|s|^2 / (1 + |s|^2)) * s / |s|, length in [0, 1).

    eps sits inside the sqrt, so the gradient at s = 0 is finite (0) instead of 0/0 = NaN.
    """
    sq = s.square().sum(dim, keepdim=True)
    return s * (sq / (1 + sq) / torch.sqrt(sq + eps))


def squash_length(s: torch.Tensor, dim: int = -1, eps: float = _EPS) -> torch.Tensor:
    """|squash(s)| computed from s without a sqrt of |squash(s)|^2, whose gradient is NaN when
    the capsule is exactly zero: |s|^3 / ((1 + |s|^2) sqrt(|s|^2 + eps))."""
    sq = s.square().sum(dim)
    return sq.pow(1.5) / ((1 + sq) * torch.sqrt(sq + eps))


def route(u_hat: torch.Tensor, iters: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Routing-by-agreement of N predictions into one output capsule.

    u_hat: B x N x D, each input capsule's prediction of the output capsule.
    Returns (s, c): s (B x D) the output capsule before the squash, c (B x N) the couplings
    of the last iteration, a softmax over the N input capsules (each row sums to 1);
    s = N * sum_i c_i u_hat_i (see the module docstring for the factor N).
    """
    n = u_hat.shape[1]
    b = u_hat.new_zeros(u_hat.shape[:2])  # B x N routing logits, uniform couplings at first
    for i in range(iters):
        c = torch.softmax(b, dim=1)  # B x N
        s = n * torch.einsum("bn,bnd->bd", c, u_hat)  # B x D
        if i < iters - 1:
            # agreement: a prediction pointing along the current output gains weight.
            b = b + torch.einsum("bnd,bd->bn", u_hat, squash(s))
    return s, c


def _trunk(trunk: str, channels: int, w: int) -> tuple[nn.Sequential, int, int]:
    """The CNN before the primary capsules: (layers, output channels, downsampling factor).

    legacy: 4x4 stride-2 convs to S/4 (w, 2w), BN on the second, LeakyReLU 0.2 (the seed's D).
    sn: the same convs with spectral norm and no BN; nobn: with neither. deep / deep-sn: a
    third conv to S/8 (4w), BN / spectral norm after the first layer.
    """
    if trunk not in TRUNKS:
        raise ValueError(f"unknown capsule trunk '{trunk}' (known: {', '.join(TRUNKS)})")
    depth, norm = TRUNKS[trunk]
    layers: list[nn.Module] = []
    c_in, c_out = channels, w
    for i in range(depth):
        conv = nn.Conv2d(c_in, c_out, 4, 2, 1)
        layers.append(spectral_norm(conv) if norm == "sn" else conv)
        if norm == "bn" and i > 0:  # as forcecore's D, no BN on the first layer
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        c_in, c_out = c_out, c_out * 2
    return nn.Sequential(*layers), c_in, 2 ** depth


TRUNKS = {"legacy": (2, "bn"), "sn": (2, "sn"), "deep": (3, "bn"), "deep-sn": (3, "sn"),
          "nobn": (2, "none")}
# Spectral norm keeps every layer's gain <= 1, so its primary capsules start ~5x shorter than
# the legacy trunk's (component rms ~0.08 instead of ~0.4 on real faces, 0.05 for deep-sn);
# this fixed gain before the squash starts them near length 0.5 as well.
_SN_GAIN = {2: 4.0, 3: 8.0}
OUTPUTS = ("length", "logit")


class CapsuleDiscriminator(nn.Module):
    """CapsuleGAN discriminator for 64x64 images: B x C x 64 x 64 -> (B,) probabilities.

    Trunk (`trunk`, see `_trunk`): strided 4x4 convs, widths `width`, 2*`width`, ...;
    optional minibatch stddev on the trunk features. Primary capsules: a 3x3 conv (stride 2
    after a 2-layer trunk, 7x7 grid; stride 1 after a 3-layer one, 6x6 grid) to
    `primary_maps` maps of `primary_dim`-D capsules, squashed. Each predicts the `out_dim`
    output capsule through its own matrix (Sabour's W_ij); `routing_iters` rounds of routing
    give the output capsule. `output`: "length" = its length is D's output, a probability
    (`self.output = "prob"`); "logit" = `logit_scale` * (length - 0.5) is (`"logit"`).
    `img_size` (the input side) fixes the number of primary capsules, hence W's shape.
    `minibatch_disc` is accepted for the registry's common signature and must stay False.
    """

    output = "prob"

    def __init__(self, width: int = 64, channels: int = 3, mbstd_group: int = 0,
                 primary_maps: int = 32, primary_dim: int = 8, out_dim: int = 16,
                 routing_iters: int = 3, img_size: int = 64, minibatch_disc: bool = False,
                 trunk: str = "sn", output: str = "length", logit_scale: float = 8.0):
        super().__init__()
        if minibatch_disc:
            # Salimans' layer needs a flat feature vector before a dense output; capsules end
            # in a routed vector whose length is the output, so there is no such place.
            raise ValueError("minibatch discrimination (minibatch-disc) is not available for "
                             "capsule discriminators; use mbstd for batch statistics")
        if output not in OUTPUTS:
            raise ValueError(f"unknown capsule output '{output}' (known: {', '.join(OUTPUTS)})")
        self.output = "prob" if output == "length" else "logit"
        self.logit_scale = logit_scale
        self.trunk, trunk_ch, down = _trunk(trunk, channels, width)
        self.mbstd = MinibatchStd(mbstd_group) if mbstd_group else nn.Identity()
        trunk_ch += 1 if mbstd_group else 0
        stride = 2 if down < 8 else 1
        primary = nn.Conv2d(trunk_ch, primary_maps * primary_dim, 3, stride, 0)
        depth, norm = TRUNKS[trunk]
        self.primary = spectral_norm(primary) if norm == "sn" else primary
        self.sn_gain = _SN_GAIN[depth]
        grid = (img_size // down - 3) // stride + 1  # 7 for 64x64 inputs and a 2-layer trunk
        self.primary_maps, self.primary_dim = primary_maps, primary_dim
        self.routing_iters = routing_iters
        n_caps = primary_maps * grid * grid
        # One out_dim x primary_dim matrix per primary capsule. Entries N(0, 4 / (N out_dim)):
        # primary capsules start with length ~0.5, so s, a sum of N random predictions, has
        # length ~1 and D's first outputs sit near 0.5, in the squash's responsive range
        # (N(0, 1) entries, as in the CapsuleGAN code, would start every length at 0.9999).
        std = 2 / (n_caps * out_dim) ** 0.5
        self.W = nn.Parameter(torch.randn(n_caps, out_dim, primary_dim) * std)

    def primary_capsules(self, x: torch.Tensor) -> torch.Tensor:  # -> B x N x primary_dim
        h = self.mbstd(self.trunk(x))  # B x (2w [+1]) x 16 x 16 for a 2-layer trunk
        p = self.primary(h)  # B x (maps * dim) x grid x grid
        b, _, gh, gw = p.shape
        # channel = map * dim + component: each map holds one capsule per position.
        u = p.view(b, self.primary_maps, self.primary_dim, gh, gw)
        u = u.permute(0, 1, 3, 4, 2).reshape(b, -1, self.primary_dim)  # B x N x dim
        # Asked at run time: model.d_norm=spectral normalises a legacy trunk after construction.
        gain = self.sn_gain if parametrize.is_parametrized(self.primary, "weight") else 1.0
        return squash(gain * u)

    def forward(self, x: torch.Tensor, return_routing: bool = False):
        """B x C x 64 x 64 -> lengths (B,); with `return_routing`, also the couplings B x N."""
        u = self.primary_capsules(x)  # B x N x 8
        u_hat = torch.einsum("nod,bnd->bno", self.W, u)  # B x N x 16
        s, c = route(u_hat, self.routing_iters)  # B x 16, B x N
        length = squash_length(s)  # B, in (0, 1)
        if self.output == "logit":
            length = self.logit_scale * (length - 0.5)
        return (length, c) if return_routing else length


class CapsuleEnsemble(nn.Module):
    """K capsule discriminators (the post's "several capsule networks").

    The members share the architecture and differ by their random initialisation (each draws
    its own weights in turn from the RNG). `forward` gives every member's lengths, K x B: the
    objectives (gan.losses) average over all elements, so the loss is the mean of the members'
    losses, and each member gets its own gradient (a mean length would let one confident
    member mask the others).
    """

    def __init__(self, k: int = 3, **kw):
        super().__init__()
        if k < 1:
            raise ValueError(f"a capsule ensemble needs k >= 1 members, got {k}")
        self.members = nn.ModuleList(CapsuleDiscriminator(**kw) for _ in range(k))

    @property
    def output(self) -> str:  # the members' ("prob" or "logit")
        return self.members[0].output

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x C x H x W -> K x B
        return torch.stack([d(x) for d in self.members])
