"""The `modern` recipe: spectral norm, DiffAugment, lazy R1, and their place in the one loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gan.augment import DiffAugment, parse_policy
from gan.config import ConfigError, load_config
from gan.data import FaceDataset
from gan.models import build_discriminator
from gan.models.hog import cell_hog
from gan.training import Trainer


def _cfg(*over: str):
    return load_config(None, ["train.batch_size=8", "train.total_images=64",
                              "train.progress=false", *over])


def test_modern_preset_resolves_every_ingredient():
    cfg = _cfg("variant=modern")
    assert cfg.model.generator == "forcecore"  # a modifier: starts from the default base
    assert (cfg.model.d_norm, cfg.loss.kind) == ("spectral", "hinge")
    assert parse_policy(cfg.augment.policy) == ("translation", "color")
    assert cfg.loss.r1_gamma > 0 and cfg.optim.lr_d > cfg.optim.lr_g  # R1, TTUR
    assert (cfg.optim.beta1, cfg.optim.d_warmup_steps) == (0.0, 0)
    # an explicit setting beats the preset: that is how the ablation removes one ingredient
    assert _cfg("variant=modern", "augment.policy=none").augment.policy == "none"
    base = _cfg("variant=forcecore")
    assert (base.model.d_norm, base.loss.r1_gamma, base.optim.beta1) == ("batch", 0.0, 0.5)


def test_unknown_augmentation_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown augmentation 'rotate'"):
        _cfg("augment.policy=translation,rotate")


@pytest.mark.parametrize("variant", ["modern", "dcgan+modern", "capsule+modern", "modern+mbstd"])
def test_spectral_norm_on_every_d_layer_and_no_batchnorm(variant):
    D = build_discriminator(_cfg(f"variant={variant}"))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)


def test_diffaugment_is_deterministic_per_generator_and_keeps_shape():
    x = torch.rand(6, 3, 64, 64) * 2 - 1
    aug = DiffAugment("translation,color,cutout")
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(DiffAugment("none")(x, torch.Generator()), x)
    assert torch.equal(DiffAugment("color", p=0.0)(x, torch.Generator()), x)


def test_diffaugment_is_differentiable():
    x = (torch.rand(4, 3, 64, 64) * 2 - 1).requires_grad_(True)
    DiffAugment("translation,color,cutout")(x, torch.Generator().manual_seed(0)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_moves_pixels_and_fills_with_zeros():
    x = torch.zeros(1, 1, 64, 64)
    x[0, 0, 30, 30] = 1.0
    g = torch.Generator().manual_seed(3)
    out = DiffAugment("translation")(x, g)
    (y, xx), = (out[0, 0] == 1).nonzero().tolist() or [(None, None)]
    assert y is not None and abs(y - 30) <= 8 and abs(xx - 30) <= 8
    assert out.sum() == 1.0


def test_hog_pairs_translate_by_whole_cells_so_the_grid_still_fits_the_image():
    hog = cell_hog()
    img = torch.rand(8, 3, 64, 64) * 2 - 1
    img[:, :, :8] = -1  # a flat border row of cells, so shifted-in zeros look alike
    img[:, :, -8:] = -1
    img[:, :, :, :8] = -1
    img[:, :, :, -8:] = -1
    grid = hog.grid(img)
    out_img, out_grid = DiffAugment("translation")((img, grid), torch.Generator().manual_seed(0))
    inner = (slice(None), slice(None), slice(2, 6), slice(2, 6))
    assert torch.allclose(hog.grid(out_img)[inner], out_grid[inner], atol=1e-4)
    assert not torch.equal(out_img, img)


def test_r1_penalises_the_gradient_on_reals():
    torch.manual_seed(0)
    data = FaceDataset(torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8))
    tr = Trainer(_cfg("variant=modern", "loss.r1_interval=1"), data, None)
    stats = tr.train_step()
    assert float(stats["loss_r1"]) > 0
    # with gamma 0 the step is skipped entirely
    tr0 = Trainer(_cfg("variant=modern", "loss.r1_gamma=0"), data, None)
    assert "loss_r1" not in tr0.train_step()


def test_r1_step_lowers_the_penalty_it_measures():
    torch.manual_seed(0)
    data = FaceDataset(torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8))
    tr = Trainer(_cfg("variant=modern", "loss.r1_gamma=1000", "augment.policy=none",
                      "optim.lr_d=1e-3"), data, None)
    real = data.batch(torch.arange(8))
    first = float(tr._r1_step(real, None, torch.Generator()))
    for _ in range(5):
        last = float(tr._r1_step(real, None, torch.Generator()))
    assert last < first
