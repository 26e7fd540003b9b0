"""`fod compare`: runs side by side in the layout of the paper's Tables 4 and 5 - what each
run is (teacher, student alone, a distillation method and its ablation switches), AP50,
AP, AP_small, AR, AR_small on one validation set (pycocotools), and params and GMACs at
one input size. With `noisy`, every model is also evaluated with the student noise on
every validation image, as a noisy line would show them.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from calibration.metrics import show
from calibration.noise import NoiseConfig, student_noise
from edge.errors import FodError
from edge.fsutil import atomic_write_bytes, atomic_write_json

from .checkpoint import load_detector, read_checkpoint
from .complexity import measure
from .data.coco import classes_hint
from .data.dataset import CocoDetection, Sample
from .evaluation import evaluate_model
from .models import build_detector

METRICS = ("ap50", "ap", "ap_small", "ar", "ar_small")
HEADERS = ("AP50", "AP", "AP_S", "AR", "AR_S")  # as the paper's tables name them


class NoisyCoco(CocoDetection):
    """A COCO set whose every image carries the student noise (p = 1), seeded per image."""

    def __init__(self, root: Path, seed: int = 0) -> None:
        super().__init__(root)
        self.seed, self.noise = seed, NoiseConfig(p=1.0)

    def __getitem__(self, index: int) -> Sample:
        s = super().__getitem__(index)
        rng = np.random.default_rng([self.seed, index])
        noisy, _ = student_noise(s.image, self.noise, rng)
        return Sample(noisy, s.boxes, s.labels, s.image_id)


@dataclass(frozen=True)
class Row:
    run: str
    model: str  # e.g. "GFL-R50 + CARAFE (teacher)", "GFL-R18"
    method: str  # teacher | student | ours | mimic | ... (+ ablation marks)
    metrics: Dict[str, Optional[float]]  # None: undefined on the set (calibration.metrics)
    noisy: Optional[Dict[str, Optional[float]]]
    params_m: float
    gmacs: float


def describe(ckpt: Dict[str, Any], cfg: Any) -> Tuple[str, str]:
    """(model, method) of a checkpoint, from its config and distillation settings."""
    model = f"GFL-R{cfg.backbone.depth}" + (" + CARAFE" if cfg.fpn.upsample == "carafe" else "")
    d = ckpt.get("distill_config")
    if d is None:
        return model, "teacher" if cfg.fpn.upsample == "carafe" else "alone"
    method = d["method"]
    off = [name for name in ("noise", "residual", "ld") if d.get(name) is False]
    if method != "ours":
        off = [o for o in off if o == "noise"]
    if d.get("teacher_fpn") == "nearest":  # distilled from a teacher without CARAFE
        off.append("carafe")
    # --features (default raw); checkpoints from before it record `normalize` (True: own)
    features = d.get("features", "own" if d.get("normalize", True) else "raw")
    view = f" {features}" if method == "ours" and features != "raw" else ""
    fw = d.get("feature_weight")  # None: the method's own default
    weight = f" w{fw:g}" if fw is not None else ""
    return model, method + view + weight + "".join(f" -{o}" for o in off)


def pick_checkpoint(run: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        if (run / name).is_file():
            return run / name
    if run.is_file():
        return run
    raise FodError(f"{run}: no best.pt or last.pt (a run folder of fod train / fod distill)")


def row(run: Path, val: Path, size: Tuple[int, int], device: torch.device, noisy: bool) -> Row:
    """One run's row: its checkpoint on the clean (and noisy) set, params and GMACs."""
    data = CocoDetection(val).require_boxes("AP and AR are undefined on it")
    path = pick_checkpoint(run)
    model, cfg, names, ckpt = load_detector(path)
    if names != data.class_names:
        raise FodError(
            f"{path}: classes {names}, {val} has {data.class_names}"
            + classes_hint(names, data.class_names)
        )
    post = build_detector(cfg)[2]
    model = model.to(device)
    m = evaluate_model(model, post, data, size, device).to_dict()
    n = evaluate_model(model, post, NoisyCoco(val), size, device).to_dict() if noisy else None
    c = measure(cfg, size)
    label, method = describe(ckpt, cfg)
    return Row(run.name, label, method, m, n, c.params_total / 1e6, c.gmacs)


def training_size(runs: List[Path]) -> Tuple[int, int]:
    """The input size every run was trained at: the table's size when none is given. Runs
    of several sizes have no one size at which each is evaluated as trained."""
    sizes: Dict[Path, Tuple[int, int]] = {}
    for run in runs:
        path = pick_checkpoint(run)
        size = read_checkpoint(path).get("train_config", {}).get("size")
        if not size:
            raise FodError(f"{path}: records no training size: pass --size")
        sizes[run] = (int(size[0]), int(size[1]))
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{r} {w}x{h}" for r, (w, h) in sizes.items())
        raise FodError(f"runs trained at different sizes ({listed}): pass --size for one table")
    return next(iter(sizes.values()))


def _worker_threads(threads: int) -> None:
    torch.set_num_threads(threads)  # jobs x torch's default would oversubscribe the cores


def compare(
    runs: List[Path],
    val: Path,
    size: Tuple[int, int],
    device: torch.device,
    noisy: bool = False,
    jobs: int = 1,
) -> List[Row]:
    """Rows in the order of `runs`. `jobs` > 1 evaluates that many runs at once, each in a
    process of its own (spawned: CUDA does not survive a fork) with its share of the cores:
    decoding and scoring the images is CPU work, which one process leaves mostly idle on a
    many-core machine."""
    if jobs <= 1 or len(runs) <= 1:
        return [row(r, val, size, device, noisy) for r in runs]
    jobs = min(jobs, len(runs))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, ctx, initializer=_worker_threads, initargs=(threads,)) as ex:
        futures = [ex.submit(row, r, val, size, device, noisy) for r in runs]
        return [f.result() for f in futures]


def table(rows: List[Row], size: Tuple[int, int]) -> Tuple[str, str]:
    """(Markdown, CSV) of the rows; AP figures in percent as the paper prints them."""
    noisy = any(r.noisy for r in rows)
    head = ["run", "model", "method", *HEADERS]
    if noisy:
        head += ["AP50 noisy", "AP noisy"]
    head += ["params (M)", f"GMACs @{size[0]}x{size[1]}"]
    body = []
    for r in rows:
        cells = [r.run, r.model, r.method, *[show(r.metrics[m], 100, ".1f") for m in METRICS]]
        if noisy:
            cells += [show(r.noisy[k], 100, ".1f") if r.noisy else "" for k in ("ap50", "ap")]
        cells += [f"{r.params_m:.2f}", f"{r.gmacs:.1f}"]
        body.append(cells)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(head)
    w.writerows(body)
    return _markdown(head, body) + seed_means(rows), buf.getvalue()


def _markdown(head: List[str], body: List[List[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in body]) + "\n"


def seed_means(rows: List[Row]) -> str:
    """Markdown of the mean and range of each row trained with several seeds (runs NAME,
    NAME-s1, NAME-s2, ... as benchmarks/distill_table.sh's SEEDS names them), in percent;
    '' when no row has more than one run. Single runs rank nothing at small scales: the
    spread is what a difference between rows has to beat."""
    groups: Dict[str, List[Row]] = {}
    for r in rows:
        groups.setdefault(re.sub(r"-s\d+$", "", r.run), []).append(r)
    if all(len(g) == 1 for g in groups.values()):
        return ""

    def stat(vals: List[float]) -> str:
        v = 100 * np.asarray(vals)
        return f"{v.mean():.1f} ({v.min():.1f}-{v.max():.1f})" if len(v) > 1 else f"{v[0]:.1f}"

    noisy = all(r.noisy for r in rows)
    head = ["row", "method", "runs", "AP50", "AP"] + (["AP50 noisy", "AP noisy"] if noisy else [])
    body = []
    for name, g in groups.items():
        cells = [name, g[0].method, str(len(g))]
        cells += [stat([r.metrics[k] for r in g]) for k in ("ap50", "ap")]
        if noisy:
            cells += [stat([r.noisy[k] for r in g if r.noisy]) for k in ("ap50", "ap")]
        body.append(cells)
    return "\nMean (min-max) over each row's seeds:\n\n" + _markdown(head, body)


def write(rows: List[Row], out: Path, size: Tuple[int, int]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    md, csv_text = table(rows, size)
    atomic_write_bytes(out / "compare.md", md.encode())
    atomic_write_bytes(out / "compare.csv", csv_text.encode())
    atomic_write_json(out / "compare.json", [r.__dict__ for r in rows])
