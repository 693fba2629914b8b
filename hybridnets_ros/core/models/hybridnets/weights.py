"""HybridNets' checkpoint: where the released one is, and the seeded random weights.

The released checkpoint is the original project's GitHub release ``v1.0/hybridnets.pth``
(MIT licence): a plain ``state_dict`` that loads into :class:`HybridNets` with strict=True.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ...weights import WeightsError, load_into, read_state_dict
from .hybridnets import HybridNets
from .spec import BDD100K, ModelSpec

RELEASE_URL = "https://github.com/datvuthanh/HybridNets/releases/download/v1.0/hybridnets.pth"
WEIGHTS_FILENAME = "hybridnets.pth"
CHECKPOINT_LABEL = "HybridNets-D3"  # how errors name the network
BN_GAMMA = (0.2, 0.4)  # random BatchNorm scales; larger ones make the random net chaotic


def random_init(model: HybridNets, seed: int = 0) -> None:
    """Deterministic random weights: outputs are meaningless, but every stage runs.

    As for the golden reference checkpoint, BatchNorm statistics are then calibrated layer
    by layer, here on frames of the built-in synthetic road sequence (per-channel mean;
    per-channel variance floored at the channel average, since the tiny variances of the
    small P6/P7 maps would blow up other inputs). A random network stays well behaved only
    near its calibration data: on the demo sequence it gives some boxes and masks, on real
    photos it may flag thousands of anchors. The classifier bias is finally shifted so that
    about eight anchors per calibration frame score 0.3.
    """
    from ...synthetic import SyntheticRoad, default_camera
    from .preprocess import Preprocessor

    def calibrate(bn: torch.nn.BatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
        x = inputs[0]
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        var = x.var(dim=(0, 2, 3))
        bn.running_var.copy_(torch.maximum(var, var.mean()))

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_w1") or name.endswith("_w2"):
                p.uniform_(0.5, 1.5, generator=gen)
            elif p.dim() > 1:
                p.normal_(0.0, (1.0 / p[0].numel()) ** 0.5, generator=gen)
            elif name.endswith(".weight"):
                p.uniform_(*BN_GAMMA, generator=gen)
            else:
                p.normal_(0.0, 0.1, generator=gen)
        hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules()
                 if isinstance(m, torch.nn.BatchNorm2d)]
        scene, preprocess = SyntheticRoad(default_camera()), Preprocessor(640)
        times = (0.0, 0.5, 1.0)
        batch = np.concatenate([preprocess(scene.render(t)[0])[0].copy() for t in times])
        _, scores, _ = model.eval()(torch.from_numpy(batch))
        for hook in hooks:
            hook.remove()
        kth_best = torch.logit(scores.double().flatten()).kthvalue(scores.numel() - 8 * len(times))
        bias = model.classifier.header.pointwise_conv.conv.bias
        bias += float(torch.logit(torch.tensor(0.3, dtype=torch.float64)) - kth_best.values)


def load_module(weights: str | os.PathLike | None = None, random_weights: bool = False,
                spec: ModelSpec = BDD100K) -> HybridNets:
    """An eval-mode network with the given checkpoint, or random weights if asked."""
    model = HybridNets(spec.network)
    if weights is not None:
        load_into(model, read_state_dict(weights), str(weights), CHECKPOINT_LABEL)
    elif random_weights:
        random_init(model)
    else:
        raise WeightsError("no weights given")
    return model.eval().requires_grad_(False)
