"""The HybridNets multi-task network: detection + drivable-area/lane segmentation."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .bifpn import BiFPN
from .efficientnet import EfficientNetEncoder
from .heads import BiFPNDecoder, Classifier, Regressor, SegmentationHead


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture hyper-parameters; the defaults are HybridNets-D3 trained on BDD100K."""

    encoder: str = "efficientnet-b3"
    fpn_channels: int = 160
    fpn_cells: int = 6
    head_layers: int = 4
    num_classes: int = 1
    num_anchors: int = 9
    seg_classes: int = 3  # background, road, lane


class HybridNets(nn.Module):
    """Image tensor [B,3,H,W] (H, W multiples of 128) to raw outputs.

    Returns ``(regression [B,N,4], classification [B,N,C], segmentation [B,S,H,W])``;
    anchors are pure geometry and come from :mod:`hybridnets_ros.anchors`.
    """

    def __init__(self, config: NetworkConfig = NetworkConfig()):
        super().__init__()
        self.config = config
        self.encoder = EfficientNetEncoder(config.encoder)
        p2_ch, *p345_ch = self.encoder.out_channels
        self.bifpn = nn.Sequential(*(
            BiFPN(config.fpn_channels, tuple(p345_ch), first=i == 0) for i in range(config.fpn_cells)))
        self.regressor = Regressor(config.fpn_channels, config.num_anchors, config.head_layers)
        self.classifier = Classifier(config.fpn_channels, config.num_anchors, config.num_classes,
                                     config.head_layers)
        self.bifpndecoder = BiFPNDecoder(config.fpn_channels, p2_ch)
        self.segmentation_head = SegmentationHead(64, config.seg_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p2, p3, p4, p5 = self.encoder(x)
        pyramid = self.bifpn((p3, p4, p5))
        segmentation = self.segmentation_head(self.bifpndecoder(p2, pyramid))
        return self.regressor(pyramid), self.classifier(pyramid), segmentation
