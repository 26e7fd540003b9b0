"""Training-only modules of the distillation: dropped when the student is saved."""

from __future__ import annotations

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
