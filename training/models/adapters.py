"""Training-only modules of the distillation: dropped when the student is saved."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ResidualAdapter(nn.Module):
    """R_l of the residual feature distillation: 1x1 conv, ReLU, 3x3 conv, the last one
    zero-initialised so that training starts from plain feature imitation (R = 0)."""

    def __init__(self, channels: int, hidden: int = 0) -> None:
        super().__init__()
        hidden = hidden or channels
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(hidden, channels, 3, padding=1)
        nn.init.zeros_(self.expand.weight)
        nn.init.zeros_(self.expand.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.expand(self.act(self.reduce(x)))  # [N, C, H, W]


class ResidualAdapters(nn.ModuleList):
    """One adapter per FPN level."""

    def __init__(self, channels: int, num_levels: int = 5) -> None:
        super().__init__([ResidualAdapter(channels) for _ in range(num_levels)])


class GcBlock(nn.Module):
    """FGD's global relation module R (a GCNet block, Cao et al. 2019): attention pooling
    over H x W into one context vector, a bottleneck transform (1x1 conv, LayerNorm,
    ReLU, 1x1 conv), added back to every position: R(F) = F + transform(context(F))."""

    def __init__(self, channels: int, ratio: float = 0.5) -> None:
        super().__init__()
        hidden = max(int(channels * ratio), 1)
        self.mask = nn.Conv2d(channels, 1, 1)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        weights = self.mask(x).reshape(n, 1, h * w).softmax(dim=2)  # [N, 1, HW]
        context = torch.bmm(x.reshape(n, c, h * w), weights.transpose(1, 2))  # [N, C, 1]
        return x + self.transform(context.reshape(n, c, 1, 1))  # [N, C, H, W]


class GcBlocks(nn.ModuleList):
    """One global relation module per FPN level, shared by the student's and the
    teacher's features (R in FGD's global loss)."""

    def __init__(self, channels: int, num_levels: int = 5) -> None:
        super().__init__([GcBlock(channels) for _ in range(num_levels)])
