"""Detector builder: model, criterion and postprocess are three modules built together."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from .config import DetectorConfig


def build_detector(
    cfg: DetectorConfig, backbone_weights: Optional[Path] = None, nearest: bool = True
) -> Tuple:
    """(GFL model, GFLCriterion, GFLPostprocess) for `cfg`. `nearest`: ATSS gives a box
    without positives its nearest anchor (False: the paper's plain ATSS)."""
    from ..criterion import GFLCriterion, LossConfig
    from ..postprocess import GFLPostprocess
    from .gfl import GFL

    return (
        GFL(cfg, backbone_weights),
        GFLCriterion(cfg.head, LossConfig(nearest=nearest)),
        GFLPostprocess(cfg.head),
    )
