"""Histogram of oriented gradients in torch, and the HOG-predicting generator variant.

`HOG` follows `skimage.feature.hog(image, channel_axis=-1)` step by step, so the two can be
compared number for number, but runs on batches, on any device, and is differentiable:

1. per channel, centred differences [-1, 0, 1] along rows and columns, zero on the border rows /
   columns (skimage's `_hog_channel_gradient`); per pixel keep the channel with the largest
   gradient magnitude;
2. unsigned orientation atan2(g_row, g_col) mod 180 deg into `orientations` bins of equal width;
   each pixel votes its magnitude. Hard binning is skimage's floor(angle / width): gradients
   flow through the magnitudes only. Soft binning moves the vote linearly from one bin to the
   next over a ramp `softness` bins wide around each bin edge, so gradients also flow through
   the angle. softness = 1 is linear interpolation between the two nearest bin centres
   (Dalal-Triggs), but that smooths the histogram along the orientation axis: its correlation
   with skimage on real faces is only 0.96-0.98. The default 0.25 keeps it >= 0.99 (see
   bench/hog_parity.py for the numbers);
3. the mean vote per `pixels_per_cell` cell (skimage divides the cell sum by its pixel count);
4. block normalisation over every `cells_per_block` window (L2-Hys: L2, clip at 0.2, L2 again;
   or L2), eps = 1e-5 as in skimage.

Inputs are the GAN's images, B x C x H x W in [-1, 1]; nothing depends on the range except the
tiny eps, and the parity tests hand skimage the very same [-1, 1] array (as H x W x C).

The generator variant (the seed's "dimension in the generator's predictions that generates the
HOG"): `HOGGenerator` adds a head that predicts the HOG cell grid of the image G draws, from G's
last hidden feature map; `HOGPairDiscriminator` judges (image, HOG grid) pairs, real images with
their computed HOG and fakes with the predicted one; `hog_consistency` ties the prediction to
the HOG of the generated image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """B x C x H x W -> (g_row, g_col), each B x H x W, from the channel with the largest
    gradient magnitude per pixel (skimage's rule for colour images)."""
    g_row = F.pad(x[:, :, 2:, :] - x[:, :, :-2, :], (0, 0, 1, 1))  # zero first / last row
    g_col = F.pad(x[:, :, :, 2:] - x[:, :, :, :-2], (1, 1, 0, 0))  # zero first / last column
    gr, gc = g_row[:, 0], g_col[:, 0]
    # hypot, not a sum of squares: skimage compares np.hypot values, and equal magnitudes
    # (common in 8-bit images) must stay exactly equal so the tie goes the same way: to the
    # first channel, like numpy's argmax. A running `where` is ~3x faster than argmax+gather.
    best = torch.hypot(gr, gc)
    for c in range(1, x.shape[1]):
        m = torch.hypot(g_row[:, c], g_col[:, c])
        better = m > best
        best = torch.where(better, m, best)
        gr = torch.where(better, g_row[:, c], gr)
        gc = torch.where(better, g_col[:, c], gc)
    return gr, gc


def normalize_blocks(hist: torch.Tensor, cells_per_block: tuple[int, int],
                     method: str = "L2-Hys", eps: float = 1e-5) -> torch.Tensor:
    """Cell histograms B x O x R x C -> normalised blocks B x (br*bc*O) x (R-br+1) x (C-bc+1).

    The channel order is (block row, block column, orientation), so
    `out.permute(0, 2, 3, 1).flatten(1)` is skimage's feature vector.
    """
    b, o, r, c = hist.shape
    br, bc = cells_per_block
    nr, nc = r - br + 1, c - bc + 1
    # Shifted views, not F.unfold: unfold (im2col) takes ~0.5 s on this tiny tensor on CPU.
    blocks = torch.stack([hist[:, :, i:i + nr, j:j + nc] for i in range(br) for j in range(bc)],
                         dim=1)  # B x (br*bc) x O x nr x nc, cells in row-major block order
    dims = (1, 2)
    # eps**2 inside the sqrt, as skimage: a flat block stays 0 and its gradient finite.
    out = blocks / torch.sqrt(blocks.square().sum(dims, keepdim=True) + eps ** 2)
    if method == "L2-Hys":
        out = out.clamp(max=0.2)
        out = out / torch.sqrt(out.square().sum(dims, keepdim=True) + eps ** 2)
    elif method != "L2":
        raise ValueError(f"block_norm must be 'L2-Hys' or 'L2', got {method!r}")
    return out.reshape(b, br * bc * o, nr, nc)


class HOG(nn.Module):
    """Differentiable HOG; `forward` gives skimage's flat feature vector, `grid` the blocks.

    With 64x64 images, 8x8 cells and 9 orientations: 2x2 blocks give 1,764 features (grid
    B x 36 x 7 x 7), 1x1 blocks give 576 (grid B x 9 x 8 x 8, one normalised histogram per cell).
    """

    def __init__(self, orientations: int = 9, pixels_per_cell: int | tuple[int, int] = 8,
                 cells_per_block: int | tuple[int, int] = 2, block_norm: str = "L2-Hys",
                 soft: bool = True, softness: float = 0.25, eps: float = 1e-5):
        super().__init__()
        if block_norm not in ("L2-Hys", "L2"):
            raise ValueError(f"block_norm must be 'L2-Hys' or 'L2', got {block_norm!r}")
        self.orientations = orientations
        self.pixels_per_cell = _pair(pixels_per_cell)
        self.cells_per_block = _pair(cells_per_block)
        self.block_norm = block_norm
        self.soft = soft
        self.softness = softness
        self.eps = eps

    def histograms(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> cell histograms B x O x (H // ph) x (W // pw), not normalised."""
        # At least float32, also under bf16 autocast: bf16's 8-bit mantissa would move votes
        # across bin edges and round the cell sums.
        x = x.float() if x.element_size() < 4 else x
        (ph, pw), o = self.pixels_per_cell, self.orientations
        b, _, h, w = x.shape
        rows, cols = h // ph, w // pw  # a partial last cell is dropped, as in skimage
        g_row, g_col = image_gradients(x)
        g_row, g_col = g_row[:, :rows * ph, :cols * pw], g_col[:, :rows * ph, :cols * pw]
        sq = g_row.square() + g_col.square()  # B x H' x W'
        # sqrt and atan2 have 0/0 gradients at a zero gradient vector, and masking only their
        # output would not stop the NaN: feed them a harmless value at flat pixels, then give
        # those pixels a vote of exactly 0, as skimage does (an eps in the sqrt would make a
        # flat image vote).
        flat = sq < torch.finfo(sq.dtype).tiny
        mag = torch.sqrt(sq.masked_fill(flat, 1.0)).masked_fill(flat, 0.0)
        angle = torch.atan2(g_row.masked_fill(flat, 0.0), g_col.masked_fill(flat, 1.0))
        # Continuous bin coordinate whose integers are bin centres: bin k covers [k-.5, k+.5)
        # bin widths, i.e. [k, k+1) * 180/O deg. Half a turn is O bins, so the unsigned
        # orientation (mod 180 deg) is the bin index mod O below.
        pos = angle * (o / math.pi) - 0.5
        lower = torch.floor(pos)
        frac = pos - lower  # in [0, 1): distance past the lower centre
        # Share of the vote for the upper bin. Hard: all of it from the bin edge on (frac = .5).
        # Soft: a linear ramp `softness` bins wide centred on the edge (softness 1 is plain
        # linear interpolation between the two nearest centres); a vote exactly on an edge
        # still goes up, as in skimage's half-open bins: 8-bit images put ~3% of their
        # gradient magnitude exactly on 0 deg (g_row == 0), and splitting it between the
        # first and last bins alone costs ~0.01 of correlation with skimage.
        if self.soft:
            ramp = frac * (1 / self.softness) + (0.5 - 0.5 / self.softness)
            w_upper = ramp.clamp(0, 1).masked_fill(frac == 0.5, 1.0)
        else:
            w_upper = (frac >= 0.5).to(frac.dtype)
        v_upper = mag * w_upper
        v_lower = mag - v_upper
        # Scatter each vote straight into its (orientation, cell) slot: no B x O x H x W tensor.
        r = torch.arange(rows * ph, device=x.device) // ph
        c = torch.arange(cols * pw, device=x.device) // pw
        cell = r[:, None] * cols + c[None, :]  # H' x W'
        lower_bin = lower.long().remainder(o)
        idx_lower = (lower_bin * (rows * cols) + cell).flatten(1)
        idx_upper = ((lower_bin + 1).remainder(o) * (rows * cols) + cell).flatten(1)
        votes = x.new_zeros(b, o * rows * cols)
        votes = votes.scatter_add(1, idx_lower, v_lower.flatten(1))
        votes = votes.scatter_add(1, idx_upper, v_upper.flatten(1))
        # skimage divides each cell's sum by its pixel count.
        return votes.view(b, o, rows, cols) / (ph * pw)  # B x O x R x C

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> normalised blocks B x (br*bc*O) x n_block_rows x n_block_cols."""
        return normalize_blocks(self.histograms(x), self.cells_per_block, self.block_norm,
                                self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x C x H x W -> B x n_features
        return self.grid(x).permute(0, 2, 3, 1).flatten(1)


def cell_hog(orientations: int = 9) -> HOG:
    """The HOG of the pair variant, on both sides: 1x1 blocks with L2 norm, i.e. one
    unit-length histogram per 8x8 cell (B x O x 8 x 8 for 64x64 images), soft binning."""
    return HOG(orientations=orientations, cells_per_block=1, block_norm="L2")


def hog_consistency(pred: torch.Tensor, image: torch.Tensor, hog: HOG) -> torch.Tensor:
    """MSE between the predicted HOG grid and the HOG computed from the generated image.

    MSE as in MaskFeat's HOG regression. Gradients reach both the head (through `pred`) and the
    image (through the differentiable HOG), so G can fix either side of a disagreement.
    """
    target = hog.grid(image)
    return F.mse_loss(pred.to(target.dtype), target)


def _last_conv(module: nn.Module) -> tuple[str, nn.Module]:
    convs = [(n, m) for n, m in module.named_modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if not convs:
        raise ValueError("HOGGenerator needs a generator with a convolution to hook")
    return convs[-1]


class HOGGenerator(nn.Module):
    """Wraps a generator G (z -> B x 3 x H x W) so that `forward(z) -> (image, hog_pred)`.

    The head reads G's last hidden feature map: the input of G's last convolution (for the
    DCGAN generators, the B x width x 32 x 32 map before the final ConvTranspose), caught by a
    forward pre-hook, so any convolutional G works unchanged. It predicts the HOG cell grid
    B x O x (H/8) x (W/8) in the same form as `HOGPairDiscriminator.hog.grid` (1x1 blocks,
    L2 norm): non-negative (softplus) cell histograms scaled to unit length per cell. Not
    L2-Hys: a near-uniform histogram, which is what a fresh head predicts, has every entry
    above the 0.2 clip, so L2-Hys would return a constant 1/3 with zero gradient.
    `aux_loss(out)` is the extra G loss the training loop adds: `consistency_weight` times
    `hog_consistency` with `cell_hog`, the HOG the pair discriminator computes for real images.
    Sample images with `self.generator(z)` when the HOG prediction is not needed.
    """

    def __init__(self, generator: nn.Module, orientations: int = 9, cells: int = 8,
                 feature_layer: str | None = None, consistency_weight: float = 1.0):
        super().__init__()
        self.generator = generator
        self.hog = cell_hog(orientations)
        self.consistency_weight = consistency_weight
        if feature_layer is None:
            feature_layer, layer = _last_conv(generator)
        else:
            layer = generator.get_submodule(feature_layer)
        self.feature_layer = feature_layer
        ch = layer.in_channels
        # Shaped like HOG itself: a per-position nonlinearity, pooled per cell, then a little
        # context between neighbouring cells. Only the first layer runs at the hidden map's
        # resolution, so the head adds ~5% to the forcecore G's training FLOPs (a 3x3 conv
        # there would add ~27%).
        self.head = nn.Sequential(
            nn.Conv2d(ch, ch, 1), nn.LeakyReLU(0.2),  # H' x W'
            nn.AdaptiveAvgPool2d(cells),  # cells x cells
            nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(ch, orientations, 1),
        )
        self._features: torch.Tensor | None = None
        layer.register_forward_pre_hook(self._keep_features)

    @property
    def latent_dim(self) -> int:
        return self.generator.latent_dim

    def _keep_features(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._features = inputs[0]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.generator(z)  # B x 3 x H x W; the hook stores B x ch x H' x W'
        h, self._features = self._features, None  # do not keep the graph alive between calls
        raw = F.softplus(self.head(h))  # B x O x cells x cells, >= 0
        return image, normalize_blocks(raw, (1, 1), "L2")

    def aux_loss(self, out: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        image, pred = out
        return self.consistency_weight * hog_consistency(pred, image, self.hog)


class HOGPairDiscriminator(nn.Module):
    """A discriminator of (image, HOG grid) pairs built around any discriminator class.

    The O-channel cell grid is upsampled to the image size (nearest: every pixel carries its
    cell's histogram) and concatenated to the image, so the base D is built with
    `channels = channels + orientations`. `forward((image, hog))` returns whatever the base D
    does, in its `output` convention: (B,), or K x B for an ensemble. `prepare_real(x)` pairs
    real images with their computed HOG grid.
    """

    def __init__(self, base_d_cls: type[nn.Module], channels: int = 3, orientations: int = 9,
                 **kw):
        super().__init__()
        # The form HOGGenerator predicts and its consistency loss targets: real HOGs, targets
        # and predictions share one definition (soft binning included), so D cannot tell
        # real from fake by the HOG's definition alone.
        self.hog = cell_hog(orientations)
        self.base = base_d_cls(channels=channels + orientations, **kw)

    @property
    def output(self) -> str:
        return self.base.output

    @torch.no_grad()
    def prepare_real(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.hog.grid(x)

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        image, hog = pair  # B x C x H x W, B x O x h x w
        hog = F.interpolate(hog, size=image.shape[-2:], mode="nearest")  # B x O x H x W
        return self.base(torch.cat([image, hog], dim=1))  # B, or K x B
