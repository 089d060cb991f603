"""The Inception-v3 network of the standard FID, as pytorch-fid defines it (no weights here).

FID numbers are only comparable when they come from one network: the TensorFlow
"inception-2015-12-05" graph that the original FID code used. pytorch-fid ported its weights to
`pt_inception-2015-12-05-6726825d.pth`; this module rebuilds the network that file belongs to,
so the file loads into it strictly and gives pytorch-fid's 2048-d pool features:

- torchvision's Inception3 skeleton with 1,008 classes (the TF graph's), no auxiliary head;
- in the Mixed_5b-5d (A), 6b-6e (C) and 7b (E) blocks the branch pool is a 3x3 average that
  ignores the zero padding (TensorFlow's `count_include_pad=False`), and in Mixed_7c it is a
  3x3 *max* pool (a quirk of that graph, kept because the weights were trained with it);
- input B x 3 x H x W in [0, 1], resized bilinearly (align_corners=False) to 299 x 299 and
  scaled to [-1, 1]; output the global average pool after Mixed_7c, B x 2048.

The module does no I/O: `gan.metrics` finds and loads the weights file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               + WEIGHTS_NAME)
FEATURE_DIM = 2048


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _TFInceptionA(InceptionA):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_tf(x))]


class _TFInceptionC(InceptionC):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        return [self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool_tf(x))]


class _TFInceptionE(InceptionE):
    def __init__(self, in_channels: int, pool=_avg_pool_tf):
        super().__init__(in_channels)
        self._pool = pool

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        return [self.branch1x1(x), b3, bd, self.branch_pool(self._pool(x))]


class FIDInceptionV3(nn.Module):
    """B x 3 x H x W in [0, 1] -> B x 2048 pool features. `net` takes the weights file's
    state dict (`load_state_dict(..., strict=True)`); random weights until then."""

    def __init__(self):
        super().__init__()
        # init_weights=False: the weights file replaces them, and torchvision's truncated-normal
        # init of 24M parameters takes seconds.
        net = Inception3(num_classes=1008, aux_logits=False, transform_input=False,
                         init_weights=False)
        net.Mixed_5b = _TFInceptionA(192, pool_features=32)
        net.Mixed_5c = _TFInceptionA(256, pool_features=64)
        net.Mixed_5d = _TFInceptionA(288, pool_features=64)
        net.Mixed_6b = _TFInceptionC(768, channels_7x7=128)
        net.Mixed_6c = _TFInceptionC(768, channels_7x7=160)
        net.Mixed_6d = _TFInceptionC(768, channels_7x7=160)
        net.Mixed_6e = _TFInceptionC(768, channels_7x7=192)
        net.Mixed_7b = _TFInceptionE(1280)
        net.Mixed_7c = _TFInceptionE(2048, pool=_max_pool)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        n = self.net
        for layer in (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3):  # 299 -> 147
            x = layer(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # 73
        x = n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x))  # 71
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # 35
        for layer in (n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a,  # 35 -> 17
                      n.Mixed_6b, n.Mixed_6c, n.Mixed_6d, n.Mixed_6e,
                      n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):  # 17 -> 8
            x = layer(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # B x 2048
