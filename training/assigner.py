"""ATSS assignment (Zhang et al., CVPR 2020): adaptive IoU threshold per ground-truth box."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

INSIDE_EPS = 0.01  # a candidate's centre must lie this far inside its box (px)


def atss_assign(
    anchors: Tensor,
    num_per_level: Sequence[int],
    gt_boxes: Tensor,
    topk: int = 9,
    nearest: bool = False,
) -> Tensor:
    """Match anchors to ground truth.

    For each box: the `topk` anchors per level nearest its centre are candidates; those
    whose IoU reaches mean + std of the candidates' IoUs and whose centre lies inside
    the box are positive. An anchor positive for several boxes goes to the highest IoU.
    With `nearest`, a box left without any positive (a 2-5 px speck between the stride-8
    centres) takes its nearest candidate: it is trained on instead of being background.

    Args:
        anchors (Tensor[A, 4]): xyxy anchor boxes, level after level.
        num_per_level: anchors in each level (sums to A).
        gt_boxes (Tensor[G, 4]): xyxy boxes of one image.
    Returns:
        Tensor[A] (int64): index of the assigned box, -1 for background.
    """
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    assigned = anchors.new_full((num_anchors,), -1, dtype=torch.long)
    if num_gt == 0 or num_anchors == 0:
        return assigned

    overlaps = box_iou(anchors, gt_boxes)  # [A, G]
    a_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2  # [A, 2]
    cand = _candidates(anchors, num_per_level, gt_boxes, topk)  # [K, G]

    cand_iou = overlaps.gather(0, cand)  # [K, G]
    thr = _threshold(cand_iou)  # [G]
    is_pos = cand_iou >= thr[None, :]

    cx, cy = a_ctr[cand, 0], a_ctr[cand, 1]  # [K, G]
    inside = (
        torch.stack(
            [cx - gt_boxes[:, 0], cy - gt_boxes[:, 1], gt_boxes[:, 2] - cx, gt_boxes[:, 3] - cy],
            dim=0,
        ).amin(dim=0)
        > INSIDE_EPS
    )  # [K, G]
    is_pos &= inside
    if nearest:
        orphan = ~is_pos.any(dim=0)  # [G]
        if orphan.any():
            g_ctr = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # [G, 2]
            d = (a_ctr[cand] - g_ctr[None]).norm(dim=2)  # [K, G]
            near = d.argmin(dim=0)  # [G]
            cols = torch.nonzero(orphan, as_tuple=True)[0]
            is_pos[near[cols], cols] = True

    iou_pos = torch.full_like(overlaps, -float("inf"))  # [A, G]
    g_idx = torch.arange(num_gt, device=anchors.device).expand_as(cand)
    iou_pos[cand[is_pos], g_idx[is_pos]] = overlaps[cand[is_pos], g_idx[is_pos]]
    best, best_gt = iou_pos.max(dim=1)  # [A]
    return torch.where(best > -float("inf"), best_gt, assigned)


def _candidates(
    anchors: Tensor, num_per_level: Sequence[int], gt_boxes: Tensor, topk: int
) -> Tensor:
    """Per box, the `topk` anchors of each level nearest its centre. -> Tensor[K, G]."""
    a_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2  # [A, 2]
    g_ctr = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # [G, 2]
    dist = torch.cdist(a_ctr, g_ctr)  # [A, G]
    candidates = []
    start = 0
    for n in num_per_level:
        k = min(topk, n)
        _, idx = dist[start : start + n].topk(k, dim=0, largest=False)  # [k, G]
        candidates.append(idx + start)
        start += n
    return torch.cat(candidates, dim=0)  # [K, G]


def _threshold(cand_iou: Tensor) -> Tensor:
    """mean + std of the candidates' IoUs per box. cand_iou (Tensor[K, G]) -> Tensor[G]
    (NaN for a single candidate: none passes)."""
    return cand_iou.mean(0) + cand_iou.std(0)


def atss_thresholds(
    anchors: Tensor, num_per_level: Sequence[int], gt_boxes: Tensor, topk: int = 9
) -> Tensor:
    """Each box's ATSS IoU threshold, as `atss_assign` computes it (LD's valuable
    localization region is defined against it). -> Tensor[G]."""
    if gt_boxes.shape[0] == 0 or anchors.shape[0] == 0:
        return anchors.new_zeros(gt_boxes.shape[0])
    cand = _candidates(anchors, num_per_level, gt_boxes, topk)
    return _threshold(box_iou(anchors, gt_boxes).gather(0, cand))
