"""The GFL criterion: ATSS targets, then QFL + 2.0 GIoU + 0.25 DFL (docs/design.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchvision.ops import box_iou

from .assigner import atss_assign
from .box_ops import bbox2distance, distance2bbox, grid_points, integral
from .losses import distribution_focal_loss, giou_loss, quality_focal_loss
from .models.config import HeadConfig


@dataclass(frozen=True)
class LossConfig:
    qfl_beta: float = 2.0
    qfl_weight: float = 1.0
    giou_weight: float = 2.0
    dfl_weight: float = 0.25
    atss_topk: int = 9
    # Beyond the paper: a box no anchor centre falls into takes its nearest anchor, with the
    # box target stretched to reach that anchor's centre (train --assign atss-near).
    nearest: bool = True


@dataclass
class Targets:
    """Dense training targets of a batch, anchors flattened level after level."""

    labels: Tensor  # [N, A] int64 class index, num_classes for background
    boxes: Tensor  # [N, A, 4] xyxy input pixels (valid where labels < num_classes)


def _mean_over_ranks(x: Tensor) -> Tensor:
    """Average a scalar over DDP ranks so every rank normalises by the same factor."""
    if dist.is_available() and dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x = x / dist.get_world_size()
    return x


def flatten_maps(maps: Sequence[Tensor]) -> Tensor:
    """Per-level maps [N, K, H, W] -> Tensor[N, A, K], anchors level after level."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


def flatten_levels(
    cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor]
) -> Tuple[Tensor, Tensor]:
    """Per-level maps -> cls (Tensor[N, A, C]) and box logits (Tensor[N, A, 4*(R+1)])."""
    return flatten_maps(cls_scores), flatten_maps(bbox_preds)


class GFLCriterion(nn.Module):
    def __init__(self, head: HeadConfig, cfg: LossConfig = LossConfig()) -> None:
        super().__init__()
        self.head, self.cfg = head, cfg

    def priors(self, cls_scores: Sequence[Tensor]) -> Tuple[Tensor, Tensor, List[int]]:
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        return grid_points(sizes, self.head.strides, cls_scores[0].device)

    def anchors(self, points: Tensor, strides: Tensor) -> Tensor:
        """The ATSS anchor boxes (Tensor[A, 4] xyxy): anchor_scale strides square."""
        half = strides[:, None] * (self.head.anchor_scale / 2)  # [A, 1]
        return torch.cat([points - half, points + half], dim=1)

    @torch.no_grad()
    def targets(
        self, points: Tensor, strides: Tensor, counts: List[int], gt: Sequence[Dict[str, Tensor]]
    ) -> Targets:
        anchors = self.anchors(points, strides)  # [A, 4]
        labels, boxes = [], []
        for g in gt:
            idx = atss_assign(
                anchors, counts, g["boxes"], self.cfg.atss_topk, self.cfg.nearest
            )  # [A]
            pos = idx >= 0
            lab = torch.full_like(idx, self.head.num_classes)
            box = anchors.new_zeros(anchors.shape)
            lab[pos] = g["labels"][idx[pos]]
            b = g["boxes"][idx[pos]].to(box.dtype)  # [P, 4]
            pt = points[pos]  # [P, 2]
            # The box as seen from its anchor point: distances to the edges must be >= 0, so
            # a speck beside the point is regressed to the box reaching the point (a no-op
            # for the usual positives, whose point lies inside).
            box[pos] = torch.cat([torch.minimum(b[:, :2], pt), torch.maximum(b[:, 2:], pt)], 1)
            labels.append(lab)
            boxes.append(box)
        return Targets(torch.stack(labels), torch.stack(boxes))

    def forward(
        self,
        cls_scores: Sequence[Tensor],
        bbox_preds: Sequence[Tensor],
        gt: Sequence[Dict[str, Tensor]],
        targets: Optional[Targets] = None,
    ) -> Dict[str, Tensor]:
        """Losses of a batch; `gt`: per image `boxes` (Tensor[G, 4] xyxy), `labels` (Tensor[G]).
        `targets`: the assignment when the caller made it already (distillation reuses it)."""
        R = self.head.reg_max
        points, strides, counts = self.priors(cls_scores)
        t = targets if targets is not None else self.targets(points, strides, counts, gt)
        cls, reg = flatten_levels(cls_scores, bbox_preds)
        cls = cls.float()
        n, a, c = cls.shape

        pos = t.labels < c  # [N, A]
        pos_img, pos_anchor = torch.nonzero(pos, as_tuple=True)
        num_pos = _mean_over_ranks(pos.sum().float()).clamp(min=1.0)

        quality = cls.new_zeros(n, a)
        s = strides[pos_anchor][:, None]  # [P, 1]
        p = points[pos_anchor] / s  # [P, 2], in strides
        logits = reg[pos_img, pos_anchor]  # [P, 4*(R+1)]
        pred_box = distance2bbox(p, integral(logits, R))  # [P, 4], in strides
        tgt_box = t.boxes[pos_img, pos_anchor] / s  # [P, 4]
        weight = (
            cls.detach().sigmoid()[pos_img, pos_anchor].amax(dim=1)
            if pos_img.numel()
            else p.new_zeros(0)
        )
        # Every rank joins this all-reduce, with or without positives: collectives must match.
        w_sum = _mean_over_ranks(weight.sum()).clamp(min=1.0)
        if pos_img.numel():
            iou = box_iou(pred_box.detach(), tgt_box).diagonal()  # [P]
            quality[pos_img, pos_anchor] = iou.clamp(min=0)
            loss_giou = (giou_loss(pred_box, tgt_box) * weight).sum() / w_sum
            corners = bbox2distance(p, tgt_box, R).reshape(-1)  # [P*4]
            dfl = distribution_focal_loss(logits.reshape(-1, R + 1), corners)  # [P*4]
            loss_dfl = (dfl * weight.repeat_interleave(4)).sum() / 4.0 / w_sum
        else:  # no box in this batch: box losses are exactly zero but keep the graph
            loss_giou = reg.sum() * 0.0
            loss_dfl = reg.sum() * 0.0

        loss_qfl = (
            quality_focal_loss(
                cls.reshape(n * a, c),
                t.labels.reshape(-1),
                quality.reshape(-1),
                self.cfg.qfl_beta,
                "sum",
            )
            / num_pos
        )
        return {
            "loss_qfl": self.cfg.qfl_weight * loss_qfl,
            "loss_giou": self.cfg.giou_weight * loss_giou,
            "loss_dfl": self.cfg.dfl_weight * loss_dfl,
        }
