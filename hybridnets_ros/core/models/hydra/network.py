"""Hydra: joint semantic segmentation and metric depth in one real-time network.

Nekrasov et al., "Real-time joint semantic segmentation and depth estimation using
asymmetric annotations" (ICRA 2019); the original is DrSleep/multi-task-refinenet
``src/models.py`` ``Net(num_classes=6, num_tasks=2)``. This is a re-implementation that
computes the same float32 operations in the same order, so with torch on the CPU it
reproduces the original bit for bit.

Architecture:

* **Encoder** - MobileNetV2. A 3x3 stride-2 stem (``layer1``), then seven stages of
  inverted-residual blocks (``layer2``..``layer8``): 1x1 expansion, 3x3 depthwise (the only
  strided conv of a block), 1x1 linear projection; a block adds its input when it keeps the
  resolution and the channel count. Every conv is bias-free and followed by BatchNorm
  (eps 1e-5) and, except for the projection, ReLU6. Unlike torchvision, the t=1 block of
  ``layer2`` keeps its 1x1 expansion conv. Strides: layer3 /4, layer4 /8, layer5-6 /16,
  layer7-8 /32.
* **Decoder** - Light-Weight RefineNet. 1x1 convs (``conv3``..``conv8``) project the stage
  outputs to 256 channels. Starting from the /32 features, each step sums the projections
  of one resolution with the coarser path, applies ReLU6, refines the sum with chained
  residual pooling (CRP: four times "5x5 stride-1 max-pool, then 1x1 conv", each result
  added to the running sum), adapts it with a 1x1 conv and upsamples it bilinearly
  (``align_corners=False``) to the next finer feature map. The last CRP, at /4, uses
  depthwise 1x1 convs.
* **Heads** - two identical heads on the /4 features: depthwise 1x1 conv, ReLU6, 3x3 conv
  with bias; 6 segmentation logits and 1 depth channel (metres for the KITTI model).

Conventions:

* Input: float32 [N, 3, H, W], RGB, ``(pixel / 255 - mean) / std`` with the ImageNet mean
  and std (see ``hydra.preprocess``), at the full image size: any H, W works, because
  every strided conv pads k // 2 and so gives ceil(n / 2).
* Output: ``(segmentation logits [N, 6, h, w], depth [N, 1, h, w])`` in that order, at the
  ``layer3`` size h = ceil(ceil(H / 2) / 2) (same for w). Upsampling to the image and the
  argmax / abs are post-processing (``hydra.postprocess``).
* Module and parameter names follow the released checkpoint (``layerN.B.output.I.{0,1}``,
  ``convN``, ``crpN.0.K_outvar_dimred``, ``conv_adapt{2,3,4}``, ``pre_segm``, ``segm``,
  ``pre_depth``, ``depth``), registered in the same order, so ``load_state_dict(strict=True)``
  accepts the original weights.
* ONNX: the forward has no data-dependent control flow; the upsampling sizes come from
  feature-map shapes, which become constants in a static-shape export.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 6
STEM_CHANNELS = 32
# MobileNetV2 stages layer2..layer8: (expansion t, output channels c, blocks n, stride s of
# the first block).
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
FIRST_STAGE_INDEX = 2  # the stages are named layer2..layer8; layer1 is the stem
DECODER_CHANNELS = 256
CRP_STAGES = 4
CRP_POOL_SIZE = 5
BN_EPS = 1e-5  # the original's; other ports use 1e-3 in the stem, which changes the outputs


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             groups: int = 1, relu6: bool = True) -> nn.Sequential:
    """Bias-free conv (padding k // 2) + BatchNorm, optionally + ReLU6 (keys ``0``, ``1``)."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                        padding=kernel_size // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_channels, eps=BN_EPS)]
    if relu6:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


def _conv1x1(in_channels: int, out_channels: int, depthwise: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False,
                     groups=in_channels if depthwise else 1)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand (1x1), filter (3x3 depthwise, strided), project (1x1)."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int):
        super().__init__()
        hidden = in_channels * expansion
        self.output = nn.Sequential(
            _conv_bn(in_channels, hidden, 1),
            _conv_bn(hidden, hidden, 3, stride=stride, groups=hidden),
            _conv_bn(hidden, out_channels, 1, relu6=False))
        # Fixed at construction, so the traced graph has no branch.
        self.adds_input = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.output(x)
        return out + x if self.adds_input else out


class ChainedResidualPooling(nn.Module):
    """CRP: repeatedly max-pool (5x5, stride 1) and 1x1-convolve the previous stage's
    result, adding every stage's result to the input."""

    def __init__(self, channels: int, depthwise: bool):
        super().__init__()
        for stage in range(1, CRP_STAGES + 1):
            # Names start with a digit (the checkpoint's), hence add_module.
            self.add_module(f"{stage}_outvar_dimred", _conv1x1(channels, channels, depthwise))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            # An identity (1x1 max-pool), for ONNX Runtime: the input comes from a ReLU6
            # (Clip), which its blocked-layout (NCHWc) pass leaves in NCHW, and then every
            # sum of the chain ran in NCHW behind a reorder of each convolution's output.
            # From a pool, the sums stay blocked (docs/benchmarks.md, Zen 4 section).
            x = F.max_pool2d(x, 1)
        pooled = x
        for conv in self.children():
            pooled = conv(_max_pool(pooled))
            x = pooled + x
        return x


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    """5x5 stride-1 max-pool. torch's CPU max-pool is ~3x faster on a channels-last tensor,
    and a max is exact in any layout, so the round trip changes only the speed (the ONNX
    tracer drops it). The result goes back to NCHW so the convs run the original's kernels.
    """
    pooled = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), CRP_POOL_SIZE,
                          stride=1, padding=CRP_POOL_SIZE // 2)
    return pooled.contiguous()


def _crp(depthwise: bool = False) -> nn.Sequential:
    # Wrapped in a Sequential because the checkpoint's keys are crpN.0.*.
    return nn.Sequential(ChainedResidualPooling(DECODER_CHANNELS, depthwise))


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class HydraNet(nn.Module):
    """MobileNetV2 + Light-Weight RefineNet with a segmentation and a depth head.

    ``forward(x)`` takes a normalised float32 [N, 3, H, W] image and returns
    ``(segm_logits [N, num_classes, h, w], depth [N, 1, h, w])`` at output stride 4.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.layer1 = _conv_bn(3, STEM_CHANNELS, 3, stride=2)
        in_channels = STEM_CHANNELS
        for index, (expansion, channels, blocks, stride) in enumerate(MOBILENET_V2_STAGES,
                                                                       FIRST_STAGE_INDEX):
            stage = []
            for block in range(blocks):
                stage.append(InvertedResidual(in_channels, channels, expansion,
                                              stride if block == 0 else 1))
                in_channels = channels
            setattr(self, f"layer{index}", nn.Sequential(*stage))

        # Lateral projections convN of layerN (N = 8..3), registered deepest first as in
        # the checkpoint.
        stage_channels = {index: stage[1] for index, stage in
                          enumerate(MOBILENET_V2_STAGES, FIRST_STAGE_INDEX)}
        for index in range(8, 2, -1):
            setattr(self, f"conv{index}", _conv1x1(stage_channels[index], DECODER_CHANNELS))
        self.crp4 = _crp()
        self.crp3 = _crp()
        self.crp2 = _crp()
        self.crp1 = _crp(depthwise=True)
        self.conv_adapt4 = _conv1x1(DECODER_CHANNELS, DECODER_CHANNELS)
        self.conv_adapt3 = _conv1x1(DECODER_CHANNELS, DECODER_CHANNELS)
        self.conv_adapt2 = _conv1x1(DECODER_CHANNELS, DECODER_CHANNELS)

        self.pre_depth = _conv1x1(DECODER_CHANNELS, DECODER_CHANNELS, depthwise=True)
        self.depth = nn.Conv2d(DECODER_CHANNELS, 1, 3, padding=1, bias=True)
        self.pre_segm = _conv1x1(DECODER_CHANNELS, DECODER_CHANNELS, depthwise=True)
        self.segm = nn.Conv2d(DECODER_CHANNELS, num_classes, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layer2(self.layer1(x))
        l3 = self.layer3(x)   # /4
        l4 = self.layer4(l3)  # /8
        l5 = self.layer5(l4)  # /16
        l6 = self.layer6(l5)  # /16
        l7 = self.layer7(l6)  # /32
        l8 = self.layer8(l7)  # /32

        # The sums keep the original's operand grouping: float32 addition is not
        # associative, and a different grouping would lose bit-exactness.
        path = F.relu6(self.conv8(l8) + self.conv7(l7))
        path = _upsample_to(self.conv_adapt4(self.crp4(path)), l6)
        path = F.relu6(self.conv5(l5) + self.conv6(l6) + path)
        path = _upsample_to(self.conv_adapt3(self.crp3(path)), l4)
        path = F.relu6(path + self.conv4(l4))
        path = _upsample_to(self.conv_adapt2(self.crp2(path)), l3)
        path = F.relu6(self.conv3(l3) + path)
        features = self.crp1(path)

        segm_logits = self.segm(F.relu6(self.pre_segm(features)))
        depth = self.depth(F.relu6(self.pre_depth(features)))
        return segm_logits, depth
