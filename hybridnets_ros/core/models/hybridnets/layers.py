"""Building blocks shared by the encoder, BiFPN and heads.

Module and attribute names follow the released HybridNets checkpoint so that its
state_dict loads with ``strict=True``; the arithmetic follows the reference network.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-3  # every BatchNorm of the reference network uses TensorFlow's epsilon


def swish(x: torch.Tensor) -> torch.Tensor:
    # F.silu is x * sigmoid(x) in one kernel; exports to ONNX as Sigmoid + Mul.
    return F.silu(x)


def tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) for one spatial axis of ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Module):
    """Stride-1 convolution with symmetric 'SAME' padding, wrapped as ``.conv``.

    The reference pads dynamically from the input shape; for stride 1 and an odd kernel
    that is always ``kernel // 2`` on every side, so the padding is folded into the conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 groups: int = 1, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=1,
                              padding=kernel_size // 2, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SeparableConvBlock(nn.Module):
    """Depthwise 3x3 (no bias) + pointwise 1x1 (bias), optional BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int | None = None, norm: bool = True):
        super().__init__()
        out_channels = out_channels or in_channels
        self.depthwise_conv = SameConv(in_channels, in_channels, 3, groups=in_channels, bias=False)
        self.pointwise_conv = SameConv(in_channels, out_channels, 1)
        if norm:
            self.bn = nn.BatchNorm2d(out_channels, momentum=0.01, eps=BN_EPS)
        else:
            self.bn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pointwise_conv(self.depthwise_conv(x))
        return self.bn(x) if self.bn is not None else x


class MaxPoolSame(nn.Module):
    """3x3 stride-2 max pool with TensorFlow 'SAME' padding filled with zeros.

    Zeros, not -inf, as in the reference: it matters where all window values are negative.
    The padding is derived from the input shape, which is static under ONNX export.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_pad(int(x.shape[-2]), 3, 2)
        left, right = tf_same_pad(int(x.shape[-1]), 3, 2)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.max_pool2d(x, 3, 2)
