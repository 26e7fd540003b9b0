"""GFL detector = ResNet + FPN + GFL head; input RGB float 0-255, normalised inside."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .backbone import ResNetBackbone
from .config import DetectorConfig
from .fpn import FPN
from .gfl_head import GFLHead

# ImageNet statistics in 0-255 RGB: normalising inside the model keeps the ONNX input raw pixels.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class GFL(nn.Module):
    def __init__(self, cfg: DetectorConfig, backbone_weights: Optional[Path] = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone = ResNetBackbone(cfg.backbone, backbone_weights)
        self.neck = FPN(self.backbone.out_channels, cfg.fpn)
        self.head = GFLHead(cfg.fpn.channels, cfg.head)

    def features(self, images: Tensor) -> List[Tensor]:
        """FPN levels P3..P7, each [N, C, H/s, W/s]: what feature distillation compares."""
        x = (images - self.mean) / self.std  # [N, 3, H, W]
        return self.neck(self.backbone(x))

    def forward(self, images: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
        """Raw head outputs per level: cls logits [N, C, h, w], box logits [N, 4*(R+1), h, w]."""
        return self.head(self.features(images))
