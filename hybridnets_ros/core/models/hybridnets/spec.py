"""What a HybridNets checkpoint means: architecture, anchors, classes, normalisation.

One place for the constants of the released BDD100K model (projects/bdd100k.yml of the
original project) so that pre-processing, post-processing, export and the node agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .hybridnets import NetworkConfig


@dataclass(frozen=True)
class ModelSpec:
    network: NetworkConfig = field(default_factory=NetworkConfig)
    anchor_scale: float = 1.25
    anchor_scales: tuple[float, ...] = (2 ** 0, 2 ** 0.70, 2 ** 1.32)
    # (x, y) aspect factors
    anchor_ratios: tuple[tuple[float, float], ...] = ((0.62, 1.58), (1.0, 1.0), (1.58, 0.62))
    pyramid_levels: tuple[int, ...] = (3, 4, 5, 6, 7)
    class_names: tuple[str, ...] = ("car",)
    seg_class_names: tuple[str, ...] = ("background", "road", "lane")
    mean_rgb: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std_rgb: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @property
    def max_stride(self) -> int:
        """Input sides must be multiples of this (the coarsest pyramid level's stride)."""
        return 2 ** max(self.pyramid_levels)


BDD100K = ModelSpec()

# Indices into the segmentation class map.
SEG_BACKGROUND, SEG_ROAD, SEG_LANE = 0, 1, 2
