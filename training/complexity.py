"""Parameters and multiply-accumulates, counted by torch's own FlopCounterMode (not by hand)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from .models.config import DetectorConfig
from .models.gfl import GFL


@dataclass(frozen=True)
class Complexity:
    params_total: int
    params_trainable: int
    gmacs: float  # 1e9 multiply-accumulates for one image (FlopCounterMode FLOPs / 2)


def measure(cfg: DetectorConfig, size_wh: Tuple[int, int]) -> Complexity:
    """Count on the meta device: no memory, no arithmetic, exact shapes."""
    with torch.device("meta"):
        model = GFL(cfg).eval()
        x = torch.empty(1, 3, size_wh[1], size_wh[0])
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return Complexity(total, trainable, counter.get_total_flops() / 2 / 1e9)
