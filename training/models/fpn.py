"""FPN on C3-C5 -> P3..P7 (mmdetection's GFL neck: extra convs on P5's output)."""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edge.errors import FodError

from .carafe import CARAFE
from .config import FPNConfig


class FPN(nn.Module):
    def __init__(self, in_channels: Sequence[int], cfg: FPNConfig) -> None:
        super().__init__()
        if cfg.upsample not in ("nearest", "carafe"):
            raise FodError(f"FPN upsample must be 'nearest' or 'carafe', got {cfg.upsample!r}")
        c = cfg.channels
        self.lateral = nn.ModuleList(nn.Conv2d(ch, c, 1) for ch in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in in_channels)
        n_extra = cfg.num_outs - len(in_channels)
        self.extra = nn.ModuleList(nn.Conv2d(c, c, 3, stride=2, padding=1) for _ in range(n_extra))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # One upsampler per top-down step (CARAFE is created after the xavier init: its own init).
        self.upsample = nn.ModuleList(
            CARAFE(c) if cfg.upsample == "carafe" else nn.Identity()
            for _ in range(len(in_channels) - 1)
        )
        self.use_carafe = cfg.upsample == "carafe"

    def _up(self, i: int, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.use_carafe:
            x = self.upsample[i](x)
            return x[..., : like.shape[-2], : like.shape[-1]]  # odd sizes: crop the extra row/col
        return F.interpolate(x, size=like.shape[-2:], mode="nearest")

    def forward(self, feats: List[torch.Tensor]) -> List[torch.Tensor]:
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]  # [N, C, H_l, W_l] per level
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + self._up(i - 1, lat[i], lat[i - 1])
        outs = [conv(x) for conv, x in zip(self.output, lat)]  # P3, P4, P5
        x = outs[-1]
        for conv in self.extra:  # P6 from P5's output, P7 from P6 (no ReLU between, as GFL)
            x = conv(x)
            outs.append(x)
        return outs
