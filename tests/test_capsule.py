"""Capsule discriminators: squash, routing invariants, shapes, gradients, the margin loss
(gan.losses.margin_loss, the capsule variants' GAN loss)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bench.d_probe import NoiseGenerator, mean_colour, probe
from gan.config import ConfigError, load_config
from gan.losses import Objective, margin_loss
from gan.models import build_discriminator
from gan.models.capsule import CapsuleDiscriminator, CapsuleEnsemble, route, squash, squash_length
from tests.conftest import synthetic_face

# A narrow trunk keeps each test well under a second; the capsule layers keep full size.
SMALL = dict(width=8)


def images(b: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 64, 64, generator=g) * 2 - 1


def test_squash_length_and_direction():
    s = torch.tensor([[3.0, 4.0], [0.3, 0.4], [-6.0, 8.0]])
    v = squash(s)
    n = s.norm(dim=-1)
    # |v| = |s|^2 / (1 + |s|^2): 25/26 for length 5, 0.25/1.25 for 0.5, 100/101 for 10.
    torch.testing.assert_close(v.norm(dim=-1), n ** 2 / (1 + n ** 2))
    torch.testing.assert_close(v / v.norm(dim=-1, keepdim=True), s / n[:, None])
    torch.testing.assert_close(squash_length(s), v.norm(dim=-1))


def test_squash_acts_on_the_given_axis():
    s = torch.randn(2, 16, 5)
    torch.testing.assert_close(squash(s, dim=1), squash(s.transpose(1, 2)).transpose(1, 2))


def test_squash_at_zero_has_finite_gradients():
    s = torch.zeros(3, 16, requires_grad=True)
    (squash(s).sum() + squash_length(s).sum()).backward()
    assert torch.isfinite(s.grad).all()
    # The unguarded formula s * |s|^2 / ((1 + |s|^2) |s|) is 0/0 here: the guard is needed.
    t = torch.zeros(3, 16, requires_grad=True)
    sq = t.square().sum(-1, keepdim=True)
    (t * sq / ((1 + sq) * sq.sqrt())).sum().backward()
    assert not torch.isfinite(t.grad).all()


def test_routing_couplings_sum_to_one_over_input_capsules():
    u_hat = torch.randn(5, 40, 16)
    for iters in (1, 3):
        s, c = route(u_hat, iters)
        assert s.shape == (5, 16) and c.shape == (5, 40)
        assert (c > 0).all()
        torch.testing.assert_close(c.sum(dim=1), torch.ones(5))


def test_first_iteration_is_sabours_plain_sum():
    u_hat = torch.randn(2, 10, 16)
    s, c = route(u_hat, iters=1)
    torch.testing.assert_close(c, torch.full((2, 10), 0.1))
    torch.testing.assert_close(s, u_hat.sum(dim=1))


def test_routing_by_agreement_favours_the_consensus():
    # Nine predictions agree, one points the other way: routing must shift weight to the nine.
    d = torch.zeros(16)
    d[0] = 1.0
    u_hat = torch.cat([d.expand(9, 16), -d[None]])[None] * 0.5  # 1 x 10 x 16
    _, c = route(u_hat, iters=3)
    assert (c[0, :9] > 0.1).all() and c[0, 9] < 0.1
    _, c1 = route(u_hat, iters=1)
    torch.testing.assert_close(c1, torch.full((1, 10), 0.1))


def test_capsule_d_shapes_range_and_routing():
    # eval: in training mode every forward runs one more power iteration of spectral norm.
    D = CapsuleDiscriminator(**SMALL).eval()
    assert D.output == "prob"
    length, c = D(images(), return_routing=True)
    assert length.shape == (4,)
    assert ((length > 0) & (length < 1)).all()
    assert c.shape == (4, 32 * 7 * 7)  # 32 maps of 7x7 primary capsules
    torch.testing.assert_close(c.sum(dim=1), torch.ones(4))
    torch.testing.assert_close(D(images()), length)


def test_capsule_d_starts_undecided():
    # The W scale puts the first outputs mid-range, not saturated at 0 or 1.
    torch.manual_seed(0)
    length = CapsuleDiscriminator()(images(16))
    assert 0.2 < length.mean() < 0.8


def test_capsule_d_options_change_the_capsules():
    D = CapsuleDiscriminator(width=8, primary_maps=4, primary_dim=4, out_dim=6,
                             routing_iters=2)
    length, c = D(images(), return_routing=True)
    assert c.shape == (4, 4 * 7 * 7) and D.W.shape == (4 * 7 * 7, 6, 4)
    assert ((length > 0) & (length < 1)).all()


def test_capsule_d_gradients_reach_every_parameter():
    D = CapsuleDiscriminator(**SMALL, mbstd_group=2)
    x = images().requires_grad_()
    margin_loss(D(x), 1.0).backward()
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_routing_is_per_sample():
    # The CapsuleGAN code averages routing logits over the batch, so an image's couplings
    # depend on the other images; ours must not. Long predictions make the routing matter.
    u_hat = torch.randn(4, 30, 16)
    s, c = route(u_hat, iters=3)
    assert not torch.allclose(c, torch.full_like(c, 1 / 30), atol=1e-2)
    s1, c1 = route(u_hat[2:3], iters=3)
    torch.testing.assert_close(s1, s[2:3])
    torch.testing.assert_close(c1, c[2:3])


def test_capsule_d_scores_each_image_on_its_own():
    # Without minibatch stddev, and with eval-mode BN, a score must not depend on the batch.
    D = CapsuleDiscriminator(**SMALL).eval()
    x = images(4)
    torch.testing.assert_close(D(x)[1:2], D(x[1:2]))


def test_minibatch_stddev_makes_scores_depend_on_the_group():
    torch.manual_seed(0)
    D = CapsuleDiscriminator(**SMALL, mbstd_group=4).eval()
    assert D.primary.in_channels == 2 * 8 + 1  # one extra stddev channel
    x = images(4)
    y = x.clone()
    y[1:] = x[0]  # the same image 0 in a group without spread
    assert (D(x)[0] - D(y)[0]).abs() > 1e-4  # sample 0 sees the group's spread
    D0 = CapsuleDiscriminator(**SMALL).eval()
    torch.testing.assert_close(D0(x)[0], D0(y)[0])


def test_capsule_d_rejects_minibatch_discrimination():
    with pytest.raises(ValueError, match="minibatch"):
        CapsuleDiscriminator(minibatch_disc=True)


def test_ensemble_members_and_gradients():
    torch.manual_seed(0)
    E = CapsuleEnsemble(k=3, **SMALL).eval()  # eval: no power iteration between the calls
    assert E.output == "prob"
    x = images()
    per = E(x)
    assert per.shape == (3, 4)  # K x B: one length per member and image
    assert ((per > 0) & (per < 1)).all()
    torch.testing.assert_close(per[1], E.members[1](x))
    assert not torch.allclose(per[0], per[1])  # independently initialised members
    # The loss averaged over members, as the issue asks: the objective of the K x B output.
    loss = Objective("margin").g_loss(per, "prob")
    torch.testing.assert_close(loss, torch.stack([margin_loss(p, 1.0) for p in per]).mean())
    loss.backward()
    for i, d in enumerate(E.members):
        assert d.W.grad is not None and d.W.grad.abs().sum() > 0, i


def test_ensemble_needs_a_member():
    with pytest.raises(ValueError, match="k >= 1"):
        CapsuleEnsemble(k=0, **SMALL)


@pytest.mark.parametrize("v, t, expected", [
    (0.9, 1.0, 0.0),  # a real at the m+ margin costs nothing
    (0.95, 1.0, 0.0),
    (0.5, 1.0, 0.16),  # (0.9 - 0.5)^2
    (0.1, 0.0, 0.0),  # a fake at the m- margin costs nothing
    (0.5, 0.0, 0.08),  # 0.5 * (0.5 - 0.1)^2
    (0.5, 0.5, 0.12),  # soft label: 0.5 * 0.16 + 0.5 * 0.5 * 0.16
])
def test_margin_loss_known_values(v, t, expected):
    length = torch.full((6,), v)
    torch.testing.assert_close(margin_loss(length, t), torch.tensor(expected))


def test_margin_loss_is_a_batch_mean_with_tensor_targets():
    length = torch.tensor([0.5, 0.5])
    target = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(margin_loss(length, target), torch.tensor((0.16 + 0.08) / 2))
    torch.testing.assert_close(margin_loss(length, 0.0, m_minus=0.3, lam=1.0),
                               torch.tensor(0.04))


def synthetic_faces(n: int = 64) -> torch.Tensor:  # uint8 N x 3 x 64 x 64
    rng = np.random.default_rng(0)
    return torch.from_numpy(np.stack([synthetic_face(rng) for _ in range(n)])).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def noise_probe():
    """D(fake) of bench/d_probe.py after 40 steps against a frozen colour-noise generator, for
    each trunk (margin loss, a narrow D, batch 8): what the capsule runs drifted to."""
    faces = synthetic_faces()

    def run(trunk: str | None) -> tuple[float, float]:  # None: the default trunk
        options = [f"model.d_options.trunk={trunk}"] if trunk else []
        rows = probe("capsule", faces, NoiseGenerator(mean_colour(faces)), 40, 40, 8,
                     ["model.d_width=8", *options])
        _, real, fake = rows[-1]
        return real, fake
    return run


def test_capsule_d_learns_to_reject_colour_noise(noise_probe):
    # The default capsule D (spectral-norm trunk, no BN) pushes the noise towards the margin
    # loss's m- = 0.1 within 40 steps while scoring the real faces high.
    real, fake = noise_probe(None)
    assert fake < 0.2 and real > 0.8


def test_the_legacy_capsule_d_keeps_its_blind_spot(noise_probe):
    # The seed's trunk (BN on the second conv) still calls the noise half real: its blind spot,
    # kept reachable as trunk=legacy for the record.
    _, fake = noise_probe("legacy")
    assert fake > 0.4


def test_default_trunk_is_spectral_norm_without_batch_norm():
    D = CapsuleDiscriminator(**SMALL)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3  # two trunk convs and the primary capsules
    assert all(hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    legacy = CapsuleDiscriminator(**SMALL, trunk="legacy")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in legacy.modules()) == 1
    assert not any(hasattr(m, "parametrizations") for m in legacy.modules())


def test_deep_trunk_has_a_6x6_capsule_grid():
    D = CapsuleDiscriminator(**SMALL, trunk="deep-sn").eval()
    length, c = D(images(), return_routing=True)
    assert c.shape == (4, 32 * 6 * 6) and ((length > 0) & (length < 1)).all()


def test_logit_output_is_a_scaled_length():
    torch.manual_seed(0)
    P = CapsuleDiscriminator(**SMALL).eval()
    torch.manual_seed(0)
    L = CapsuleDiscriminator(**SMALL, output="logit", logit_scale=6.0).eval()
    assert P.output == "prob" and L.output == "logit"
    torch.testing.assert_close(L(images()), 6.0 * (P(images()) - 0.5))
    assert CapsuleEnsemble(k=2, **SMALL, output="logit").output == "logit"


@pytest.mark.parametrize("option, message", [
    ("trunk=wide", "unknown capsule trunk 'wide'"),
    ("output=norm", "unknown capsule output 'norm'"),
])
def test_a_bad_capsule_option_is_a_config_error(option, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["variant=capsule", f"model.d_options.{option}"])


def test_a_legacy_trunk_normalised_by_d_norm_starts_mid_range():
    # model.d_norm=spectral swaps the legacy trunk's BN for spectral norm after construction;
    # the primary capsules' gain must follow, or every first output sits near 0.
    torch.manual_seed(0)
    cfg = load_config(None, ["variant=capsule", "model.d_options.trunk=legacy",
                             "model.d_norm=spectral"])
    D = build_discriminator(cfg)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    assert 0.2 < D(images(16)).mean() < 0.8
