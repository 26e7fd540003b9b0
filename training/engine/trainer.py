"""`fod train`: GFL on a COCO set; single process or torchrun/DDP, AMP on CUDA, resumable."""

from __future__ import annotations

import dataclasses
import logging
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from edge.errors import FodError
from edge.fsutil import atomic_write_json

from ..checkpoint import read_checkpoint, save_checkpoint, state_digest
from ..data.augment import AugmentConfig
from ..data.dataset import CocoDetection
from ..evaluation import evaluate_model
from ..models import build_detector
from ..models.config import arch_config
from .data import TrainSet, collate_train
from .distributed import DistContext, distributed
from .schedule import Schedule

log = logging.getLogger(__name__)


class TrainingDiverged(FodError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """Defaults: mmdetection's GFL 1x (SGD 0.01 at batch 16, scaled linearly)."""

    data: Path
    out: Path
    val: Optional[Path] = None
    arch: str = "gfl-r18"
    size: Tuple[int, int] = (1280, 800)  # W, H of the model input (eval letterbox)
    crop: Optional[Tuple[int, int]] = None  # train on native-resolution crops of this W, H
    epochs: int = 12
    batch: int = 2  # images per process
    lr: Optional[float] = None  # None: 0.01 * global batch / 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    grad_clip: Optional[float] = None  # max grad norm; None as in mmdetection's GFL
    workers: int = 2  # data loader processes per training process
    seed: int = 0
    amp: Optional[bool] = None  # None: on with CUDA
    device: str = "auto"
    resume: Optional[Path] = None
    backbone_weights: Optional[Path] = None  # local ImageNet state dict
    fpn_channels: int = 256
    stacked_convs: int = 4
    max_iters: Optional[int] = None  # stop early (smoke runs); the schedule still spans the run
    eval_interval: int = 1  # epochs between validations
    log_interval: int = 10

    def validate(self) -> None:
        for name, wh in (("--size", self.size), ("--crop", self.crop)):
            if wh is not None and (wh[0] % 32 or wh[1] % 32):
                raise FodError(
                    f"{name} {wh[0]}x{wh[1]}: both sides must be divisible by 32 (the P5 stride)"
                )
        if self.resume is not None and not self.resume.is_file():
            raise FodError(f"{self.resume}: --resume checkpoint not found")
        if self.epochs < 1 or self.batch < 1:
            raise FodError("--epochs and --batch must be >= 1")

    def to_json(self) -> Dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()
        }


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Run the schedule; returns the summary also written to `out/metrics.json` (rank 0)."""
    cfg.validate()
    with distributed(cfg.device) as ctx:
        return _train(cfg, ctx)


def _train(cfg: TrainConfig, ctx: DistContext) -> Dict[str, Any]:
    data = CocoDetection(cfg.data)
    val = CocoDetection(cfg.val) if cfg.val is not None else None
    if val is not None and val.class_names != data.class_names:
        raise FodError(
            f"{cfg.val}: classes {val.class_names} differ from the training set's "
            f"{data.class_names}"
        )
    dev = ctx.device
    amp = dev.type == "cuda" if cfg.amp is None else cfg.amp and dev.type == "cuda"
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP broadcasts them anyway)
    mcfg = arch_config(
        cfg.arch,
        len(data.class_names),
        pretrained=cfg.backbone_weights is not None,
        channels=cfg.fpn_channels,
        stacked_convs=cfg.stacked_convs,
    )
    model, criterion, post = build_detector(mcfg, cfg.backbone_weights)
    if ctx.distributed and dev.type == "cuda" and not mcfg.backbone.norm_eval:
        # Batch statistics over the global batch; SyncBatchNorm runs on CUDA only.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(dev)

    aug = AugmentConfig(size=cfg.size, crop=cfg.crop)
    train_set = TrainSet(data, aug, cfg.seed)
    sampler = DistributedSampler(
        train_set, ctx.world_size, ctx.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    loader = DataLoader(
        train_set,
        cfg.batch,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=collate_train,
        drop_last=True,
        pin_memory=dev.type == "cuda",
        persistent_workers=cfg.workers > 0,
    )
    if len(loader) == 0:
        raise FodError(
            f"{cfg.data}: {len(data)} images are fewer than one batch of "
            f"{cfg.batch} x {ctx.world_size}"
        )
    total = cfg.epochs * len(loader)
    stop = min(total, cfg.max_iters) if cfg.max_iters else total
    schedule = Schedule(total, warmup_iters=min(cfg.warmup_iters, max(total // 3, 1)))
    base_lr = cfg.lr if cfg.lr is not None else 0.01 * cfg.batch * ctx.world_size / 16
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start_epoch, it, best_ap = 0, 0, -1.0
    if cfg.resume is not None:
        ckpt = read_checkpoint(cfg.resume)
        if ckpt["arch"] != cfg.arch or ckpt["model_config"] != mcfg.to_dict():
            raise FodError(
                f"{cfg.resume}: checkpoint is {ckpt['arch']} with another config or class count"
            )
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, it, best_ap = ckpt["epoch"] + 1, ckpt["iter"], ckpt["best_ap"]
        log.info("resumed from %s at epoch %d, iteration %d", cfg.resume, start_epoch, it)

    net = (
        DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        if ctx.distributed
        else model
    )
    writer = SummaryWriter(str(cfg.out / "tb")) if ctx.is_main else None
    if ctx.is_main:
        cfg.out.mkdir(parents=True, exist_ok=True)
    history: List[Dict[str, Any]] = []
    losses_seen: List[float] = []
    seen, t_start = 0, None
    metrics = None
    for epoch in range(start_epoch, cfg.epochs):
        if it >= stop:
            break
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        net.train()
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None if ctx.is_main else True
        )
        for images, targets in bar:
            if it >= stop:
                break
            lr = base_lr * schedule.factor(it)
            for g in opt.param_groups:
                g["lr"] = lr
            x = images.to(dev, non_blocking=True).float()  # [N, 3, H, W] 0-255
            gt = [{k: v.to(dev) for k, v in t.items()} for t in targets]
            with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
                cls, reg = net(x)
            losses = criterion([c.float() for c in cls], [r.float() for r in reg], gt)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at iteration {it} (lr {lr:.2e}); lower --lr"
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            it += 1
            losses_seen.append(loss.item())
            if t_start is None:  # the first step pays for allocation and warm-up: not counted
                t_start = time.perf_counter()
            else:
                seen += x.shape[0] * ctx.world_size
            if ctx.is_main and (it % cfg.log_interval == 0 or it == stop):
                for k, v in losses.items():
                    writer.add_scalar(f"train/{k}", v.item(), it)
                writer.add_scalar("train/loss", loss.item(), it)
                writer.add_scalar("train/lr", lr, it)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}")
                if it % (cfg.log_interval * 10) == 0:  # a trace in logs where no bar is drawn
                    log.info("iteration %d/%d loss %.4f lr %.2e", it, stop, loss.item(), lr)
        ctx.sync_buffers(model)  # evaluate and save rank 0's running statistics on every rank
        last = it >= stop or epoch + 1 == cfg.epochs
        metrics = None
        if ctx.is_main and val is not None and (last or (epoch + 1) % cfg.eval_interval == 0):
            metrics = evaluate_model(
                model, post, val, cfg.size, dev, cfg.out / "eval" if last else None
            ).to_dict()
            for k, v in metrics.items():
                writer.add_scalar(f"val/{k}", v, it)
            log.info(
                "epoch %d: %s", epoch + 1, " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            )
        if ctx.is_main:
            history.append({"epoch": epoch + 1, "iter": it, "metrics": metrics})
            improved = metrics is not None and metrics["ap"] >= best_ap
            best_ap = metrics["ap"] if improved else best_ap
            extra = dict(
                epoch=epoch,
                iter=it,
                best_ap=best_ap,
                metrics=metrics,
                optimizer=opt.state_dict(),
                scaler=scaler.state_dict(),
                train_config=cfg.to_json(),
            )
            save_checkpoint(cfg.out / "last.pt", model, mcfg, cfg.arch, data.class_names, **extra)
            if improved or val is None:
                save_checkpoint(
                    cfg.out / "best.pt", model, mcfg, cfg.arch, data.class_names, **extra
                )
        ctx.barrier()

    digests = ctx.all_gather(state_digest(model))
    elapsed = time.perf_counter() - t_start if t_start is not None else math.nan
    summary = {
        "arch": cfg.arch,
        "iterations": it,
        "world_size": ctx.world_size,
        "rank": ctx.rank,
        "device": str(dev),
        "amp": amp,
        "images_per_s": seen / elapsed if seen else None,
        "peak_memory_mib": _peak_memory_mib(dev),
        "first_losses": losses_seen[:5],
        "last_losses": losses_seen[-5:],
        "rank_weight_digests": digests,
        "metrics": metrics,
        "best_ap": best_ap,
        "history": history,
        "config": cfg.to_json(),
    }
    if ctx.is_main:
        atomic_write_json(cfg.out / "metrics.json", summary)
        writer.close()
    return summary
