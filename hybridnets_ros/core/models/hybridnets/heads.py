"""Detection heads (box regressor, classifier) and the segmentation decoder/head."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .layers import BN_EPS, SameConv, SeparableConvBlock, swish


class _AnchorHead(nn.Module):
    """Separable convs shared across pyramid levels, BatchNorm per level, then a header.

    Returns [batch, anchors over all levels, values_per_anchor], levels P3 first, then
    positions row-major, then the anchors of one position.
    """

    def __init__(self, channels: int, values_per_anchor: int, num_anchors: int,
                 num_layers: int, num_levels: int):
        super().__init__()
        self.values_per_anchor = values_per_anchor
        self.conv_list = nn.ModuleList(
            SeparableConvBlock(channels, channels, norm=False) for _ in range(num_layers))
        self.bn_list = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(channels, momentum=0.01, eps=BN_EPS) for _ in range(num_layers))
            for _ in range(num_levels))
        self.header = SeparableConvBlock(channels, num_anchors * values_per_anchor, norm=False)

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        outputs = []
        for feat, bns in zip(features, self.bn_list):
            for conv, bn in zip(self.conv_list, bns):
                feat = swish(bn(conv(feat)))
            feat = self.header(feat)
            outputs.append(feat.permute(0, 2, 3, 1).reshape(feat.shape[0], -1, self.values_per_anchor))
        return torch.cat(outputs, dim=1)


class Regressor(_AnchorHead):
    """Box deltas (dy, dx, dh, dw) per anchor."""

    def __init__(self, channels: int, num_anchors: int, num_layers: int, num_levels: int = 5):
        super().__init__(channels, 4, num_anchors, num_layers, num_levels)


class Classifier(_AnchorHead):
    """Per-anchor, per-class probabilities (sigmoid)."""

    def __init__(self, channels: int, num_anchors: int, num_classes: int, num_layers: int,
                 num_levels: int = 5):
        super().__init__(channels, num_classes, num_anchors, num_layers, num_levels)

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.sigmoid(super().forward(features))


def _upsample_bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=True)


class Conv3x3BNSwish(nn.Module):
    """3x3 conv + BN + swish, a separable conv + BN, then an optional bilinear x2."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool):
        super().__init__()
        self.upsample = upsample
        self.block = nn.Sequential(SameConv(in_channels, out_channels, 3, bias=False),
                                   nn.BatchNorm2d(out_channels, momentum=0.01, eps=BN_EPS))
        self.conv_sp = SeparableConvBlock(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_sp(swish(self.block(x)))
        return _upsample_bilinear(x, 2) if self.upsample else x


class SegmentationBlock(nn.Module):
    """Brings one pyramid level to stride 4 with ``n_upsamples`` x2 steps."""

    def __init__(self, in_channels: int, out_channels: int, n_upsamples: int):
        super().__init__()
        blocks = [Conv3x3BNSwish(in_channels, out_channels, upsample=n_upsamples > 0)]
        blocks += [Conv3x3BNSwish(out_channels, out_channels, upsample=True)
                   for _ in range(1, n_upsamples)]
        self.block = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class BiFPNDecoder(nn.Module):
    """Sums P2 (encoder) and P3..P7 (BiFPN), each brought to stride 4 and 64 channels."""

    def __init__(self, pyramid_channels: int, p2_channels: int, seg_channels: int = 64):
        super().__init__()
        # P7, P6, P5, P4, P3 need 5, 4, 3, 2, 1 upsamplings to reach stride 4.
        self.seg_blocks = nn.ModuleList(
            SegmentationBlock(pyramid_channels, seg_channels, n) for n in (5, 4, 3, 2, 1))
        self.seg_p2 = SegmentationBlock(p2_channels, seg_channels, 0)

    def forward(self, p2: torch.Tensor, pyramid: tuple[torch.Tensor, ...]) -> torch.Tensor:
        levels = [block(feat) for block, feat in zip(self.seg_blocks, reversed(pyramid))]
        out = self.seg_p2(p2)
        for level in reversed(levels):  # summed P3 first, the reference's order
            out = out + level
        return out


class SegmentationHead(nn.Sequential):
    """1x1 conv to class logits, then bilinear x4 back to the input resolution."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(nn.Conv2d(in_channels, num_classes, 1), _BilinearUp(4))


class _BilinearUp(nn.Module):
    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _upsample_bilinear(x, self.factor)
