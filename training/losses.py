"""GFL losses as pure functions (Li et al., 2020), with mmdetection's conventions.

Each returns per-element losses for reduction="none", else their sum or mean;
normalisation by the number of positives is the criterion's job.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def quality_focal_loss(
    logits: Tensor, labels: Tensor, quality: Tensor, beta: float = 2.0, reduction: str = "none"
) -> Tensor:
    """QFL: BCE against a soft IoU target, down-weighted by |target - sigmoid|^beta.

    Args:
        logits (Tensor[N, C]): class logits.
        labels (Tensor[N]): class index of each positive; C (or any value >= C) for background.
        quality (Tensor[N]): IoU target of each positive (ignored for background).
    Returns:
        Tensor[N] (summed over classes) for reduction="none".
    """
    num_classes = logits.shape[1]
    sigma = logits.sigmoid()
    # Every class starts as a negative: target 0, modulated by sigma^beta.
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    loss = loss * sigma.pow(beta)  # [N, C]
    pos = torch.nonzero((labels >= 0) & (labels < num_classes), as_tuple=True)[0]
    if pos.numel():
        cls = labels[pos]
        q = quality[pos].to(logits.dtype)
        z = logits[pos, cls]
        pos_loss = F.binary_cross_entropy_with_logits(z, q, reduction="none") * (
            q - sigma[pos, cls]
        ).abs().pow(beta)
        loss = loss.index_put((pos, cls), pos_loss)
    return _reduce(loss.sum(dim=1), reduction)


def distribution_focal_loss(dist_logits: Tensor, target: Tensor, reduction: str = "none") -> Tensor:
    """DFL: cross-entropy on the two bins around a continuous target, weighted by closeness.

    Args:
        dist_logits (Tensor[M, R+1]): logits of one side's distance distribution.
        target (Tensor[M]): distance in strides, in [0, R).
    Returns:
        Tensor[M] for reduction="none".
    """
    left = target.long()
    right = left + 1
    w_left = right.float() - target
    w_right = target - left.float()
    loss = (
        F.cross_entropy(dist_logits, left, reduction="none") * w_left
        + F.cross_entropy(dist_logits, right, reduction="none") * w_right
    )
    return _reduce(loss, reduction)


def giou_loss(pred: Tensor, target: Tensor, reduction: str = "none") -> Tensor:
    """1 - GIoU of aligned xyxy boxes (Tensor[N, 4] each) -> Tensor[N]; torchvision's op."""
    if pred.numel() == 0:
        return _reduce(pred.sum(dim=1), reduction)
    return _reduce(generalized_box_iou_loss(pred, target, reduction="none"), reduction)
