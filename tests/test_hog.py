"""Torch HOG against skimage, its gradients, and the HOG-predicting G / pair D variant."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.feature import hog as sk_hog

from gan.models.capsule import CapsuleDiscriminator
from gan.models.dcgan import ForcecoreDiscriminator, ForcecoreGenerator
from gan.models.hog import (HOG, HOGGenerator, HOGPairDiscriminator, cell_hog,
                            hog_consistency)


def skimage_hog(x: torch.Tensor, cells_per_block: int, block_norm: str = "L2-Hys"):
    """skimage.feature.hog of each B x C x H x W image, given as the same H x W x C array."""
    arr = x.permute(0, 2, 3, 1).numpy()
    gray = arr.shape[-1] == 1  # skimage takes grayscale as a 2-D array
    return np.stack([sk_hog(a[..., 0] if gray else a, orientations=9, pixels_per_cell=(8, 8),
                            cells_per_block=(cells_per_block,) * 2, block_norm=block_norm,
                            channel_axis=None if gray else -1) for a in arr])


def smooth_images(b: int, c: int = 3, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Random images in [-1, 1] with edges at every scale (noise plus blurred noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, c, size // 8, size // 8, generator=g, dtype=torch.float64)
    coarse = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear")
    fine = torch.rand(b, c, size, size, generator=g, dtype=torch.float64)
    return (0.8 * coarse + 0.2 * fine) * 2 - 1


def load_faces(paths) -> torch.Tensor:  # -> B x 3 x 64 x 64 float32 in [-1, 1]
    arr = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths])
    return torch.from_numpy(arr / 127.5 - 1).permute(0, 3, 1, 2).contiguous()


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("cpb, length, grid", [(2, 1764, (36, 7, 7)), (1, 576, (9, 8, 8))])
def test_shapes(cpb, length, grid):
    hog = HOG(cells_per_block=cpb)
    x = smooth_images(2).float()
    assert hog(x).shape == (2, length)
    g = hog.grid(x)
    assert g.shape == (2, *grid)
    # The flat vector is skimage's (block row, block col, cell row, cell col, orientation) order.
    torch.testing.assert_close(hog(x), g.permute(0, 2, 3, 1).flatten(1))


@pytest.mark.parametrize("cpb", [1, 2])
@pytest.mark.parametrize("block_norm", ["L2-Hys", "L2"])
@pytest.mark.parametrize("channels", [3, 1])
def test_hard_binning_matches_skimage_exactly(cpb, block_norm, channels):
    # float64 on both sides, so no ties break differently; what is left is skimage summing
    # each cell in a C float (float32): ~1e-8 on features of ~0.1-0.4.
    x = smooth_images(3, c=channels)
    ours = HOG(cells_per_block=cpb, block_norm=block_norm, soft=False)(x).numpy()
    np.testing.assert_allclose(ours, skimage_hog(x, cpb, block_norm), atol=1e-6, rtol=0)


def test_odd_sizes_drop_partial_cells_like_skimage():
    x = smooth_images(2, size=64)[..., :61, :70]
    ours = HOG(cells_per_block=2, soft=False)(x).numpy()
    np.testing.assert_allclose(ours, skimage_hog(x, 2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("cpb", [2, 1])
def test_parity_on_real_faces(real_faces, cpb):
    x = load_faces(real_faces)  # float32, as in training
    ref = skimage_hog(x, cpb)
    hard = HOG(cells_per_block=cpb, soft=False)(x).double().numpy()
    soft = HOG(cells_per_block=cpb)(x).double().numpy()
    r_hard, r_soft = corr(hard, ref), corr(soft, ref)
    err_hard, err_soft = np.abs(hard - ref).max(), np.abs(soft - ref).max()
    print(f"\n{len(x)} faces, {cpb}x{cpb} blocks: hard corr {r_hard:.6f} max|err| {err_hard:.2e};"
          f" soft corr {r_soft:.4f} max|err| {err_soft:.2e}")
    assert r_hard > 0.9999 and err_hard < 1e-5  # float32 rounding only
    assert r_soft >= 0.99


def test_soft_binning_at_softness_one_is_linear_interpolation():
    # A single gradient direction at 25 deg: bin centres 10 and 30, so 1/4 : 3/4.
    theta = math.radians(25)
    r, c = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    img = (math.sin(theta) * r + math.cos(theta) * c)[None, None].double()
    hist = HOG(cells_per_block=1, soft=True, softness=1.0).histograms(img)[0, :, 0, 0]
    interior = 2.0 * 36 / 64  # 6x6 interior pixels of magnitude 2, cell mean
    # The top and bottom rows have g_row = 0: 12 pixels at exactly 0 deg, a bin edge, which
    # goes wholly to bin 0 as in skimage. The side columns (g_col = 0) vote at 90 deg, bin 4.
    edge = 12 * 2 * math.cos(theta) / 64
    expected = torch.zeros(9, dtype=torch.float64)
    expected[0], expected[1] = 0.25 * interior + edge, 0.75 * interior
    expected[4] = 12 * 2 * math.sin(theta) / 64
    torch.testing.assert_close(hist, expected)


def test_soft_binning_passes_gradients_through_the_angle():
    # Gradients at 19 deg, inside the ramp around the 20 deg edge between bins 0 and 1; every
    # pixel's magnitude stays 2 when theta moves, so only the angle can change bin 1.
    def bin1(soft: bool) -> torch.Tensor:
        theta = torch.tensor(math.radians(19), dtype=torch.float64, requires_grad=True)
        r, c = torch.meshgrid(torch.arange(8.0, dtype=torch.float64),
                              torch.arange(8.0, dtype=torch.float64), indexing="ij")
        img = (torch.sin(theta) * r + torch.cos(theta) * c)[None, None]
        HOG(cells_per_block=1, soft=soft).histograms(img)[0, 1, 0, 0].backward()
        return theta.grad

    # 36 interior pixels of magnitude 2 (cell mean), vote share rising by 1 / softness per bin
    # width (pi / 9): the exact derivative of the ramp.
    slope = 2 * 36 / 64 * (9 / math.pi) / 0.25
    torch.testing.assert_close(bin1(soft=True), torch.tensor(slope, dtype=torch.float64))
    assert abs(bin1(soft=False)) < 1e-9  # hard binning: magnitudes only, and they are fixed


@pytest.mark.parametrize("soft", [True, False])
def test_gradcheck(soft):
    # Finite differences agree with autograd (through magnitudes, angles, block norms).
    x = smooth_images(1, size=16, seed=3).requires_grad_()
    hog = HOG(cells_per_block=2, soft=soft)
    assert torch.autograd.gradcheck(hog, (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_constant_image_has_no_nan():
    x = torch.full((2, 3, 64, 64), 0.3, requires_grad=True)
    out = HOG(cells_per_block=2)(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and (out == 0).all()
    assert torch.isfinite(x.grad).all()


def test_batch_agnostic():
    x = smooth_images(4).float()
    hog = HOG(cells_per_block=2)
    torch.testing.assert_close(hog(x)[2:3], hog(x[2:3]))


@pytest.mark.parametrize("soft", [True, False])
def test_every_tensor_follows_the_input_device(soft):
    # The meta device has no data: a helper tensor made on the CPU by mistake (an arange
    # without device=) fails here on any machine, not only on a GPU one.
    x = torch.rand(2, 3, 64, 64, device="meta")
    assert HOG(cells_per_block=2, soft=soft)(x).device.type == "meta"
    D = HOGPairDiscriminator(CapsuleDiscriminator, width=8).to("meta")
    assert D(D.prepare_real(x)).device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu():
    x = smooth_images(4).float()
    hog = HOG(cells_per_block=2)
    out = hog(x.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), hog(x), atol=1e-4, rtol=1e-4)


class TinyG(torch.nn.Module):
    """A stand-in generator: z -> B x 3 x 64 x 64, last hidden map B x 8 x 32 x 32."""

    latent_dim = 16

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.ConvTranspose2d(16, 8, 32, 1, 0), torch.nn.ReLU(),  # 32x32
            torch.nn.ConvTranspose2d(8, 3, 4, 2, 1), torch.nn.Tanh(),  # 64x64
        )

    def forward(self, z):
        return self.net(z.view(z.shape[0], -1, 1, 1))


HOG_GENERATORS = {
    "tiny": lambda: HOGGenerator(TinyG()),
    "forcecore": lambda: HOGGenerator(ForcecoreGenerator(latent_dim=16, width=8)),
}


@pytest.mark.parametrize("name", HOG_GENERATORS)
def test_hog_generator_shapes_and_form(name):
    G = HOG_GENERATORS[name]()
    z = torch.randn(4, G.latent_dim)
    image, pred = G(z)
    assert image.shape == (4, 3, 64, 64) and pred.shape == (4, 9, 8, 8)
    # Same form as the pair D's HOG grid: non-negative, unit L2 norm per cell.
    assert (pred >= 0).all()
    torch.testing.assert_close(pred.norm(dim=1), torch.ones(4, 8, 8))
    real = cell_hog().grid(image)
    assert real.shape == pred.shape and (real >= 0).all()
    torch.testing.assert_close(real.norm(dim=1), torch.ones(4, 8, 8))


@pytest.mark.parametrize("name", HOG_GENERATORS)
def test_hog_generator_gradients(name):
    G = HOG_GENERATORS[name]()
    image, pred = G(torch.randn(4, G.latent_dim))
    hog_consistency(pred, image, cell_hog()).backward()
    for pname, p in G.named_parameters():
        # The final conv only reaches the loss through the image; all others through both.
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_hog_generator_aux_loss_is_the_weighted_consistency():
    G = HOGGenerator(TinyG(), consistency_weight=2.5)
    out = G(torch.randn(2, 16))
    loss = G.aux_loss(out)
    torch.testing.assert_close(loss, 2.5 * hog_consistency(out[1], out[0], cell_hog()))
    # The target is the pair D's HOG of the same image: one definition on both sides.
    D = HOGPairDiscriminator(ForcecoreDiscriminator, width=8)
    torch.testing.assert_close(G.hog.grid(out[0]), D.prepare_real(out[0])[1])
    loss.backward()
    assert G.head[0].weight.grad.abs().sum() > 0


def test_bf16_images_get_a_float32_hog():
    x = smooth_images(2).float()
    out = HOG(cells_per_block=1)(x.bfloat16())
    assert out.dtype == torch.float32
    assert corr(out.numpy(), HOG(cells_per_block=1)(x).numpy()) > 0.99


def test_hog_generator_head_reads_the_hidden_features():
    G = HOGGenerator(TinyG())
    assert G.feature_layer == "net.2"  # the last conv: its input is the last hidden map
    z = torch.randn(2, 16)
    _, pred = G(z)
    with torch.no_grad():
        G.generator.net[0].weight.mul_(2)  # changes the hidden map
    assert not torch.allclose(G(z)[1], pred)


def test_hog_generator_survives_deepcopy_and_state_dict():
    # The EMA generator is a deepcopy, checkpoints are state dicts: both must keep the hook
    # wired to their own copy.
    G = HOGGenerator(TinyG())
    z = torch.randn(2, 16)
    ema = copy.deepcopy(G)
    torch.testing.assert_close(ema(z)[1], G(z)[1])
    with torch.no_grad():
        ema.generator.net[0].weight.mul_(2)
    assert not torch.allclose(ema(z)[1], G(z)[1])
    G2 = HOGGenerator(TinyG())
    G2.load_state_dict(ema.state_dict())
    torch.testing.assert_close(G2(z)[1], ema(z)[1])


def test_hog_consistency_is_zero_on_agreement():
    hog = cell_hog()
    image = smooth_images(2).float().requires_grad_()
    exact = hog.grid(image).detach()
    assert hog_consistency(exact, image, hog) < 1e-12
    pred = torch.rand(2, 9, 8, 8, requires_grad=True)
    loss = hog_consistency(pred, image, hog)
    assert loss > 0
    loss.backward()
    assert pred.grad.abs().sum() > 0 and image.grad.abs().sum() > 0


@pytest.mark.parametrize("base, output", [(ForcecoreDiscriminator, "logit"),
                                          (CapsuleDiscriminator, "prob")])
def test_pair_discriminator(base, output):
    D = HOGPairDiscriminator(base, width=8, mbstd_group=2)
    assert D.output == output
    assert D.base.trunk[0].in_channels == 3 + 9
    real = smooth_images(4).float().requires_grad_()
    pair = D.prepare_real(real)
    assert pair[0] is real and pair[1].shape == (4, 9, 8, 8)
    assert not pair[1].requires_grad  # a target, computed once without a graph
    assert D(pair).shape == (4,)
    G = HOGGenerator(TinyG())
    D(G(torch.randn(4, 16))).sum().backward()
    for name, p in G.head.named_parameters():  # D's verdict reaches the head
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # The HOG channels matter: the same images with rotated histograms score differently.
    with torch.no_grad():
        D.eval()
        rotated = torch.roll(pair[1], 1, dims=1)
        assert not torch.allclose(D(pair), D((real, rotated)))
