"""Box ops for distance-based detectors: points + side distances <-> xyxy, distribution integral.

IoU and GIoU come from torchvision.ops; only what torchvision lacks lives here.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor


def grid_points(
    sizes: Sequence[Tuple[int, int]], strides: Sequence[int], device: torch.device
) -> Tuple[Tensor, Tensor, List[int]]:
    """Centres of every feature cell, level after level.

    Returns points (Tensor[A, 2], xy input pixels, cell centres), the stride of each
    point (Tensor[A]) and the number of points per level.
    """
    pts, strd, counts = [], [], []
    for (h, w), s in zip(sizes, strides):
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        pts.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))  # [H*W, 2]
        strd.append(torch.full((h * w,), float(s), device=device))
        counts.append(h * w)
    return torch.cat(pts), torch.cat(strd), counts


def distance2bbox(
    points: Tensor, distance: Tensor, max_shape: Optional[Tuple[int, int]] = None
) -> Tensor:
    """points (Tensor[..., 2]) + (left, top, right, bottom) (Tensor[..., 4]) -> Tensor[..., 4] xyxy.

    `max_shape` (H, W) clips the boxes to the image.
    """
    x1 = points[..., 0] - distance[..., 0]
    y1 = points[..., 1] - distance[..., 1]
    x2 = points[..., 0] + distance[..., 2]
    y2 = points[..., 1] + distance[..., 3]
    if max_shape is not None:
        h, w = max_shape
        x1, x2 = x1.clamp(0, w), x2.clamp(0, w)
        y1, y2 = y1.clamp(0, h), y2.clamp(0, h)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def bbox2distance(
    points: Tensor, boxes: Tensor, max_dis: Optional[float] = None, eps: float = 0.01
) -> Tensor:
    """Inverse of distance2bbox: (Tensor[N, 2], Tensor[N, 4]) -> Tensor[N, 4] side distances.

    With `max_dis`, distances are clamped to [0, max_dis - eps] so that the DFL's right
    bin (floor + 1) stays inside the distribution.
    """
    d = torch.stack(
        [
            points[:, 0] - boxes[:, 0],
            points[:, 1] - boxes[:, 1],
            boxes[:, 2] - points[:, 0],
            boxes[:, 3] - points[:, 1],
        ],
        dim=1,
    )
    if max_dis is not None:
        d = d.clamp(min=0, max=max_dis - eps)
    return d


def integral(dist_logits: Tensor, reg_max: int) -> Tensor:
    """Expected side distance of a discrete distribution: sum_i i * softmax(z)_i.

    dist_logits (Tensor[..., 4 * (reg_max + 1)]) -> Tensor[..., 4], in strides.
    """
    shape = dist_logits.shape[:-1]
    p = dist_logits.reshape(*shape, 4, reg_max + 1).softmax(dim=-1)  # [..., 4, R+1]
    project = torch.arange(reg_max + 1, device=p.device, dtype=p.dtype)
    return p @ project  # [..., 4]
