"""EfficientNet encoder (MBConv blocks), state-dict compatible with efficientnet_pytorch.

Only what HybridNets uses is built: the stem and the MBConv blocks, returning the stride
4/8/16/32 feature maps. ``_conv_head``/``_bn1`` exist solely so the released checkpoint
loads strictly; the forward pass never touches them (as in the reference).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .layers import BN_EPS, swish, tf_same_pad

# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, in, out); SE ratio 0.25.
_B0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# (width multiplier, depth multiplier, the resolution the static padding is computed for)
_SCALING = {
    "efficientnet-b0": (1.0, 1.0, 224),
    "efficientnet-b1": (1.0, 1.1, 240),
    "efficientnet-b2": (1.1, 1.2, 260),
    "efficientnet-b3": (1.2, 1.4, 300),
    "efficientnet-b4": (1.4, 1.8, 380),
}
# Index of the first block after each output stage (strides 4, 8, 16, 32).
_STAGE_ENDS = {
    "efficientnet-b0": (3, 5, 9, 16),
    "efficientnet-b1": (5, 8, 16, 23),
    "efficientnet-b2": (5, 8, 16, 23),
    "efficientnet-b3": (5, 8, 18, 26),
    "efficientnet-b4": (6, 10, 22, 32),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


@dataclass(frozen=True)
class BlockSpec:
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    expand_ratio: int
    se_channels: int
    # Static (left, right, top, bottom) padding of the depthwise conv: computed once for
    # the encoder's nominal square resolution, applied unchanged at any input size.
    pad: tuple[int, int, int, int]


def block_specs(name: str) -> tuple[int, list[BlockSpec], tuple[int, int, int, int]]:
    """Stem width, per-block specs and stem padding of an EfficientNet variant."""
    width, depth, resolution = _SCALING[name]
    size = resolution
    stem_pad = tf_same_pad(size, 3, 2)
    size = math.ceil(size / 2)
    specs = []
    for repeats, kernel, stride, expand, cin, cout in _B0_STAGES:
        cin, cout = _round_filters(cin, width), _round_filters(cout, width)
        for i in range(int(math.ceil(depth * repeats))):
            s = stride if i == 0 else 1
            block_in = cin if i == 0 else cout
            p = tf_same_pad(size, kernel, s)
            specs.append(BlockSpec(block_in, cout, kernel, s, expand,
                                   max(1, int(block_in * 0.25)), (p[0], p[1], p[0], p[1])))
            size = math.ceil(size / s)
    return _round_filters(32, width), specs, (stem_pad[0], stem_pad[1]) * 2


def _padded_conv(x: torch.Tensor, conv: nn.Conv2d, pad: tuple[int, int, int, int]) -> torch.Tensor:
    # Symmetric padding is folded into the conv; only the asymmetric case needs F.pad.
    if pad[0] == pad[1] == pad[2] == pad[3]:
        return conv(x)
    return conv(F.pad(x, pad))


def _make_conv(cin: int, cout: int, kernel: int, stride: int, pad, groups: int = 1,
               bias: bool = False) -> nn.Conv2d:
    symmetric = pad[0] == pad[1] == pad[2] == pad[3]
    return nn.Conv2d(cin, cout, kernel, stride, padding=pad[0] if symmetric else 0,
                     groups=groups, bias=bias)


class MBConvBlock(nn.Module):
    """Inverted residual: expand 1x1, depthwise kxk, squeeze-excite, project 1x1."""

    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.spec = spec
        mid = spec.in_channels * spec.expand_ratio
        if spec.expand_ratio != 1:
            self._expand_conv = nn.Conv2d(spec.in_channels, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, momentum=0.01, eps=BN_EPS)
        self._depthwise_conv = _make_conv(mid, mid, spec.kernel, spec.stride, spec.pad, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, momentum=0.01, eps=BN_EPS)
        self._se_reduce = nn.Conv2d(mid, spec.se_channels, 1)
        self._se_expand = nn.Conv2d(spec.se_channels, mid, 1)
        self._project_conv = nn.Conv2d(mid, spec.out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(spec.out_channels, momentum=0.01, eps=BN_EPS)
        self.residual = spec.stride == 1 and spec.in_channels == spec.out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.spec.expand_ratio != 1:
            x = swish(self._bn0(self._expand_conv(x)))
        x = swish(self._bn1(_padded_conv(x, self._depthwise_conv, self.spec.pad)))
        squeezed = x.mean(dim=(2, 3), keepdim=True)
        squeezed = self._se_expand(swish(self._se_reduce(squeezed)))
        x = torch.sigmoid(squeezed) * x
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetEncoder(nn.Module):
    """Returns the feature maps at strides 4, 8, 16 and 32."""

    def __init__(self, name: str = "efficientnet-b3"):
        super().__init__()
        stem_channels, specs, self.stem_pad = block_specs(name)
        self._conv_stem = _make_conv(3, stem_channels, 3, 2, self.stem_pad)
        self._bn0 = nn.BatchNorm2d(stem_channels, momentum=0.01, eps=BN_EPS)
        self._blocks = nn.ModuleList(MBConvBlock(s) for s in specs)
        head_in = specs[-1].out_channels
        head_out = _round_filters(1280, _SCALING[name][0])
        # Present in the checkpoint, unused by HybridNets.
        self._conv_head = nn.Conv2d(head_in, head_out, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head_out, momentum=0.01, eps=BN_EPS)
        self.stage_ends = _STAGE_ENDS[name]
        self.out_channels = tuple(specs[end - 1].out_channels for end in self.stage_ends)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = swish(self._bn0(_padded_conv(x, self._conv_stem, self.stem_pad)))
        features = []
        start = 0
        for end in self.stage_ends:
            for block in self._blocks[start:end]:
                x = block(x)
            features.append(x)
            start = end
        return features
