"""The GFL head (Li et al., 2020): shared towers, per-class quality scores, box distributions."""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import nn

from .config import HeadConfig


class Scale(nn.Module):
    """A learnable scalar per pyramid level, multiplied onto the box branch."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(value, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _tower(channels: int, n: int) -> nn.Sequential:
    layers: List[nn.Module] = []
    for _ in range(n):
        layers += [
            nn.Conv2d(
                channels, channels, 3, padding=1, bias=False
            ),  # GN follows: bias is redundant
            nn.GroupNorm(32, channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class GFLHead(nn.Module):
    """Per level: cls logits [N, C, H, W] and box-side distributions [N, 4*(reg_max+1), H, W]."""

    def __init__(self, in_channels: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cls_tower = _tower(in_channels, cfg.stacked_convs)
        self.reg_tower = _tower(in_channels, cfg.stacked_convs)
        self.gfl_cls = nn.Conv2d(in_channels, cfg.num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(in_channels, 4 * (cfg.reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in cfg.strides)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.gfl_cls.bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))

    def forward(self, feats: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        cls_scores, bbox_preds = [], []
        for x, scale in zip(feats, self.scales):
            cls_scores.append(self.gfl_cls(self.cls_tower(x)))  # [N, C, H, W]
            bbox_preds.append(scale(self.gfl_reg(self.reg_tower(x))).float())  # [N, 4*(R+1), H, W]
        return cls_scores, bbox_preds
