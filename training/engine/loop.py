"""One training loop for every task (`fod train`, `fod distill`): data sharding, the lr
schedule, SGD, AMP, torchrun/DDP, resume, TensorBoard, progress, validation, checkpoints.

A task says what is trained and how a step's losses are computed; the loop does the
rest. DDP wraps the task's one trainable module (the student, plus its training-only
adapters when distilling); anything frozen (a teacher) stays outside it.
"""

from __future__ import annotations

import itertools
import logging
import math
import platform
import resource
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from calibration.metrics import show
from edge.errors import FodError
from edge.fsutil import atomic_write_json

from ..checkpoint import save_checkpoint, state_digest
from ..data.coco import classes_hint
from ..data.dataset import CocoDetection, TrainingData
from ..evaluation import evaluate_model
from ..models.config import DetectorConfig
from .distributed import DistContext
from .ema import DetectorEMA
from .resume import check_resume_step, resume_changes
from .schedule import Schedule

log = logging.getLogger(__name__)


class TrainingDiverged(FodError):
    """The loss became NaN or infinite."""


class Task(Protocol):
    """What a run trains. `module` is optimised and DDP-wrapped; `detector` is the plain
    GFL inside it that is evaluated and saved (a student without its adapters)."""

    module: nn.Module
    detector: nn.Module
    detector_config: DetectorConfig
    arch: str
    class_names: List[str]
    post: nn.Module
    dataset: Dataset
    collate: Callable[[List[Any]], Any]
    resumed: Optional[Dict[str, Any]]  # with --resume: the checkpoint it was built from
    # Diagnostics of the last step (detached scalars, never optimised): logged to
    # TensorBoard as probe/NAME, their mean over the run's last tenth in the summary.
    probes: Dict[str, Tensor]

    def set_epoch(self, epoch: int) -> None: ...

    def losses(
        self, net: nn.Module, batch: Any, device: torch.device, amp: bool
    ) -> Dict[str, Tensor]:
        """Named losses of one batch; `net` is `module`, DDP-wrapped when distributed."""
        ...

    def extra_state(self) -> Dict[str, Any]:
        """Training-only state to resume with (adapters); not part of the detector."""
        ...

    def load_extra_state(self, ckpt: Dict[str, Any]) -> None: ...


class ResumableSampler(DistributedSampler):
    """A DistributedSampler whose next epoch can start part-way: a run resumed from a
    checkpoint taken mid-epoch leaves out the `skip` indices it had trained (the order is
    the epoch's own, seeded by (seed, epoch), so the rest is what the first run would
    have seen). The skip is taken by the epoch that iterates first, then cleared."""

    skip = 0

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)

    def __len__(self) -> int:
        return super().__len__() - self.skip


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(cfg: Any, task: Task, ctx: DistContext, val: Any) -> Dict[str, Any]:
    """Train `task` under `cfg` (a TrainConfig); returns the summary written to
    `out/metrics.json` on rank 0."""
    dev = ctx.device
    if dev.type == "cuda":  # every batch has one size (crops or --size): tune convs once
        torch.backends.cudnn.benchmark = True
    amp = dev.type == "cuda" if cfg.amp is None else bool(cfg.amp)
    if amp and dev.type == "cpu" and cpu_bf16_native() is False:
        log.warning(
            "--amp on a CPU without AMX or AVX512-BF16: bfloat16 is emulated there, "
            "slower than float32"
        )
    if ctx.distributed and dev.type == "cuda" and not task.detector_config.backbone.norm_eval:
        # Batch statistics over the global batch; SyncBatchNorm runs on CUDA only.
        task.module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(task.module)
    task.module.to(dev)
    sampler = ResumableSampler(
        task.dataset, ctx.world_size, ctx.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    loader = DataLoader(
        task.dataset,
        cfg.batch,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=task.collate,
        drop_last=True,
        pin_memory=dev.type == "cuda",
        persistent_workers=cfg.workers > 0,
    )
    if len(loader) == 0:
        raise FodError(
            f"{cfg.data}: {len(task.dataset)} images are fewer than one batch of "
            f"{cfg.batch} x {ctx.world_size}"
        )
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch
    stop = min(total, cfg.max_iters) if cfg.max_iters else total
    schedule = Schedule(total, warmup_iters=min(cfg.warmup_iters, max(total // 3, 1)))
    base_lr = cfg.lr if cfg.lr is not None else 0.01 * cfg.batch * ctx.world_size / 16
    params = [p for p in task.module.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # fp16 needs its loss scaled; bf16 (the CPU's) has float32's range and does not.
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dev.type == "cuda")

    # The average, evaluated and saved as the run's weights (rank 0's: every rank averages
    # the same weights, and its own BatchNorm statistics). Its first update copies them.
    ema = DetectorEMA(task.detector, cfg.ema) if cfg.ema else None
    start_epoch, it, best_ap, step = 0, 0, -1.0, 0
    if cfg.resume is not None:
        # the task was built from its architecture and has read it: one read of a large file
        ckpt, task.resumed = task.resumed, None  # its optimizer state not held all run
        assert ckpt is not None, "a task built for --resume keeps the checkpoint it read"
        # A run with --ema saved the average as its weights, the last step's beside them.
        task.detector.load_state_dict(ckpt.get("train_state_dict", ckpt["state_dict"]))
        try:
            task.load_extra_state(ckpt)
        except FodError as e:
            raise FodError(f"{cfg.resume}: {e}") from None
        try:
            opt.load_state_dict(ckpt["optimizer"])
        except ValueError:  # its parameters are not this task's: never a traceback
            raise FodError(
                f"{cfg.resume}: its optimizer state does not fit this run's parameters: "
                "resume a run with the verb, --method and switches it was started with"
            ) from None
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, it, best_ap = ckpt["epoch"] + 1, ckpt["iter"], ckpt["best_ap"]
        step = ckpt.get("step", 0)  # batches of epoch start_epoch already trained
        check_resume_step(cfg, ckpt, step, steps_per_epoch, ctx.world_size)
        for change in resume_changes(ckpt.get("train_config") or {}, cfg.to_json()):
            log.warning("--resume %s: %s", cfg.resume, change)
        sampler.skip = step * cfg.batch
        if ema is not None and "ema_updates" in ckpt:  # else it starts at this step
            ema.load(ckpt["state_dict"], ckpt["ema_updates"])
        del ckpt
        log.info(
            "resumed from %s at epoch %d, batch %d, iteration %d", cfg.resume, start_epoch, step, it
        )

    detector = ema.module if ema is not None else task.detector  # what is evaluated and saved
    net = (
        DistributedDataParallel(task.module, device_ids=[dev.index] if dev.type == "cuda" else None)
        if ctx.distributed
        else task.module
    )
    writer = SummaryWriter(str(cfg.out / "tb")) if ctx.is_main else None
    if ctx.is_main:
        cfg.out.mkdir(parents=True, exist_ok=True)
    history: List[Dict[str, Any]] = []
    losses_seen: List[float] = []
    probes_seen: Dict[str, List[Tuple[int, float]]] = {}  # name -> (iteration, value) logged
    seen, t_start, eval_s = 0, None, 0.0  # eval_s: validation time inside the timed span
    metrics = None

    def save(names: Sequence[str], epoch_done: int, step: int) -> None:
        """Checkpoints as of iteration `it`: epochs up to `epoch_done` and `step` batches
        of the next one trained (rank 0)."""
        extra = dict(
            epoch=epoch_done,
            step=step,
            iter=it,
            batch=cfg.batch,
            world_size=ctx.world_size,
            best_ap=best_ap,
            metrics=metrics,
            optimizer=opt.state_dict(),
            scaler=scaler.state_dict(),
            train_config=cfg.to_json(),
            **task.extra_state(),
        )
        if ema is not None:  # the last step's weights, for --resume
            extra.update(ema.state(task.detector))
        for name in names:
            save_checkpoint(
                cfg.out / name,
                detector,
                task.detector_config,
                task.arch,
                task.class_names,
                **extra,
            )

    for epoch in range(start_epoch, cfg.epochs):
        if it >= stop:
            break
        sampler.set_epoch(epoch)
        task.set_epoch(epoch)
        net.train()
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None if ctx.is_main else True
        )
        for batch in bar:
            if it >= stop:
                break
            lr = base_lr * schedule.factor(it)
            for g in opt.param_groups:
                g["lr"] = lr
            losses = task.losses(net, batch, dev, amp)
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
            if ema is not None:
                ema.update(task.detector)
            it, step = it + 1, step + 1
            losses_seen.append(loss.item())
            if t_start is None:  # the first step pays for allocation and warm-up: not counted
                t_start = time.perf_counter()
            else:
                seen += cfg.batch * ctx.world_size
            if ctx.is_main and (it % cfg.log_interval == 0 or it == stop):
                _log_step(writer, bar, losses, loss, lr, it, stop, cfg.log_interval)
                for k, v in task.probes.items():
                    value = v.item()  # one device sync per probe
                    probes_seen.setdefault(k, []).append((it, value))
                    writer.add_scalar(f"probe/{k}", value, it)
            mid_epoch = it < stop and step < steps_per_epoch  # else the epoch's save follows
            if ctx.is_main and cfg.save_every and it % cfg.save_every == 0 and mid_epoch:
                save(("last.pt",), epoch - 1, step)  # a killed run resumes from here
        finished = step == steps_per_epoch  # all of it: not cut by --max-iters
        ctx.sync_buffers(task.module)  # evaluate and save rank 0's running statistics
        last = it >= stop or epoch + 1 == cfg.epochs
        metrics = None
        if ctx.is_main and val is not None and (last or (epoch + 1) % cfg.eval_interval == 0):
            t_eval = time.perf_counter()
            metrics = evaluate_model(
                detector, task.post, val, cfg.size, dev, cfg.out / "eval" if last else None
            ).to_dict()
            eval_s += time.perf_counter() - t_eval
            for k, v in metrics.items():
                if v is not None:  # undefined on this set (no small boxes): no point to plot
                    writer.add_scalar(f"val/{k}", v, it)
            log.info(
                "epoch %d: %s", epoch + 1, " ".join(f"{k}={show(v)}" for k, v in metrics.items())
            )
        if ctx.is_main:
            history.append({"epoch": epoch + 1, "iter": it, "metrics": metrics})
            improved = metrics is not None and metrics["ap"] >= best_ap
            best_ap = metrics["ap"] if improved else best_ap
            # best.pt first: killed between the two, a resume repeats one epoch, never skips
            # the final best.pt a finished schedule is known by. An epoch cut short
            # (--max-iters) is recorded as such: a resume trains its remaining batches.
            names = (("best.pt",) if improved or val is None else ()) + ("last.pt",)
            save(names, epoch if finished else epoch - 1, 0 if finished else step)
        step = 0
        ctx.barrier()

    digests = ctx.all_gather(state_digest(task.module))
    elapsed = time.perf_counter() - t_start if t_start is not None else math.nan
    summary = {
        "arch": task.arch,
        "iterations": it,
        "world_size": ctx.world_size,
        "rank": ctx.rank,
        "device": str(dev),
        "amp": amp,
        "amp_dtype": str(amp_dtype(dev)).replace("torch.", "") if amp else None,
        "ema": cfg.ema or None,
        "images_per_s": seen / elapsed if seen else None,
        # Steps alone (a budget planner's rate): images_per_s counts validation time too.
        "step_images_per_s": seen / (elapsed - eval_s) if seen else None,
        "eval_seconds": eval_s,
        "peak_memory_mib": _peak_memory_mib(dev),
        "probes": _late_means(probes_seen, it),
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


def _late_means(seen: Dict[str, List[Tuple[int, float]]], end: int) -> Dict[str, float]:
    """Each probe's mean over the values logged in the run's last tenth (its last value
    where none was logged there): where the run ended up, less one step's noise."""
    out = {}
    for k, vals in seen.items():
        late = [v for i, v in vals if i > 0.9 * end] or [vals[-1][1]]
        out[k] = sum(late) / len(late)
    return out


def _log_step(
    writer: Any,
    bar: Any,
    losses: Dict[str, Tensor],
    loss: Tensor,
    lr: float,
    it: int,
    stop: int,
    interval: int,
) -> None:
    for k, v in losses.items():
        writer.add_scalar(f"train/{k}", v.item(), it)
    writer.add_scalar("train/loss", loss.item(), it)
    writer.add_scalar("train/lr", lr, it)
    bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}")
    if it % (interval * 10) == 0:  # a trace in logs where no bar is drawn
        log.info("iteration %d/%d loss %.4f lr %.2e", it, stop, loss.item(), lr)


def check_val(data: TrainingData, val_path: Any) -> Any:
    """The validation set, if any, with the training set's classes."""
    if val_path is None:
        return None
    val = CocoDetection(val_path).require_boxes("the validation AP is undefined on it")
    if val.class_names != data.class_names:
        raise FodError(
            f"{val_path}: classes {val.class_names} differ from the training set's "
            f"{data.class_names}" + classes_hint(data.class_names, val.class_names)
        )
    return val


def forward_detector(net: nn.Module, x: Tensor, amp: bool, device: torch.device) -> Sequence:
    with autocast(device, amp):
        return net(x)


def amp_dtype(device: torch.device) -> torch.dtype:
    """float16 on CUDA (with the loss scaler); bfloat16 on the CPU, where AMX and
    AVX512-BF16 compute it natively."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=amp_dtype(device), enabled=enabled)


def cpu_bf16_native(cpuinfo: Optional[str] = None) -> Optional[bool]:
    """Whether this x86 CPU computes bfloat16 natively (AMX or AVX512-BF16); None where
    it cannot be told (another architecture, no /proc/cpuinfo)."""
    if cpuinfo is None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return None
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    return bool(set(cpuinfo.split()) & {"amx_bf16", "avx512_bf16"})
