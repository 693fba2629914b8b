"""YOLOP: one encoder, a YOLO detection head and two segmentation heads.

Wu et al., "YOLOP: You Only Look Once for Panoptic Driving Perception" (Machine Intelligence
Research, 2022); the original is hustvl/YOLOP (MIT), ``lib/models/YOLOP.py`` ``MCnet(YOLOP)``.
This is a re-implementation computing the same float32 operations in the same order.

Architecture (layer numbers are the checkpoint's ``model.<i>`` indices; layers without
weights, the upsamplings and concatenations, keep their number but hold no module):

* **Encoder** - CSPDarknet-style: a Focus stem (``0``: space-to-depth by 2, then a 3x3
  conv), strided 3x3 convs (``1, 3, 5, 7``) alternating with CSP blocks (``2, 4, 6``, with
  residual bottlenecks), an SPP block (``8``), then an FPN top-down path (``9``..``16``)
  whose /8 output (``16``, 256 channels) feeds all three heads.
* **Detection** - a PAN bottom-up path (``17``..``23``) gives /8, /16, /32 features; the
  Detect layer (``24``) applies one 1x1 conv per level, 3 anchors x (x, y, w, h, obj, cls).
* **Segmentation** - two identical heads (drivable area ``25``..``33``, lane line
  ``34``..``42``): three nearest x2 upsamplings back to the input size and a final
  ``conv + BN + Hardswish`` to 2 channels, followed by a sigmoid.

Conventions:

* Every conv is bias-free (except Detect's) and followed by BatchNorm with eps 1e-3 (the
  original's ``initialize_weights``) and Hardswish; a CSP block applies BatchNorm and
  LeakyReLU(0.1) to the concatenation of its two paths. SPP max-pools with k = 5, 9, 13,
  stride 1, padding k // 2.
* Input: float32 [N, 3, H, W] with H, W multiples of 32, channels in B, G, R order,
  normalised with the ImageNet mean/std (see ``yolop.preprocess``).
* Output of ``forward``: ``(det [N, A, 6], drivable [N, 2, H, W], lane [N, 2, H, W])``.
  ``det`` is Detect's decoded inference output (xc, yc, w, h in input pixels, then the
  objectness and class probabilities), rows ordered by level, anchor, row, column; the two
  segmentation outputs are probabilities (after the sigmoid), channel 1 the foreground.
* ONNX: no data-dependent control flow; the decoding grid depends only on the input size
  and is built once per size (a constant in a static-shape export).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.03
NUM_CLASSES = 1                      # "car"
OUTPUTS_PER_ANCHOR = 5 + NUM_CLASSES  # x, y, w, h, objectness, classes
STRIDES = (8, 16, 32)
# Anchor (w, h) in input pixels per level, as the released configuration has them; the
# checkpoint stores them again (``anchor_grid``), and the loaded values are the ones used.
ANCHORS_PX = (((3, 9), (5, 11), (4, 20)),
              ((7, 18), (6, 39), (12, 31)),
              ((19, 50), (38, 81), (68, 157)))
ANCHORS_PER_LEVEL = 3
DETECT_INDEX = 24
DRIVABLE_HEAD_START, LANE_HEAD_START = 25, 34
SPP_KERNELS = (5, 9, 13)
MAX_STRIDE = 32  # input sides must be multiples of this


class ConvBnAct(nn.Module):
    """k x k conv (padding k // 2, no bias) -> BatchNorm -> Hardswish."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Focus(nn.Module):
    """Space-to-depth by 2 (the four pixel phases stacked as channels), then a conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = ConvBnAct(4 * in_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Phase order (even/odd row, even/odd column) fixes the meaning of the weights.
        phases = (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])
        return self.conv(torch.cat(phases, dim=1))


class Bottleneck(nn.Module):
    """1x1 then 3x3 ConvBnAct at constant width, adding the input when ``residual``."""

    def __init__(self, channels: int, residual: bool):
        super().__init__()
        self.cv1 = ConvBnAct(channels, channels, 1)
        self.cv2 = ConvBnAct(channels, channels, 3)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.residual else y


class CSPBlock(nn.Module):
    """Cross-stage partial block: half the width goes through ``depth`` bottlenecks, half
    through a plain 1x1 conv; both are joined, normalised, activated and mixed."""

    def __init__(self, in_channels: int, out_channels: int, depth: int = 1,
                 residual: bool = True):
        super().__init__()
        hidden = out_channels // 2
        self.cv1 = ConvBnAct(in_channels, hidden, 1)
        self.cv2 = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.cv3 = nn.Conv2d(hidden, hidden, 1, bias=False)
        self.cv4 = ConvBnAct(2 * hidden, out_channels, 1)
        self.bn = nn.BatchNorm2d(2 * hidden, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.LeakyReLU(0.1)
        self.m = nn.Sequential(*(Bottleneck(hidden, residual) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = self.cv3(self.m(self.cv1(x)))
        shallow = self.cv2(x)
        return self.cv4(self.act(self.bn(torch.cat((deep, shallow), dim=1))))


class SPP(nn.Module):
    """Spatial pyramid pooling: halve the width, stack it with its stride-1 max-pools."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = ConvBnAct(in_channels, hidden, 1)
        self.cv2 = ConvBnAct(hidden * (len(SPP_KERNELS) + 1), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        pooled = [F.max_pool2d(x, k, stride=1, padding=k // 2) for k in SPP_KERNELS]
        return self.cv2(torch.cat([x, *pooled], dim=1))


class Detect(nn.Module):
    """One 1x1 conv per level and the YOLOv5 box decoding, over all levels at once.

    ``anchors`` (grid units) and ``anchor_grid`` (pixels, [levels, 1, anchors, 1, 1, 2])
    are buffers of the released checkpoint; the decoding reads ``anchor_grid``.
    """

    def __init__(self, in_channels: tuple[int, ...]):
        super().__init__()
        anchors_px = torch.tensor(ANCHORS_PX, dtype=torch.float32)
        strides = torch.tensor(STRIDES, dtype=torch.float32).view(-1, 1, 1)
        self.register_buffer("anchors", anchors_px / strides)
        self.register_buffer("anchor_grid", anchors_px.view(len(STRIDES), 1, -1, 1, 1, 2).clone())
        self.m = nn.ModuleList(nn.Conv2d(c, ANCHORS_PER_LEVEL * OUTPUTS_PER_ANCHOR, 1)
                               for c in in_channels)
        with torch.no_grad():
            for conv, stride in zip(self.m, STRIDES):
                # The original's start for training (and a sane random network): about 8
                # objects per 640x640 image, class probability 0.6 (RetinaNet's prior).
                bias = conv.bias.view(ANCHORS_PER_LEVEL, OUTPUTS_PER_ANCHOR)
                bias[:, 4] += math.log(8 / (640 / stride) ** 2)
                bias[:, 5:] += math.log(0.6 / (NUM_CLASSES - 0.99))
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def position_table(self, level_hw: tuple[tuple[int, int], ...],
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(cell (x, y) [A, 2], stride [A, 1]) for every output row, built once per size."""
        key = (level_hw, str(device))
        if key not in self._tables:
            cells, strides = [], []
            for (ny, nx), stride in zip(level_hw, STRIDES):
                ys, xs = torch.meshgrid(torch.arange(ny, dtype=torch.float32),
                                        torch.arange(nx, dtype=torch.float32), indexing="ij")
                cell = torch.stack((xs, ys), dim=-1).view(1, ny * nx, 2)
                cells.append(cell.expand(ANCHORS_PER_LEVEL, -1, -1).reshape(-1, 2))
                strides.append(torch.full((ANCHORS_PER_LEVEL * ny * nx, 1), float(stride)))
            self._tables[key] = (torch.cat(cells).to(device), torch.cat(strides).to(device))
        return self._tables[key]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        raw, anchor_wh, level_hw = [], [], []
        for level, (conv, x) in enumerate(zip(self.m, features)):
            p = conv(x)
            batch, _, ny, nx = p.shape
            level_hw.append((int(ny), int(nx)))
            # [N, anchors*6, ny, nx] -> [N, anchors*ny*nx, 6]: rows by anchor, then position
            raw.append(p.view(batch, ANCHORS_PER_LEVEL, OUTPUTS_PER_ANCHOR, -1)
                       .permute(0, 1, 3, 2).reshape(batch, -1, OUTPUTS_PER_ANCHOR))
            anchor_wh.append(self.anchor_grid[level].view(ANCHORS_PER_LEVEL, 1, 2)
                             .expand(-1, ny * nx, -1).reshape(-1, 2))
        cell, stride = self.position_table(tuple(level_hw), features[0].device)
        y = torch.cat(raw, dim=1).sigmoid()
        xy = (y[..., 0:2] * 2.0 - 0.5 + cell) * stride
        wh = (y[..., 2:4] * 2) ** 2 * torch.cat(anchor_wh)
        return torch.cat((xy, wh, y[..., 4:]), dim=-1)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def _seg_head_layers(start: int) -> dict[str, nn.Module]:
    """The layers of one segmentation head, numbered from ``start`` (the upsamplings
    at start + 1, + 4 and + 7 have no weights)."""
    return {str(start): ConvBnAct(256, 128, 3),
            str(start + 2): CSPBlock(128, 64, 1, residual=False),
            str(start + 3): ConvBnAct(64, 32, 3),
            str(start + 5): ConvBnAct(32, 16, 3),
            str(start + 6): CSPBlock(16, 8, 1, residual=False),
            str(start + 8): ConvBnAct(8, 2, 3)}


class YOLOP(nn.Module):
    """MCnet with the released YOLOP configuration; ``model.<i>`` as in ``End-to-end.pth``."""

    def __init__(self):
        super().__init__()
        layers = {
            "0": Focus(3, 32, 3),
            "1": ConvBnAct(32, 64, 3, 2), "2": CSPBlock(64, 64, 1),
            "3": ConvBnAct(64, 128, 3, 2), "4": CSPBlock(128, 128, 3),
            "5": ConvBnAct(128, 256, 3, 2), "6": CSPBlock(256, 256, 3),
            "7": ConvBnAct(256, 512, 3, 2), "8": SPP(512, 512),
            "9": CSPBlock(512, 512, 1, residual=False),
            "10": ConvBnAct(512, 256, 1), "13": CSPBlock(512, 256, 1, residual=False),
            "14": ConvBnAct(256, 128, 1), "17": CSPBlock(256, 128, 1, residual=False),
            "18": ConvBnAct(128, 128, 3, 2), "20": CSPBlock(256, 256, 1, residual=False),
            "21": ConvBnAct(256, 256, 3, 2), "23": CSPBlock(512, 512, 1, residual=False),
            str(DETECT_INDEX): Detect((128, 256, 512)),
            **_seg_head_layers(DRIVABLE_HEAD_START),
            **_seg_head_layers(LANE_HEAD_START),
        }
        self.model = nn.ModuleDict(sorted(layers.items(), key=lambda item: int(item[0])))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input -> (the shared /8 features of layer 16, layer 14's and layer 10's outputs)."""
        m = self.model
        x = m["2"](m["1"](m["0"](x)))
        p3 = m["4"](m["3"](x))
        p4 = m["6"](m["5"](p3))
        top = m["10"](m["9"](m["8"](m["7"](p4))))
        mid = m["14"](m["13"](torch.cat((_upsample(top), p4), dim=1)))
        return torch.cat((_upsample(mid), p3), dim=1), mid, top

    def detect(self, shared: torch.Tensor, mid: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        m = self.model
        small = m["17"](shared)
        medium = m["20"](torch.cat((m["18"](small), mid), dim=1))
        large = m["23"](torch.cat((m["21"](medium), top), dim=1))
        return m[str(DETECT_INDEX)]([small, medium, large])

    def segment(self, shared: torch.Tensor, start: int) -> torch.Tensor:
        """One segmentation head from layer ``start``: foreground/background probabilities."""
        m = self.model
        x = m[str(start + 2)](_upsample(m[str(start)](shared)))
        x = m[str(start + 5)](_upsample(m[str(start + 3)](x)))
        x = m[str(start + 8)](_upsample(m[str(start + 6)](x)))
        return x.sigmoid()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shared, mid, top = self.encode(x)
        return (self.detect(shared, mid, top), self.segment(shared, DRIVABLE_HEAD_START),
                self.segment(shared, LANE_HEAD_START))
