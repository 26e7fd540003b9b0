"""`fod train`: GFL on a COCO set (a student, or a teacher with the CARAFE FPN); the loop
itself (torchrun/DDP, AMP, resume, TensorBoard, checkpoints) is engine/loop.py's."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from edge.errors import FodError

from ..checkpoint import read_checkpoint
from ..data.augment import AugmentConfig
from ..data.coco import classes_hint
from ..data.dataset import TrainingData, open_training_data
from ..models import build_detector
from ..models.config import DetectorConfig, arch_config
from .data import TrainSet, collate_train
from .distributed import distributed
from .loop import TrainingDiverged, check_val, forward_detector, run

__all__ = ["DetectorTask", "TrainConfig", "TrainingDiverged", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Defaults: mmdetection's GFL 1x (SGD 0.01 at batch 16, scaled linearly)."""

    data: Path
    out: Path
    val: Optional[Path] = None
    arch: str = "gfl-r18"
    teacher: bool = False  # the teacher's FPN: CARAFE upsampling (feature difference enhancement)
    size: Tuple[int, int] = (1280, 800)  # W, H of the model input (eval letterbox)
    crop: Optional[Tuple[int, int]] = None  # train on native-resolution crops of this W, H
    photometric: float = 1.0  # strength of the brightness/contrast/gamma jitter
    blur: float = 0.0  # chance of a Gaussian blur per training view
    epochs: int = 12
    batch: int = 2  # images per process
    lr: Optional[float] = None  # None: 0.01 * global batch / 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    grad_clip: Optional[float] = None  # max grad norm; None as in mmdetection's GFL
    workers: int = 2  # data loader processes per training process
    seed: int = 0
    amp: Optional[bool] = None  # None: on with CUDA (float16); on the CPU, True: bfloat16
    device: str = "auto"
    resume: Optional[Path] = None
    backbone_weights: Optional[Path] = None  # local ImageNet state dict
    zero_init_residual: bool = False  # from scratch: each residual block starts as its shortcut
    fpn_channels: int = 256
    stacked_convs: int = 4
    max_iters: Optional[int] = None  # stop early (smoke runs); the schedule still spans the run
    eval_interval: int = 1  # epochs between validations
    assign: str = "atss-near"  # atss: the paper's; atss-near: tiny boxes get their nearest anchor
    init: Optional[Path] = None  # start from this checkpoint's weights and config (fine-tuning)
    replay: Optional[Path] = None  # a set mixed into every epoch (fine-tuning without forgetting)
    replay_share: float = 0.5  # of each epoch's images drawn from `replay`
    log_interval: int = 10
    save_every: int = 0  # iterations between mid-epoch last.pt saves (0: at epoch ends only)
    ema: float = 0.0  # decay of the weights' moving average, evaluated and saved (0: none)

    def validate(self) -> None:
        for name, wh in (("--size", self.size), ("--crop", self.crop)):
            if wh is not None and (wh[0] % 32 or wh[1] % 32):
                raise FodError(
                    f"{name} {wh[0]}x{wh[1]}: both sides must be divisible by 32 (the P5 stride)"
                )
        if self.resume is not None and not self.resume.is_file():
            raise FodError(f"{self.resume}: --resume checkpoint not found")
        if self.init is not None and self.resume is not None:
            raise FodError("--init and --resume exclude each other (--resume continues a run)")
        if self.assign not in ("atss", "atss-near"):
            raise FodError(f"--assign {self.assign}: expected atss or atss-near")
        if not 0.0 < self.replay_share < 1.0:
            raise FodError(f"--replay-share {self.replay_share}: expected a share in (0, 1)")
        if self.zero_init_residual and (self.init or self.backbone_weights):
            raise FodError(
                "--zero-init-residual initialises a backbone trained from scratch; "
                "--init and --backbone-weights bring their own weights"
            )
        if not 0.0 <= self.photometric <= 5.0:
            raise FodError(f"--photometric {self.photometric}: expected a strength in [0, 5]")
        if not 0.0 <= self.blur <= 1.0:
            raise FodError(f"--blur {self.blur}: expected a chance in [0, 1]")
        if not (self.ema == 0.0 or 0.0 < self.ema < 1.0):
            raise FodError(f"--ema {self.ema}: expected a decay in (0, 1), or 0 for none")
        if self.save_every < 0:
            raise FodError(f"--save-every {self.save_every}: expected iterations >= 0")
        # A NaN or negative step trains weights into NaN (or away), a clip of 0 not at all,
        # and each still writes a checkpoint that exports. --lr 0 is a use: a run that steps
        # no parameter (BatchNorm statistics still move), as the fine-tuning tests run it.
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr >= 0):
            raise FodError(f"--lr {self.lr}: expected a finite number >= 0")
        clip = self.grad_clip
        if clip is not None and not (math.isfinite(clip) and clip > 0):
            raise FodError(f"--grad-clip {clip}: expected a finite number > 0")
        for flag, n in (
            ("--warmup-iters", self.warmup_iters),
            ("--workers", self.workers),
            ("--seed", self.seed),  # numpy seeds the data's randomness: it takes none below 0
        ):
            if n < 0:
                raise FodError(f"{flag} {n}: expected an integer >= 0")
        if self.epochs < 1 or self.batch < 1:
            raise FodError("--epochs and --batch must be >= 1")

    def to_json(self) -> Dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()
        }


def augment_config(cfg: TrainConfig) -> AugmentConfig:
    return AugmentConfig(size=cfg.size, crop=cfg.crop, strength=cfg.photometric, blur=cfg.blur)


class DetectorTask:
    """Plain detection training: the GFL criterion on the model's own outputs."""

    def __init__(self, cfg: TrainConfig, data: TrainingData) -> None:
        # Fine-tuning (--init) or continuing (--resume): the checkpoint's architecture,
        # whatever the flags say. A run started from --init never had the flags' own.
        source = cfg.init if cfg.init is not None else cfg.resume
        ckpt = read_checkpoint(source) if source is not None else None
        init = ckpt if cfg.init is not None else None
        # --resume: the loop restores weights, optimizer and position from this same read
        self.resumed = ckpt if cfg.resume is not None else None
        if ckpt is not None:
            if list(ckpt["class_names"]) != data.class_names:
                raise FodError(
                    f"{source}: trained on classes {ckpt['class_names']}, "
                    f"{cfg.data} has {data.class_names}"
                    + classes_hint(ckpt["class_names"], data.class_names)
                )
            if cfg.resume is not None and ckpt["arch"] != cfg.arch:
                raise FodError(
                    f"{source}: checkpoint is {ckpt['arch']}, not --arch {cfg.arch} "
                    "(--resume continues the run it names)"
                )
            self.detector_config = DetectorConfig.from_dict(ckpt["model_config"])
            self.arch = str(ckpt["arch"])
        else:
            self.detector_config = arch_config(
                cfg.arch,
                len(data.class_names),
                teacher=cfg.teacher,
                pretrained=cfg.backbone_weights is not None,
                zero_init_residual=cfg.zero_init_residual,
                channels=cfg.fpn_channels,
                stacked_convs=cfg.stacked_convs,
            )
            self.arch = cfg.arch
        self.detector, self.criterion, self.post = build_detector(
            self.detector_config,
            None if ckpt is not None else cfg.backbone_weights,
            nearest=cfg.assign == "atss-near",
        )
        if init is not None:
            try:
                self.detector.load_state_dict(init["state_dict"])
            except RuntimeError as e:
                raise FodError(
                    f"{cfg.init}: weights do not fit its own config: {str(e).splitlines()[0]}"
                ) from None
        self.module = self.detector
        self.probes: Dict[str, Tensor] = {}  # plain training has no diagnostics to log
        self.class_names = data.class_names
        self.dataset = TrainSet(data, augment_config(cfg), cfg.seed)
        self.collate = collate_train

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def losses(
        self, net: nn.Module, batch: Any, device: torch.device, amp: bool
    ) -> Dict[str, Tensor]:
        images, targets = batch
        x = images.to(device, non_blocking=True).float()  # [N, 3, H, W] 0-255
        gt = [{k: v.to(device) for k, v in t.items()} for t in targets]
        cls, reg = forward_detector(net, x, amp, device)
        return self.criterion([c.float() for c in cls], [r.float() for r in reg], gt)

    def extra_state(self) -> Dict[str, Any]:
        return {}

    def load_extra_state(self, ckpt: Dict[str, Any]) -> None:
        if "distill_config" in ckpt:  # its student would go on without its teacher
            raise FodError(
                "a `fod distill` checkpoint: resume it with `fod distill` (its --teacher "
                "and --method), or fine-tune from it with `fod train --init`"
            )


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Run the schedule; returns the summary also written to `out/metrics.json` (rank 0)."""
    return fit(cfg, DetectorTask)


def fit(
    cfg: TrainConfig, make_task: Callable[[TrainConfig, TrainingData], DetectorTask]
) -> Dict[str, Any]:
    """The one way a task is trained (`fod train`, `fod distill`): validated config, the
    process group, the data, seeded initial weights, the loop."""
    cfg.validate()
    with distributed(cfg.device) as ctx, removed_on_failure(cfg.out, ctx.is_main):
        data = open_training_data(cfg.data, cfg.replay, cfg.replay_share)
        val = check_val(data, cfg.val)
        torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP broadcasts anyway)
        task = make_task(cfg, data)
        return run(as_trained(cfg, task), task, ctx, val)


@contextlib.contextmanager
def removed_on_failure(out: Path, owner: bool) -> Iterator[None]:
    """A run folder this run made (`owner`: rank 0) is removed when the run fails before
    its first checkpoint: bad input leaves no folder holding a TensorBoard log of nothing.
    An interrupted run keeps it (its logs are what the user watched)."""
    made = owner and not out.exists()
    try:
        yield
    except Exception:
        if made and out.is_dir() and not any(out.glob("*.pt")):
            shutil.rmtree(out, ignore_errors=True)
        raise


def as_trained(cfg: TrainConfig, task: DetectorTask) -> TrainConfig:
    """The config as the checkpoints record it: with --init or --resume, the model trained
    is the checkpoint's, whatever the architecture flags said."""
    if cfg.init is None and cfg.resume is None:
        return cfg
    d = task.detector_config
    return dataclasses.replace(
        cfg,
        arch=task.arch,
        teacher=d.fpn.upsample == "carafe",
        fpn_channels=d.fpn.channels,
        stacked_convs=d.head.stacked_convs,
    )
