"""`fod distill`: a student GFL learns from a frozen teacher (the paper's method and the
baselines of its table), through the same loop as `fod train`.

Each batch is one augmented view per image: the teacher gets it clean, the student the
same pixels with the student noise (`--no-noise`: clean too). The student's own GFL
losses always apply; the method adds:
- ours: residual feature distillation on every FPN level (training-only adapters R_l,
  `--no-residual`: plain imitation) on the raw maps (`--features`: each normalised per
  channel by its own statistics as PKD, or both by the teacher's) + LD on the positives
  and the valuable localization region (`--no-ld`);
- mimic (raw feature MSE), pkd (normalised), fgd (focal and attention imitation, and the
  global relation term through training-only GcBlocks), ld (LD alone), crosskd (the
  student's head features run through the teacher's last tower conv and predictors),
  none (the student alone).
The adapters are saved only for resuming: best.pt / last.pt are a plain GFL checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from calibration.noise import NoiseConfig
from edge.errors import FodError
from edge.fsutil import sha256_file

from .assigner import atss_thresholds
from .checkpoint import load_detector
from .criterion import Targets, flatten_levels, flatten_maps
from .data.coco import classes_hint
from .data.dataset import TrainingData
from .distill_losses import (
    FEATURES,
    channel_normalize,
    channel_stats,
    feature_gap,
    feature_view,
    fgd_global_loss,
    fgd_loss,
    fgd_masks,
    ld_loss,
    mimic_loss,
    pkd_loss,
    quality_focal_kd,
    residual_absorbed,
    residual_loss,
    vlr_weights,
)
from .engine.data import DistillSet, collate_distill
from .engine.loop import autocast
from .engine.resume import TEACHER_SHA, distill_resume_changes
from .engine.trainer import DetectorTask, TrainConfig, augment_config, fit
from .models.adapters import GcBlocks, ResidualAdapters

log = logging.getLogger(__name__)

METHODS = ("ours", "none", "mimic", "ld", "pkd", "fgd", "crosskd")


@dataclass(frozen=True)
class DistillConfig:
    teacher: Path  # a checkpoint from `fod train` (`--teacher` for the CARAFE FPN)
    method: str = "ours"
    noise: bool = True  # the student sees the noisy view (ablation: --no-noise)
    residual: bool = True  # ours: residual adapters (ablation: plain imitation)
    ld: bool = True  # ours: LD on positives and the VLR (ablation: --no-ld)
    vlr: bool = True  # LD also on the valuable localization region
    features: str = "raw"  # ours: the maps compared (distill_losses.feature_view)
    feature_weight: Optional[float] = None  # None: 1 on raw maps (mimic's), 6 on normalised (PKD's)
    residual_lambda: float = 1.0  # weight of the direct ||S - T|| term beside the residual
    ld_weight: float = 0.25
    ld_temperature: float = 10.0
    fgd_temperature: float = 0.5
    crosskd_cls_weight: float = 1.0
    crosskd_box_weight: float = 3.0

    def validate(self) -> None:
        if self.method not in METHODS:
            raise FodError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.features not in FEATURES:
            raise FodError(
                f"--features must be one of {', '.join(FEATURES)}, got {self.features!r}"
            )
        # A switch the method has no part for would run silently as if it were not given.
        m = self.method
        inert = [
            flag
            for flag, applies in (
                ("--no-residual", self.residual or m == "ours"),
                ("--no-ld", self.ld or m == "ours"),
                ("--features", self.features == "raw" or m == "ours"),
                ("--no-vlr", self.vlr or m in ("ours", "ld")),
                ("--feature-weight", self.feature_weight is None or m in ("ours", "mimic", "pkd")),
            )
            if not applies
        ]
        if inert:
            raise FodError(f"{', '.join(inert)}: no such part in --method {m}")

    def to_json(self) -> Dict[str, Any]:
        return {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()
        }


class DistillStudent(nn.Module):
    """The student and its training-only adapters in one module, so DDP wraps one thing
    and every trained parameter is used inside its forward. `cross_head`: the teacher's
    head for CrossKD, held outside the module's parameters (frozen, not saved).
    `relation`: FGD's GcBlocks, applied to the student's and the teacher's features.
    `features`: the view of the maps the adapters and the loss see (feature_view)."""

    def __init__(
        self,
        detector: nn.Module,
        adapters: Optional[nn.ModuleList],
        cross_head: Optional[nn.Module] = None,
        relation: Optional[nn.ModuleList] = None,
        features: str = "raw",
    ) -> None:
        super().__init__()
        self.detector = detector
        self.adapters = adapters
        self.features = features
        self.relation = relation
        self._cross = [cross_head] if cross_head is not None else []  # a list: not registered

    def forward(self, x: Tensor, t_feats: Optional[List[Tensor]] = None) -> Dict[str, Any]:
        """-> feats, cls, reg (per level), compared (the student's maps as the residual loss
        compares them, feature_view; empty without adapters), residuals (the adapters' output
        on them; empty without adapters), cross (CrossKD's (cls, reg) per level, given
        the teacher's features; else empty) and relation ((R(F_S), R(F_T)) per level for
        FGD, given the teacher's features; else empty)."""
        feats = self.detector.features(x)
        cls, reg = self.detector.head(feats)
        compared: List[Tensor] = []
        residuals: List[Tensor] = []
        if self.adapters is not None:
            tf = t_feats if t_feats is not None else [None] * len(feats)
            compared = [feature_view(f, self.features, t) for f, t in zip(feats, tf)]
            residuals = [a(c) for a, c in zip(self.adapters, compared)]
        cross = []
        if self._cross and t_feats is not None:
            cross = [
                _head_cross(self.detector.head, self._cross[0], f, tf, i)
                for i, (f, tf) in enumerate(zip(feats, t_feats))
            ]
        relation = []
        if self.relation is not None and t_feats is not None:
            relation = [
                (r(f.float()), r(tf.float())) for r, f, tf in zip(self.relation, feats, t_feats)
            ]
        return {
            "feats": feats,
            "cls": cls,
            "reg": reg,
            "compared": compared,
            "residuals": residuals,
            "cross": cross,
            "relation": relation,
        }


def _head_cross(student_head: nn.Module, teacher_head: nn.Module, s: Tensor, t: Tensor, level: int):
    """CrossKD: the student's tower output before its last conv, moved to the teacher's
    per-channel statistics there, through the teacher's last conv block and predictors."""
    k = 3 * (len(student_head.cls_tower) // 3 - 1)  # modules before the last conv block

    def cross(s_tower: nn.Sequential, t_tower: nn.Sequential) -> Tensor:
        xs = s_tower[:k](s)  # [N, C, H, W]
        with torch.no_grad():
            mean, std = channel_stats(t_tower[:k](t))  # [1, C, 1, 1] each
        return t_tower[k:](channel_normalize(xs) * std + mean)

    cls = teacher_head.gfl_cls(cross(student_head.cls_tower, teacher_head.cls_tower))
    reg = teacher_head.scales[level](
        teacher_head.gfl_reg(cross(student_head.reg_tower, teacher_head.reg_tower))
    )
    return cls, reg


class DistillTask(DetectorTask):
    def __init__(self, cfg: TrainConfig, dcfg: DistillConfig, data: TrainingData) -> None:
        super().__init__(dataclasses.replace(cfg, teacher=False), data)
        teacher, tcfg, names, _ = load_detector(dcfg.teacher)
        if names != data.class_names:
            raise FodError(
                f"{dcfg.teacher}: teacher classes {names}, the data has {data.class_names}"
                + classes_hint(names, data.class_names)
            )
        if tcfg.fpn.channels != self.detector_config.fpn.channels:
            raise FodError(
                f"{dcfg.teacher}: teacher FPN has {tcfg.fpn.channels} channels, the student "
                f"{self.detector_config.fpn.channels}: feature distillation needs them equal"
            )
        if (
            dcfg.method == "crosskd"
            and tcfg.head.stacked_convs != self.detector_config.head.stacked_convs
        ):
            raise FodError("crosskd needs the teacher's and student's heads alike (stacked convs)")
        self.teacher = teacher.eval()
        self.teacher_sha = sha256_file(dcfg.teacher)  # checked on --resume
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.dcfg = dcfg
        self.resume = cfg.resume
        adapters = None
        if dcfg.method == "ours" and dcfg.residual:
            adapters = ResidualAdapters(self.detector_config.fpn.channels, len(tcfg.head.strides))
        cross = self.teacher.head if dcfg.method == "crosskd" else None
        relation = (
            GcBlocks(self.detector_config.fpn.channels, len(tcfg.head.strides))
            if dcfg.method == "fgd"
            else None
        )
        self.module = DistillStudent(self.detector, adapters, cross, relation, dcfg.features)
        noise = NoiseConfig() if dcfg.noise else NoiseConfig(p=0.0)
        self.dataset = DistillSet(data, augment_config(cfg), noise, cfg.seed)
        self.collate = collate_distill

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        self.teacher.eval()  # the loop sets train() on what it trains; the teacher stays frozen

    def config_json(self) -> Dict[str, Any]:
        return {**self.dcfg.to_json(), TEACHER_SHA: self.teacher_sha}

    def extra_state(self) -> Dict[str, Any]:
        extra: Dict[str, Any] = {
            "distill_config": {**self.config_json(), "teacher_fpn": self.teacher.cfg.fpn.upsample}
        }
        for name in ("adapters", "relation"):  # only to resume; not part of the student
            m = getattr(self.module, name)
            if m is not None:
                extra[name] = {k: v.detach().cpu() for k, v in m.state_dict().items()}
        return extra

    def load_extra_state(self, ckpt: Dict[str, Any]) -> None:
        for change in distill_resume_changes(ckpt.get("distill_config"), self.config_json()):
            log.warning("--resume %s: %s", self.resume, change)
        for name in ("adapters", "relation"):
            m = getattr(self.module, name)
            if m is not None and name in ckpt:
                m.load_state_dict(ckpt[name])

    def losses(
        self, net: nn.Module, batch: Any, device: torch.device, amp: bool
    ) -> Dict[str, Tensor]:
        t_img, s_img, targets = batch
        xs = s_img.to(device, non_blocking=True).float()  # the same view, with student noise
        gt = [{k: v.to(device) for k, v in t.items()} for t in targets]
        d, m = self.dcfg, self.dcfg.method
        t_feats: List[Tensor] = []
        t_cls: List[Tensor] = []
        t_reg: List[Tensor] = []
        if m != "none":  # the student alone: its cost is the student's, no teacher pass
            self.teacher.to(device)
            xt = t_img.to(device, non_blocking=True).float()  # [N, 3, H, W] 0-255, clean
            with torch.no_grad(), autocast(device, amp):
                t_feats = self.teacher.features(xt)
                t_cls, t_reg = self.teacher.head(t_feats)
        with autocast(device, amp):
            o = net(xs, t_feats if m in ("crosskd", "fgd", "ours") else None)
        cls = [c.float() for c in o["cls"]]
        reg = [r.float() for r in o["reg"]]
        feats = [f.float() for f in o["feats"]]
        residuals = o["residuals"]
        t_feats = [f.float() for f in t_feats]
        points, strides, counts = self.criterion.priors(cls)
        assignment = self.criterion.targets(points, strides, counts, gt)
        out = self.criterion(cls, reg, gt, targets=assignment)
        raw = m == "mimic" or (m == "ours" and d.features == "raw")
        fw = d.feature_weight if d.feature_weight is not None else (1.0 if raw else 6.0)
        if m == "mimic":
            out["loss_mimic"] = fw * sum(mimic_loss(s, t) for s, t in zip(feats, t_feats))
            self.probes = {"feature_gap": feature_gap(feats, t_feats)}
        elif m == "pkd":
            out["loss_pkd"] = fw * sum(pkd_loss(s, t) for s, t in zip(feats, t_feats))
        elif m == "ours":
            s_cmp = o["compared"] or [
                feature_view(f, d.features, t) for f, t in zip(feats, t_feats)
            ]
            t_cmp = [feature_view(t, d.features, t) for t in t_feats]
            self.probes = {"feature_gap": feature_gap(s_cmp, t_cmp)}
            if residuals:
                out["loss_residual"] = fw * sum(
                    residual_loss(s, r, t, d.residual_lambda)
                    for s, r, t in zip(s_cmp, residuals, t_cmp)
                )
                self.probes["residual_absorbed"] = residual_absorbed(s_cmp, residuals, t_cmp)
            else:  # --no-residual: the same imitation without adapters
                out["loss_imitation"] = fw * sum(
                    residual_loss(s, torch.zeros_like(s), t, d.residual_lambda)
                    for s, t in zip(s_cmp, t_cmp)
                )
        elif m == "fgd":
            out["loss_fgd"] = self._fgd(feats, t_feats, gt)
            out["loss_fgd_global"] = sum(fgd_global_loss(rs, rt) for rs, rt in o["relation"])
        elif m == "crosskd":
            out.update(self._crosskd(o["cross"], t_cls, t_reg))
        if m == "ld" or (m == "ours" and d.ld):
            out.update(self._ld(cls, reg, t_reg, assignment, points, strides, counts, gt))
        return out

    # -- the methods' pieces --------------------------------------------------------------
    def _ld(
        self,
        cls: Sequence[Tensor],
        reg: Sequence[Tensor],
        t_reg: Sequence[Tensor],
        t: Targets,
        points: Tensor,
        strides: Tensor,
        counts: List[int],
        gt: Sequence[Dict[str, Tensor]],
    ) -> Dict[str, Tensor]:
        R = self.detector_config.head.reg_max
        d = self.dcfg
        s_cls, s_reg = flatten_levels(cls, reg)  # [N, A, C], [N, A, 4(R+1)]
        tr = flatten_maps(t_reg).float()  # [N, A, 4(R+1)]
        pos = t.labels < s_cls.shape[2]  # [N, A]
        w = s_cls.detach().sigmoid().amax(dim=2)  # [N, A] the student's max score
        pw = w[pos]
        loss = ld_loss(
            s_reg[pos].reshape(-1, R + 1),
            tr[pos].reshape(-1, R + 1),
            pw.repeat_interleave(4),
            d.ld_temperature,
        ) / (4 * pw.sum().clamp(min=1.0))
        out = {"loss_ld": d.ld_weight * loss}
        if d.vlr:
            anchors = self.criterion.anchors(points, strides)
            vw = []
            for i, g in enumerate(gt):
                thr = atss_thresholds(anchors, counts, g["boxes"].float())
                v = vlr_weights(box_iou(anchors, g["boxes"].float()), thr)  # [A]
                vw.append(torch.where(pos[i], torch.zeros_like(v), v))  # positives are LD's own
            vlr = torch.stack(vw)  # [N, A]
            sel = vlr > 0
            loss_vlr = ld_loss(
                s_reg[sel].reshape(-1, R + 1),
                tr[sel].reshape(-1, R + 1),
                vlr[sel].repeat_interleave(4),
                d.ld_temperature,
            ) / (4 * vlr[sel].sum().clamp(min=1.0))
            out["loss_ld_vlr"] = d.ld_weight * loss_vlr
        return out

    def _fgd(
        self,
        feats: Sequence[Tensor],
        t_feats: Sequence[Tensor],
        gt: Sequence[Dict[str, Tensor]],
    ) -> Tensor:
        total = feats[0].new_zeros(())
        for f, tf, stride in zip(feats, t_feats, self.detector_config.head.strides):
            masks = [fgd_masks(g["boxes"].float(), f.shape[-2:], stride) for g in gt]
            fg = torch.stack([m[0] for m in masks])  # [N, H, W]
            bg = torch.stack([m[1] for m in masks])
            total = total + fgd_loss(f, tf, fg, bg, self.dcfg.fgd_temperature)
        return total

    def _crosskd(
        self,
        cross: Sequence[Tuple[Tensor, Tensor]],
        t_cls: Sequence[Tensor],
        t_reg: Sequence[Tensor],
    ) -> Dict[str, Tensor]:
        R = self.detector_config.head.reg_max
        x_cls, x_reg = flatten_levels([c for c, _ in cross], [r for _, r in cross])
        tc, tr = flatten_levels([c.float() for c in t_cls], [r.float() for r in t_reg])
        w = tc.sigmoid().amax(dim=2).reshape(-1)  # [N*A] the teacher's max score
        wsum = w.sum().clamp(min=1.0)
        c = x_cls.shape[2]
        loss_cls = (quality_focal_kd(x_cls.reshape(-1, c), tc.reshape(-1, c)) * w).sum() / wsum
        loss_box = ld_loss(
            x_reg.reshape(-1, R + 1), tr.reshape(-1, R + 1), w.repeat_interleave(4), 1.0
        ) / (4 * wsum)
        d = self.dcfg
        return {
            "loss_crosskd_cls": d.crosskd_cls_weight * loss_cls,
            "loss_crosskd_box": d.crosskd_box_weight * loss_box,
        }


def distill(cfg: TrainConfig, dcfg: DistillConfig) -> Dict[str, Any]:
    """Distil a student from `dcfg.teacher`; the summary as `train` returns it, plus the
    distillation settings."""
    dcfg.validate()
    summary = fit(cfg, lambda c, data: DistillTask(c, dcfg, data))
    summary["distill"] = dcfg.to_json()
    return summary
