"""Test-time decoding: dense boxes and scores, then per-level top-k, threshold, class-wise NMS."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from edge.postprocess import PostprocessConfig  # one rule, shared with the device

from .box_ops import distance2bbox, grid_points, integral
from .criterion import flatten_levels
from .models.config import HeadConfig


def decode_dense(
    cls_scores: Sequence[Tensor],
    bbox_preds: Sequence[Tensor],
    head: HeadConfig,
    image_hw: Tuple[int, int],
) -> Tuple[Tensor, Tensor, List[int]]:
    """Every anchor point's box and class scores, as the exported ONNX graph outputs them.

    Returns boxes (Tensor[N, A, 4], xyxy input pixels, clipped), scores (Tensor[N, A, C],
    after sigmoid) and the number of points per level.
    """
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    points, strides, counts = grid_points(sizes, head.strides, cls_scores[0].device)
    cls, reg = flatten_levels(cls_scores, bbox_preds)  # [N, A, C], [N, A, 4*(R+1)]
    dist = integral(reg.float(), head.reg_max) * strides[None, :, None]  # [N, A, 4] px
    boxes = distance2bbox(points[None], dist, max_shape=image_hw)  # [N, A, 4]
    return boxes, cls.float().sigmoid(), counts


def select_per_image(
    boxes: Tensor, scores: Tensor, counts: Sequence[int], cfg: PostprocessConfig
) -> Dict[str, Tensor]:
    """One image: boxes (Tensor[A, 4]), scores (Tensor[A, C]) -> kept boxes, scores, labels."""
    num_classes = scores.shape[1]
    kb, ks, kl = [], [], []
    start = 0
    for n in counts:
        s = scores[start : start + n].reshape(-1)  # [n*C]
        keep = torch.nonzero(s > cfg.score_threshold, as_tuple=True)[0]
        if keep.numel() > cfg.nms_pre:
            keep = keep[s[keep].topk(cfg.nms_pre).indices]
        anchor = keep // num_classes + start
        kb.append(boxes[anchor])
        ks.append(s[keep])
        kl.append(keep % num_classes)
        start += n
    b, s, lab = torch.cat(kb), torch.cat(ks), torch.cat(kl)
    keep = batched_nms(b, s, lab, cfg.nms_iou)[: cfg.max_per_image]
    return {"boxes": b[keep], "scores": s[keep], "labels": lab[keep]}


class GFLPostprocess(nn.Module):
    """Raw head outputs -> detections per image (input-pixel xyxy, score, 0-based label)."""

    def __init__(self, head: HeadConfig, cfg: Optional[PostprocessConfig] = None) -> None:
        super().__init__()
        self.head, self.cfg = head, cfg if cfg is not None else PostprocessConfig()

    @torch.no_grad()
    def forward(
        self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], image_hw: Tuple[int, int]
    ) -> List[Dict[str, Tensor]]:
        boxes, scores, counts = decode_dense(cls_scores, bbox_preds, self.head, image_hw)
        return [select_per_image(b, s, counts, self.cfg) for b, s in zip(boxes, scores)]
