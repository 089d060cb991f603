"""GAN objectives on discriminator outputs, chosen by `loss.kind`.

Each objective gets D's raw output and whether it is a logit or a probability (capsule lengths
are probabilities), and returns scalar losses. The output may have any shape: (B,) for one
discriminator, (K, B) for an ensemble of K. Every loss is the mean over all elements, so an
ensemble's loss is the average of its members' losses, and soft labels are drawn per element.
The training loop never looks at the variant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-6


def _bce(out: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "logit":
        return F.binary_cross_entropy_with_logits(out.float(), target)
    return F.binary_cross_entropy(out.float().clamp(_EPS, 1 - _EPS), target)


def margin_loss(length: torch.Tensor, target: torch.Tensor | float, m_plus: float = 0.9,
                m_minus: float = 0.1, lam: float = 0.5) -> torch.Tensor:
    """CapsNet margin loss (Sabour et al. 2017), CapsuleGAN's GAN loss, on capsule lengths.

    T * relu(m+ - v)^2 + lam * (1 - T) * relu(v - m-)^2, averaged over all elements of the
    lengths v (any shape, e.g. B or K x B); the target T is 1 (real), 0 (fake) or a tensor
    that broadcasts. Computed in float32, also under bf16 autocast.
    """
    v = length.float()
    t = torch.as_tensor(target, dtype=v.dtype, device=v.device)
    return (t * F.relu(m_plus - v).square()
            + lam * (1 - t) * F.relu(v - m_minus).square()).mean()


class Objective:
    """`d_loss(real_out, fake_out)` and `g_loss(fake_out)`; `generator` draws label noise."""

    def __init__(self, kind: str, label_noise: float = 0.1):
        self.kind = kind
        self.label_noise = label_noise

    def _labels(self, like: torch.Tensor, real: bool, generator: torch.Generator | None):
        """One label per element of D's output `like` (per member of an ensemble, too)."""
        if self.kind != "soft-bce":
            return torch.full(like.shape, 1.0 if real else 0.0, device=like.device)
        # forcecore: real U(0.9, 1], fake U[0, 0.1), redrawn every step (also for the G step).
        u = torch.rand(like.shape, generator=generator) * self.label_noise
        return (1.0 - u if real else u).to(like.device)

    def d_loss(self, real_out, fake_out, output: str, generator=None) -> torch.Tensor:
        if self.kind == "hinge":
            r = self._as_logit(real_out, output)
            f = self._as_logit(fake_out, output)
            return F.relu(1 - r).mean() + F.relu(1 + f).mean()
        if self.kind == "margin":
            return margin_loss(self._as_prob(real_out, output), 1.0) + \
                margin_loss(self._as_prob(fake_out, output), 0.0)
        return (_bce(real_out, self._labels(real_out, True, generator), output)
                + _bce(fake_out, self._labels(fake_out, False, generator), output))

    def g_loss(self, fake_out, output: str, generator=None) -> torch.Tensor:
        if self.kind == "hinge":
            return -self._as_logit(fake_out, output).mean()
        if self.kind == "margin":
            return margin_loss(self._as_prob(fake_out, output), 1.0)
        # Non-saturating: G wants D to call its fakes real.
        return _bce(fake_out, self._labels(fake_out, True, generator), output)

    @staticmethod
    def _as_prob(out: torch.Tensor, output: str) -> torch.Tensor:
        return torch.sigmoid(out.float()) if output == "logit" else out.float()

    @staticmethod
    def _as_logit(out: torch.Tensor, output: str) -> torch.Tensor:
        if output == "logit":
            return out.float()
        p = out.float().clamp(_EPS, 1 - _EPS)
        return torch.log(p) - torch.log1p(-p)
