"""HyCTAS semantic segmentation network (Yu et al. 2024), built from a searched architecture file.

Architecture. A stem (3x3 stride-2 conv + BN, then two residual blocks of two 3x3 convs) gives a
stride-4 feature (128 ch) and a stride-8 feature (128 ch). One to three searched branches of
cells follow; each cell applies one operation from PRIMITIVES (`skip`, `conv`, `conv_downup`,
`conv_2x_downup`, `sa`) and may halve the resolution, so a branch walks from 1/8 to its final
scale (1/8, 1/16 or 1/32, its "last"). "downup" cells convolve at half resolution and add the
bilinear-upsampled result to a 1x1 projection of their input; `sa` cells wrap a global
self-attention. Branches share one cell for as long as they agree on op, width and next scale.
Each branch is brought back to 1/8 through 1x1 "arm" and 3x3 "refine" convs, the branches are
concatenated and fused (1x1 conv + squeeze-excitation gate). The semantic head runs a
self-attention at 1/16 (half of the 1/8 map), upsamples to 1/4, concatenates a 48-ch
projection of the stride-4 stem feature, and predicts 19 Cityscapes train-id logits at 1/4.

Conventions (those of MarvinYu1995/HyCTAS train/hrtnet.py + operations.py, Fch 16, head
HRTSemHead1, as shared/golden/hyctas/README.md documents them):
- forward(x) takes a normalised float32 [N,3,H,W] RGB tensor ((x/255 - mean)/std, ImageNet
  mean/std) and returns the raw `sem_head` logits [N,19,ceil(H/4),ceil(W/4)], before the
  evaluation's bilinear upsampling.
- Attention has no 1/sqrt(d) scaling: softmax(q^T k) over the keys, out = gamma * (v attn^T) + x.
- Every resize is bilinear with align_corners=False; "half" is the size (h//2, w//2).
- State-dict keys are the reference's (`backbone.cells.{layer}-{branch}._op._op.0.*`,
  `sem_head.*`; detectron2-style convs keep their BN under `.norm`), so a reference checkpoint
  loads strictly. The training-only auxiliary heads are not built.
- `ffm16`/`ffm32` exist (their weights are in the checkpoints) but are not run: only the
  training-only heads read them.
- Without padding the 1/8 map must have an even size (the head's attention halves and doubles
  it), so input sides must be multiples of 16.

What the README says had to be supplied or inferred: the op list is `train/genotypes.py`'s
PRIMITIVES (high confidence); detectron2's Conv2d/get_norm are conv -> norm -> activation with
a plain BatchNorm2d in eval (high confidence). The attention is computed in blocks of query rows
when its N x N energy would exceed 2**26 floats (HRTNet_L's 1/8 attention); the README reports
that blockwise evaluation reproduced the reference bit for bit; S and M never need it at 1024x2048.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

PRIMITIVES = ("skip", "conv", "conv_downup", "conv_2x_downup", "sa")
ARCHITECTURE_KEYS = ("ops", "paths", "downs", "widths", "lasts")
NUM_CLASSES = 19
BASE_CHANNELS = 16  # Fch of configs/cityscapes/semantic.yaml
LOW_LEVEL_CHANNELS = 48  # HRTSemHead1's projection of the stride-4 feature
# Largest attention energy block (query rows x keys) held at once: 256 MiB of float32.
ATTENTION_BLOCK_ELEMENTS = 1 << 26


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)


def _half(x: torch.Tensor) -> torch.Tensor:
    return _resize(x, (x.shape[-2] // 2, x.shape[-1] // 2))


class ConvNorm(nn.Conv2d):
    """Bias-free conv -> BatchNorm (-> ReLU), stored as detectron2's Conv2d (`weight`, `norm.*`)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1,
                 relu: bool = False):
        super().__init__(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2,
                         bias=False)
        self.norm = nn.BatchNorm2d(c_out)
        self.apply_relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(super().forward(x))
        return F.relu(x) if self.apply_relu else x


class ResidualPair(nn.Module):
    """Two 3x3 conv-BN-ReLU (the stem's BasicResidual2x; despite the name, no shortcut)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = ConvNorm(c_in, c_out, 3, stride, relu=True)
        self.conv2 = ConvNorm(c_out, c_out, 3, 1, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class FactorizedReduce(nn.Module):
    """`skip`: a 1x1 conv, or at stride 2 two 1x1 stride-2 convs on x and on x shifted by one."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride = stride
        if stride == 1:
            self.conv1 = ConvNorm(c_in, c_out, 1, relu=True)
        else:
            self.conv1 = ConvNorm(c_in, c_out // 2, 1, 2, relu=True)
            self.conv2 = ConvNorm(c_in, c_out // 2, 1, 2, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return self.conv1(x)
        return torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1)


class PlainConv(nn.Module):
    """`conv`: 3x3 conv-BN-ReLU at stride 1 or 2."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv = ConvNorm(c_in, c_out, 3, stride, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DownUpConv(nn.Module):
    """`conv_downup` (one 3x3 conv) and `conv_2x_downup` (two): convolve at half resolution.

    At stride 1 the result is upsampled back and added to a 1x1 projection of the input; at
    stride 2 the half-resolution result is the output.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, double: bool):
        super().__init__()
        self.stride = stride
        self.double = double
        if double:
            self.conv1 = ConvNorm(c_in, c_out, 3, relu=True)
            self.conv2 = ConvNorm(c_out, c_out, 3)
        else:
            self.conv = ConvNorm(c_in, c_out, 3)
        if stride == 1:
            self.downsample = ConvNorm(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _half(x)
        y = self.conv2(self.conv1(y)) if self.double else self.conv(y)
        if self.stride == 1:
            y = _resize(y, x.shape[-2:]) + self.downsample(x)
        return F.relu(y)


class PositionAttention(nn.Module):
    """Global self-attention over the H*W positions (the reference's ATT), no 1/sqrt(d) scaling."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))
        self.query_conv = nn.Conv2d(channels, channels // 8, 1)
        self.key_conv = nn.Conv2d(channels, channels // 8, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        positions = height * width
        query = self.query_conv(x).view(batch, -1, positions).permute(0, 2, 1)  # [B, N, C/8]
        key = self.key_conv(x).view(batch, -1, positions)  # [B, C/8, N]
        value = self.value_conv(x).view(batch, -1, positions)  # [B, C, N]
        # Softmax rows are independent, so blocks of query rows give the same result while
        # bounding the N x N energy's memory (one block for S and M at 1024x2048).
        rows = max(1, ATTENTION_BLOCK_ELEMENTS // positions)
        blocks = []
        for query_block in query.split(rows, dim=1):
            weights = torch.softmax(torch.bmm(query_block, key), dim=-1)  # [B, rows, N]
            blocks.append(torch.bmm(value, weights.permute(0, 2, 1)))
        out = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=2)
        return self.gamma * out.view(batch, channels, height, width) + x


class AttentionBlock(nn.Module):
    """`sa` cell (Self_Attn) and head SAHead: 1x1 conv, attention, BN-ReLU, 1x1 conv, +shortcut.

    `half_resolution` (SAHead, stride 1) attends on the half-size map and upsamples back to twice
    that. At stride 2 the shortcut is a 3x3 stride-2 conv and the attention output is avg-pooled.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, half_resolution: bool = False):
        super().__init__()
        if half_resolution and stride != 1:
            raise ValueError("the half-resolution (head) attention block has stride 1")
        self.half_resolution = half_resolution
        if c_in != c_out or stride == 2:
            kernel = 3 if stride == 2 else 1
            self.shortcut = ConvNorm(c_in, c_out, kernel, stride, relu=True)
        else:
            self.shortcut = nn.Identity()
        self.net1 = ConvNorm(c_in, c_out, 1, relu=True)
        self.net2 = nn.Sequential(
            PositionAttention(c_out),
            nn.AvgPool2d(2) if stride == 2 else nn.Identity(),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )
        self.net3 = ConvNorm(c_out, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        y = self.net1(x)
        if self.half_resolution:
            y = _half(y)
        y = self.net2(y)
        if self.half_resolution:
            y = _resize(y, (2 * y.shape[-2], 2 * y.shape[-1]))
        return F.relu(self.net3(y) + shortcut)


class FeatureFusion(nn.Module):
    """1x1 conv-BN-ReLU, then a squeeze-excitation gate: out = fm + fm * sigmoid(...)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_1x1 = ConvNorm(c_in, c_out, 1, relu=True)
        self.channel_attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            ConvNorm(c_out, c_out, 1, relu=True),
            ConvNorm(c_out, c_out, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fm = self.conv_1x1(x)
        return fm + fm * self.channel_attention(fm)


def _make_op(op_index: int, c_in: int, c_out: int, stride: int) -> nn.Module:
    name = PRIMITIVES[op_index]
    if name == "skip":
        return FactorizedReduce(c_in, c_out, stride)
    if name == "conv":
        return PlainConv(c_in, c_out, stride)
    if name == "sa":
        return AttentionBlock(c_in, c_out, stride)
    return DownUpConv(c_in, c_out, stride, double=name == "conv_2x_downup")


class _Nest(nn.Module):
    """One level of the reference's Cell -> MixedOp nesting (the `._op` in the key names)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self._op = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(x)


def _searched_cell(op_index: int, c_in: int, c_out: int, stride: int) -> nn.Module:
    op = _make_op(op_index, c_in, c_out, stride)
    # MixedOp wraps every op but `skip` in Sequential(op, DropPath) (DropPath: identity in eval).
    return _Nest(_Nest(op if PRIMITIVES[op_index] == "skip" else nn.Sequential(op)))


def load_architecture(path: str | Path) -> dict[str, Any]:
    """The searched architecture (ops, paths, downs, widths, lasts), checked for consistency."""
    arch = json.loads(Path(path).read_text())
    missing = set(ARCHITECTURE_KEYS) - set(arch)
    if missing:
        raise ValueError(f"{path}: architecture lacks {sorted(missing)}")
    _check_architecture(arch, str(path))
    return arch


def _check_architecture(arch: Mapping[str, Any], source: str) -> None:
    ops, paths, downs, widths, lasts = (arch[k] for k in ARCHITECTURE_KEYS)
    if not (len(ops) == len(paths) == len(downs) == len(widths) == len(lasts) >= 1):
        raise ValueError(f"{source}: ops, paths, downs, widths and lasts need one entry per branch")
    for branch, (op, path, down, width, last) in enumerate(zip(ops, paths, downs, widths, lasts)):
        where = f"{source}: branch {branch}"
        if not (len(op) == len(path) == len(down) == len(width) + 1 >= 1):
            raise ValueError(f"{where}: needs as many ops, paths and downs as widths + 1")
        if any(not 0 <= o < len(PRIMITIVES) for o in op):
            raise ValueError(f"{where}: op indices must lie in 0..{len(PRIMITIVES) - 1}")
        steps = [b - a for a, b in zip(path, path[1:])] + [0]
        if (path[0] != 0 or list(down) != steps or any(d not in (0, 1) for d in down)
                or path[-1] != last or last not in (0, 1, 2)):
            raise ValueError(f"{where}: paths must start at 0 (1/8), go down by the 0/1 downs "
                             "and end at last (0, 1 or 2)")


class HyCTASBackbone(nn.Module):
    """Stem, searched cells and branch fusion -> (stride-4 stem feature, fused stride-8 feature)."""

    def __init__(self, arch: Mapping[str, Any], base_channels: int = BASE_CHANNELS):
        super().__init__()
        _check_architecture(arch, "architecture")
        self._base = base_channels
        self.lasts = list(arch["lasts"])
        self.num_branches = len(self.lasts)
        self.stem1 = nn.Sequential(ConvNorm(3, self.channels(2) * 2, 3, 2),
                                   ResidualPair(self.channels(2) * 2, self.channels(4) * 2, 2))
        self.stem2 = ResidualPair(self.channels(4) * 2, self.channels(8), 2)
        self.s4_channels = self.channels(4) * 2
        self.cells = nn.ModuleDict()
        # Per layer, per group of branches sharing a cell: (cell name, branches, output scale
        # index 0/1/2 for 1/8, 1/16, 1/32).
        self.schedule: list[list[tuple[str, list[int], int]]] = []
        fusion_in = self._build_cells(arch)
        self._build_fusion(**fusion_in)
        self.out_channels = self.channels(8) * self.num_branches

    def channels(self, scale: int, width: float = 1.0) -> int:
        return int(round(scale * self._base * width))

    def _build_cells(self, arch: Mapping[str, Any]) -> dict[str, int]:
        ops, paths, downs, widths = (arch[k] for k in ("ops", "paths", "downs", "widths"))
        branches = range(self.num_branches)
        # Branches stay merged while they agree on op, width and next scale at every layer so far.
        merged = [[True] * self.num_branches for _ in branches]
        fusion_in = {"ch_16": 0, "ch_8_2": 0, "ch_8_1": 0}
        for layer in range(max(len(p) for p in paths)):
            for i in branches:
                for j in branches:
                    if i != j and (len(paths[i]) <= layer + 1 or len(paths[j]) <= layer + 1
                                   or paths[i][layer + 1] != paths[j][layer + 1]
                                   or ops[i][layer] != ops[j][layer]
                                   or widths[i][layer] != widths[j][layer]):
                        merged[i][j] = False
            groups: list[list[int]] = []
            for branch in branches:
                if len(paths[branch]) < layer + 1:
                    continue
                group = next((g for g in groups if merged[g[0]][branch]), None)
                if group is None:
                    groups.append([branch])
                else:
                    group.append(branch)
            steps = []
            for group in groups:
                first = group[0]
                scale_index, down = paths[first][layer], downs[first][layer]
                scale = 2 ** (scale_index + 3)
                if layer == 0:
                    c_in = self.channels(scale)
                    c_out = self.channels(scale * (down + 1), widths[first][0])
                elif layer == len(paths[first]) - 1:  # a branch's last cell has the full width
                    c_in = self.channels(scale, widths[first][layer - 1])
                    c_out = self.channels(scale)
                else:
                    c_in = self.channels(scale, widths[first][layer - 1])
                    c_out = self.channels(scale * (down + 1), widths[first][layer])
                cell = _searched_cell(ops[first][layer], c_in, c_out, 2 if down else 1)
                # Widths of the last 1/16 and 1/8 features that the refine convs concatenate:
                # the inputs of the cells where the 1/32 (1/16) branch goes down.
                if down and 2 in self.lasts and self.lasts.index(2) in group:
                    fusion_in["ch_8_2" if scale == 8 else "ch_16"] = c_in
                if down and scale == 8 and 1 in self.lasts and self.lasts.index(1) in group:
                    fusion_in["ch_8_1"] = c_in
                for branch in group:
                    self.cells[f"{layer}-{branch}"] = cell
                steps.append((f"{layer}-{first}", group, scale_index + down))
            self.schedule.append(steps)
        return fusion_in

    def _build_fusion(self, ch_16: int, ch_8_2: int, ch_8_1: int) -> None:
        c8, c16, c32 = self.channels(8), self.channels(16), self.channels(32)
        # ffm32/ffm16 feed only the training-only auxiliary heads; built so checkpoints load.
        if 2 in self.lasts:
            self.ffm32 = FeatureFusion(c32, c32)
            self.ffm16 = FeatureFusion(c16 + ch_16 if 1 in self.lasts else ch_16, c16)
            self.arms32 = nn.ModuleList([ConvNorm(c32, c16, 1), ConvNorm(c16, c8, 1)])
            self.refines32 = nn.ModuleList([ConvNorm(c16 + ch_16, c16, 3),
                                            ConvNorm(c8 + ch_8_2, c8, 3)])
        elif 1 in self.lasts:
            self.ffm16 = FeatureFusion(c16, c16)
        if 1 in self.lasts:
            self.arms16 = ConvNorm(c16, c8, 1)
            self.refines16 = ConvNorm(c8 + ch_8_1, c8, 3)
        self.ffm = FeatureFusion(c8 * self.num_branches, c8 * self.num_branches)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s4 = self.stem1(x)
        s8 = self.stem2(s4)
        current = [s8] * self.num_branches
        # Last feature of each branch at 1/8, 1/16, 1/32. The scales come from the architecture
        # (the reference infers them from H // feature height: the same for any usable size).
        by_scale = [[s8] * self.num_branches for _ in range(3)]
        # The arms resize to the size of the last 1/8 (1/16) output computed, as the reference does.
        last_size = [s8.shape[-2:], None, None]
        for steps in self.schedule:
            for name, group, scale_index in steps:
                out = self.cells[name](current[group[0]])
                for branch in group:
                    current[branch] = out
                    by_scale[scale_index][branch] = out
                last_size[scale_index] = out.shape[-2:]
        s8_features = []
        for branch, last in enumerate(self.lasts):
            s8_branch, s16_branch, s32_branch = (by_scale[s][branch] for s in range(3))
            if last == 2:
                y = _resize(self.arms32[0](s32_branch), last_size[1])
                y = self.refines32[0](torch.cat([y, s16_branch], dim=1))
                y = _resize(self.arms32[1](y), last_size[0])
                s8_features.append(self.refines32[1](torch.cat([y, s8_branch], dim=1)))
            elif last == 1:
                y = _resize(self.arms16(s16_branch), last_size[0])
                s8_features.append(self.refines16(torch.cat([y, s8_branch], dim=1)))
            else:
                s8_features.append(s8_branch)
        return s4, self.ffm(torch.cat(s8_features, dim=1))


class SemanticHead(nn.Module):
    """HRTSemHead1: attention at 1/16, upsample to 1/4, concat the stride-4 projection, predict."""

    def __init__(self, in_channels: int, s4_channels: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        mid = in_channels if in_channels <= 256 else in_channels // 2
        self.feature_projection_s4 = ConvNorm(s4_channels, LOW_LEVEL_CHANNELS, 1)
        self.att_sa = AttentionBlock(in_channels, in_channels, half_resolution=True)
        self.seg_head = DownUpConv(in_channels + LOW_LEVEL_CHANNELS, mid, 1, double=True)
        self.seg_conv = ConvNorm(mid, mid, 3, relu=True)
        self.predictor = nn.Conv2d(mid, num_classes, 1)

    def forward(self, s4: torch.Tensor, s8: torch.Tensor) -> torch.Tensor:
        low = self.feature_projection_s4(s4)
        y = _resize(self.att_sa(s8), low.shape[-2:])
        y = self.seg_head(torch.cat([y, low], dim=1))
        return self.predictor(self.seg_conv(y))


class HyCTAS(nn.Module):
    """The HRTLab evaluation network: normalised RGB [N,3,H,W] -> 19-class logits at stride 4."""

    def __init__(self, arch: Mapping[str, Any], num_classes: int = NUM_CLASSES):
        super().__init__()
        self.backbone = HyCTASBackbone(arch)
        self.sem_head = SemanticHead(self.backbone.out_channels, self.backbone.s4_channels,
                                     num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sem_head(*self.backbone(x))
