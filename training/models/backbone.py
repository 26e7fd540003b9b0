"""ResNet backbone from torchvision returning C3, C4, C5, with frozen early stages."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch
import torchvision
from torch import nn

from edge.errors import FodError

from .config import BackboneConfig

_BUILDERS = {
    18: torchvision.models.resnet18,
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
}


class ResNetBackbone(nn.Module):
    """torchvision ResNet without avgpool/fc; forward returns [C3, C4, C5] (strides 8, 16, 32)."""

    def __init__(self, cfg: BackboneConfig, weights: Optional[Path] = None) -> None:
        super().__init__()
        if cfg.depth not in _BUILDERS:
            raise FodError(f"ResNet depth must be one of {sorted(_BUILDERS)}, got {cfg.depth}")
        # No hub downloads: weights come from a file. zero_init_residual zeroes each block's
        # last BN scale, so from scratch a deep ResNet first trains like a shallow one.
        net = _BUILDERS[cfg.depth](weights=None, zero_init_residual=cfg.zero_init_residual)
        if weights is not None:
            load_imagenet_weights(net, weights)
        self.cfg = cfg
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.out_channels: List[int] = [
            _out_channels(self.layer2),
            _out_channels(self.layer3),
            _out_channels(self.layer4),
        ]
        self._freeze()

    def _freeze(self) -> None:
        stages = [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]
        for m in stages[: self.cfg.frozen_stages + 1]:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> ResNetBackbone:
        super().train(mode)
        self._freeze()
        if mode and self.cfg.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.layer1(self.stem(x))  # [N, C2, H/4, W/4]
        c3 = self.layer2(x)  # [N, C3, H/8, W/8]
        c4 = self.layer3(c3)  # [N, C4, H/16, W/16]
        c5 = self.layer4(c4)  # [N, C5, H/32, W/32]
        return [c3, c4, c5]


def _out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    conv = last.conv3 if hasattr(last, "conv3") else last.conv2
    return int(conv.out_channels)


def load_imagenet_weights(net: nn.Module, path: Path) -> None:
    """Load a local torchvision ImageNet state dict (fc may be missing or differ)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise FodError(f"{path}: cannot read backbone weights: {e}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise FodError(
            f"{path}: not a ResNet-{type(net).__name__} state dict "
            f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})"
        )
