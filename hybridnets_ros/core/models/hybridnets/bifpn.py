"""BiFPN cell with fast normalised fusion (EfficientDet), as used by HybridNets."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .layers import BN_EPS, MaxPoolSame, SameConv, SeparableConvBlock, swish

FUSION_EPS = 1e-4


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(SameConv(cin, cout, 1), nn.BatchNorm2d(cout, momentum=0.01, eps=BN_EPS))


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def _fuse(weight: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """Fast normalised fusion: sum_i relu(w_i) x_i / (sum_j relu(w_j) + eps), then swish."""
    w = torch.relu(weight)
    w = w / (w.sum(dim=0) + FUSION_EPS)
    out = w[0] * inputs[0]
    for i in range(1, len(inputs)):
        out = out + w[i] * inputs[i]
    return swish(out)


class BiFPN(nn.Module):
    """One top-down + bottom-up pass over P3..P7.

    The first cell also adapts the encoder's P3..P5 channels to ``channels`` and derives
    P6/P7 from P5; P4/P5 get separate channel adapters for the bottom-up path.
    """

    def __init__(self, channels: int, encoder_channels: tuple[int, int, int], first: bool):
        super().__init__()
        self.first = first
        for name in ("conv6_up", "conv5_up", "conv4_up", "conv3_up",
                     "conv4_down", "conv5_down", "conv6_down", "conv7_down"):
            setattr(self, name, SeparableConvBlock(channels))
        self.downsample = MaxPoolSame()
        if first:
            c3, c4, c5 = encoder_channels
            self.p5_down_channel = _conv_bn(c5, channels)
            self.p4_down_channel = _conv_bn(c4, channels)
            self.p3_down_channel = _conv_bn(c3, channels)
            self.p5_to_p6 = nn.Sequential(*_conv_bn(c5, channels), MaxPoolSame())
            self.p4_down_channel_2 = _conv_bn(c4, channels)
            self.p5_down_channel_2 = _conv_bn(c5, channels)
        for name, n in (("p6_w1", 2), ("p5_w1", 2), ("p4_w1", 2), ("p3_w1", 2),
                        ("p4_w2", 3), ("p5_w2", 3), ("p6_w2", 3), ("p7_w2", 2)):
            setattr(self, name, nn.Parameter(torch.ones(n)))

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if self.first:
            p3, p4, p5 = inputs
            p6_in = self.p5_to_p6(p5)
            p7_in = self.downsample(p6_in)
            p3_in = self.p3_down_channel(p3)
            p4_in = self.p4_down_channel(p4)
            p5_in = self.p5_down_channel(p5)
        else:
            p3_in, p4_in, p5_in, p6_in, p7_in = inputs

        # top-down
        p6_up = self.conv6_up(_fuse(self.p6_w1, p6_in, _upsample(p7_in)))
        p5_up = self.conv5_up(_fuse(self.p5_w1, p5_in, _upsample(p6_up)))
        p4_up = self.conv4_up(_fuse(self.p4_w1, p4_in, _upsample(p5_up)))
        p3_out = self.conv3_up(_fuse(self.p3_w1, p3_in, _upsample(p4_up)))

        if self.first:
            p4_in = self.p4_down_channel_2(p4)
            p5_in = self.p5_down_channel_2(p5)

        # bottom-up
        p4_out = self.conv4_down(_fuse(self.p4_w2, p4_in, p4_up, self.downsample(p3_out)))
        p5_out = self.conv5_down(_fuse(self.p5_w2, p5_in, p5_up, self.downsample(p4_out)))
        p6_out = self.conv6_down(_fuse(self.p6_w2, p6_in, p6_up, self.downsample(p5_out)))
        p7_out = self.conv7_down(_fuse(self.p7_w2, p7_in, self.downsample(p6_out)))
        return p3_out, p4_out, p5_out, p6_out, p7_out
