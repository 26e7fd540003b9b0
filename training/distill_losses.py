"""Distillation losses as pure functions: ours (residual feature distillation) and the
baselines of the paper's table - mimic, LD (with its valuable localization region), PKD,
FGD, CrossKD's prediction losses. Formulas from the papers; conventions noted where a
public reference implementation fixes one the paper leaves open.

Feature maps are per FPN level, Tensor[N, C, H, W]; a `*_levels` function sums its
per-level loss over the levels it is given. Teacher tensors are detached here, so a
caller cannot leak gradients into a frozen teacher by mistake.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def channel_stats(f: Tensor) -> Tuple[Tensor, Tensor]:
    """Per channel mean and (population) std over (N, H, W).

    f (Tensor[N, C, H, W]) -> (Tensor[1, C, 1, 1], Tensor[1, C, 1, 1])."""
    return f.mean(dim=(0, 2, 3), keepdim=True), f.std(dim=(0, 2, 3), keepdim=True, unbiased=False)


def channel_normalize(
    f: Tensor, stats: Optional[Tuple[Tensor, Tensor]] = None, eps: float = 1e-6
) -> Tensor:
    """Per channel, zero mean and unit std over (N, H, W), as PKD normalises; by `stats`
    (another map's channel_stats) when given.

    f (Tensor[N, C, H, W]) -> Tensor[N, C, H, W]."""
    mean, std = stats if stats is not None else channel_stats(f)
    return (f - mean) / (std + eps)


FEATURES = ("raw", "own", "teacher")


def feature_view(f: Tensor, features: str, t: Optional[Tensor] = None) -> Tensor:
    """The map the residual loss compares, float: `own` normalised per channel by its own
    statistics (PKD's way; invariant to the student's scale, so the loss's gradient falls
    as 1 / the student's spread, which then grows: see test_distill_losses), `teacher` by
    the teacher map `t`'s statistics (detached; the same unit scale, without that
    invariance), `raw` as is (mimic's way).

    f, t (Tensor[N, C, H, W]) -> Tensor[N, C, H, W]."""
    f = f.float()
    if features == "raw":
        return f
    if features == "own":
        return channel_normalize(f)
    if features == "teacher":
        if t is None:
            raise ValueError("feature_view: 'teacher' needs the teacher's map")
        return channel_normalize(f, channel_stats(t.detach().float()))
    raise ValueError(f"feature_view: features must be one of {FEATURES}, got {features!r}")


def mimic_loss(s: Tensor, t: Tensor) -> Tensor:
    """Plain feature imitation: mean squared error of raw features (Tensor[N, C, H, W])."""
    return F.mse_loss(s, t.detach())


def pkd_loss(s: Tensor, t: Tensor) -> Tensor:
    """PKD (Cao et al., 2022): MSE of the per-channel normalised maps, halved, which is
    1 - the Pearson correlation of student and teacher averaged over channels."""
    return F.mse_loss(channel_normalize(s), channel_normalize(t.detach())) / 2


def residual_loss(s: Tensor, residual: Tensor, t: Tensor, lam: float = 1.0) -> Tensor:
    """Ours (residual feature distillation): a training-only adapter R models what the
    student cannot yet express,
        ( ||S + R(S) - T||^2 + lam ||S - T||^2 ) / (2 N C H W),
    on the maps the method compares, given as such (`feature_view`: normalised per
    channel or raw; the caller makes each level's view once, for the adapter and this
    loss). The mean over channels too (where the design's formula writes 2 N H W) keeps
    the loss on PKD's scale, so PKD's weight 6 applies: on maps normalised by their own
    statistics at initialisation (R = 0) it is exactly (1 + lam) x the PKD term, whatever
    the FPN width; on raw maps at R = 0 and lam = 1 it is exactly the mimic loss.
    `residual` is R(S), the caller's adapter on `s`.

    s, residual, t (Tensor[N, C, H, W]) -> scalar."""
    t = t.detach()
    full = (s + residual - t).pow(2).sum()
    direct = (s - t).pow(2).sum()
    return (full + lam * direct) / (2 * s.numel())


@torch.no_grad()
def feature_gap(s: Sequence[Tensor], t: Sequence[Tensor]) -> Tensor:
    """How far the student's maps are from the teacher's (a diagnostic, detached): the
    mean squared difference per level, averaged over the levels.

    s, t (per level Tensor[N, C, H, W]) -> scalar."""
    return torch.stack([(a.float() - b.float()).pow(2).mean() for a, b in zip(s, t)]).mean()


@torch.no_grad()
def residual_absorbed(
    s: Sequence[Tensor], residual: Sequence[Tensor], t: Sequence[Tensor]
) -> Tensor:
    """The share of the student's gap to the teacher that the adapters take over (a
    diagnostic, detached): 1 - sum ||S + R(S) - T||^2 / sum ||S - T||^2 over the levels.
    0 at the zero-initialised start; 1 when R(S) = T - S, where residual_loss's first
    term no longer pulls S and only its lam term does (half of the pull at lam = 1);
    negative while the adapters widen the gap; 0 where there is no gap.

    s, residual, t (per level Tensor[N, C, H, W]) -> scalar."""
    full = sum((a.float() + r.float() - b.float()).pow(2).sum() for a, r, b in zip(s, residual, t))
    direct = sum((a.float() - b.float()).pow(2).sum() for a, b in zip(s, t))
    return torch.where(direct > 0, 1 - full / direct.clamp_min(1e-30), direct.new_zeros(()))


def ld_loss(
    s_logits: Tensor,
    t_logits: Tensor,
    weight: Optional[Tensor] = None,
    temperature: float = 10.0,
) -> Tensor:
    """LD (Zheng et al., 2022): KL(softmax(t / T) || softmax(s / T)) * T^2 per box side.

    s_logits, t_logits (Tensor[M, R+1]): one box side's distance distribution per row.
    weight (Tensor[M]): per-row weight (the student's max class score of the positive).
    Returns the weighted sum over rows; as mmdetection's implementation (the reference the
    published weight 0.25 belongs to), the KL is averaged over the R+1 bins, not summed.
    """
    if s_logits.numel() == 0:
        return s_logits.sum() * 0.0
    T = temperature
    log_p = F.log_softmax(s_logits / T, dim=1)  # [M, R+1]
    q = F.softmax(t_logits.detach() / T, dim=1)  # [M, R+1]
    kl = F.kl_div(log_p, q, reduction="none").mean(dim=1) * T * T  # [M]
    if weight is not None:
        kl = kl * weight
    return kl.sum()


def vlr_weights(ious: Tensor, thresholds: Tensor, low: float = 0.25) -> Tensor:
    """LD's valuable localization region: an anchor whose IoU with some box lies in
    [low * thr, thr), thr being that box's ATSS threshold, weighted by that IoU (the
    largest over such boxes); 0 elsewhere.

    ious (Tensor[A, G]), thresholds (Tensor[G]) -> Tensor[A]."""
    if ious.numel() == 0:
        return ious.new_zeros(ious.shape[0])
    inside = (ious >= low * thresholds[None, :]) & (ious < thresholds[None, :])  # [A, G]
    return torch.where(inside, ious, torch.zeros_like(ious)).amax(dim=1)


def fgd_masks(boxes: Tensor, size: Sequence[int], stride: float) -> Tuple[Tensor, Tensor]:
    """FGD's foreground and background masks of one image at one level.

    boxes (Tensor[G, 4]) xyxy input pixels; size (H, W) of the level. The foreground mask
    is 1 / (h w) over each box's cells (h, w: the box's extent in cells; the largest value
    where boxes overlap); the background mask is 1 outside every box, divided by the
    number of such cells. Rows index y and columns x. -> (Tensor[H, W], Tensor[H, W])."""
    h, w = int(size[0]), int(size[1])
    fg = boxes.new_zeros(h, w)
    for x0, y0, x1, y1 in (boxes / stride).tolist():
        c0, c1 = max(0, math.floor(x0)), min(w, math.ceil(x1))
        r0, r1 = max(0, math.floor(y0)), min(h, math.ceil(y1))
        if c1 <= c0 or r1 <= r0:
            continue
        area = 1.0 / ((r1 - r0) * (c1 - c0))
        fg[r0:r1, c0:c1] = fg[r0:r1, c0:c1].clamp(min=area)
    bg = (fg == 0).to(fg.dtype)
    return fg, bg / bg.sum().clamp(min=1.0)


def fgd_attention(f: Tensor, temperature: float = 0.5) -> Tuple[Tensor, Tensor]:
    """FGD's spatial attention H W softmax(mean_c |F| / T) over H x W, and channel
    attention C softmax(mean_hw |F| / T) over C. f (Tensor[N, C, H, W]) ->
    (Tensor[N, H, W], Tensor[N, C])."""
    n, c, h, w = f.shape
    a = f.abs()
    spatial = h * w * F.softmax((a.mean(dim=1) / temperature).reshape(n, -1), dim=1)
    channel = c * F.softmax(a.mean(dim=(2, 3)) / temperature, dim=1)
    return spatial.reshape(n, h, w), channel


def fgd_loss(
    s: Tensor,
    t: Tensor,
    fg: Tensor,
    bg: Tensor,
    temperature: float = 0.5,
    alpha: float = 1e-3,
    beta: float = 5e-4,
    gamma: float = 5e-4,
) -> Tensor:
    """FGD (Yang et al., 2022) less its global term (`fgd_global_loss`, added beside): focal
    imitation, foreground and background separately, weighted by the teacher's spatial
    and channel attention, plus the attention-imitation term.

    s, t (Tensor[N, C, H, W]); fg, bg (Tensor[N, H, W]) from `fgd_masks`."""
    t = t.detach()
    ts, tc = fgd_attention(t, temperature)  # [N, H, W], [N, C]
    ss, sc = fgd_attention(s, temperature)
    sq = (s - t).pow(2) * ts[:, None] * tc[:, :, None, None]  # [N, C, H, W]
    fg_loss = (sq * fg[:, None]).sum()
    bg_loss = (sq * bg[:, None]).sum()
    att = (ss - ts).abs().sum() + (sc - tc).abs().sum()
    n = s.shape[0]
    return (alpha * fg_loss + beta * bg_loss + gamma * att) / n


def fgd_global_loss(s_global: Tensor, t_global: Tensor, lam: float = 5e-6) -> Tensor:
    """FGD's global relation term: lambda * sum (R(F_T) - R(F_S))^2 / N, with R the
    GcBlock both feature maps go through (training-only, `models.adapters.GcBlocks`). The
    teacher's features carry no gradient; R learns from both sides.

    s_global, t_global (Tensor[N, C, H, W]): R(F_S), R(F_T)."""
    return lam * (s_global - t_global).pow(2).sum() / s_global.shape[0]


def quality_focal_kd(s_logits: Tensor, t_logits: Tensor, beta: float = 1.0) -> Tensor:
    """CrossKD's classification term: quality focal loss towards the teacher's scores,
    BCE(s, sigmoid(t)) * |sigmoid(t) - sigmoid(s)|^beta per class.

    s_logits, t_logits (Tensor[M, C]) -> Tensor[M] (summed over classes)."""
    q = t_logits.detach().sigmoid()
    bce = F.binary_cross_entropy_with_logits(s_logits, q, reduction="none")
    return (bce * (q - s_logits.sigmoid()).abs().pow(beta)).sum(dim=1)


def levels(
    fn: Callable[..., Tensor], s_feats: Sequence[Tensor], t_feats: Sequence[Tensor], **kw
) -> Tensor:
    """Sum a per-level loss over FPN levels (the student's and teacher's in order)."""
    if len(s_feats) != len(t_feats):
        raise ValueError(f"{len(s_feats)} student levels, {len(t_feats)} teacher levels")
    return torch.stack([fn(s, t, **kw) for s, t in zip(s_feats, t_feats)]).sum()
