"""`fod bench`: the runtime's per-frame path, stage by stage, on this device.

Stages, as the line runs them: read (a frame from the source: a camera, a video decoded
by OpenCV, or synthetic frames already in memory as a camera hands them over),
preprocess (letterbox + the model's own input), h2d / compute / d2h (as far as the
backend tells them apart; ONNX Runtime on the CPU has only compute), inference (the
backend's whole call), postprocess (output check, top-k, NMS, back to frame pixels),
decision (per container of `frames` frames) and end_to_end (per batch). `edge_overhead`
is what the CPU adds per frame around the model: preprocess + postprocess, plus the
container's decision on the frame that completes it (as on the line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .backends import StagedBackend
from .decision import DecisionConfig, decide
from .health import check_outputs
from .model_info import ModelInfo
from .postprocess import Detections, PostprocessConfig, select_per_image
from .preprocess import boxes_to_source, letterbox
from .timing import StageTimer, clock


@dataclass(frozen=True)
class BenchConfig:
    batch: int = 1  # frames per backend call
    iters: int = 200  # timed iterations, at least
    warmup: int = 20  # untimed iterations first (engine autotuning, caches, clocks ramp)
    duration_s: float = 0.0  # and at least this long
    frames: int = 12  # frames per container, for the decision stage


def synthetic_frames(
    size: tuple, mono: bool, count: int = 8, seed: int = 0
) -> Callable[[], np.ndarray]:
    """A reader over `count` container-like frames held in memory (a camera hands frames
    over without decoding): back-lit gradient, sensor noise, a few dark specks."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 200 - 60 * ((xx - w / 2) / w) ** 2 - 40 * ((yy - h / 2) / h) ** 2
    frames = []
    for _ in range(count):
        img = base + rng.normal(0, 3, base.shape)
        for cx, cy in rng.uniform([0, 0], [w, h], (5, 2)):
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 9] = 40
        grey = np.clip(img, 0, 255).astype(np.uint8)
        frames.append(grey if mono else np.repeat(grey[..., None], 3, axis=2))
    state = {"i": 0}

    def read() -> np.ndarray:
        state["i"] = (state["i"] + 1) % count
        return frames[state["i"]]

    return read


def run_bench(
    backend: StagedBackend,
    info: ModelInfo,
    read: Callable[[], Optional[np.ndarray]],
    cfg: BenchConfig,
    post: Optional[PostprocessConfig] = None,
    decision: Optional[DecisionConfig] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> Dict[str, Any]:
    """Run the per-frame path `cfg.warmup + n` times; returns the stage stats and the raw
    end-to-end times (ms per batch)."""
    post = post or PostprocessConfig()
    decision = decision or DecisionConfig()
    timer = StageTimer()
    pending: List[Detections] = []
    done = 0
    start: Optional[float] = None
    while True:
        timed = done >= cfg.warmup
        if timed and start is None:
            start, timer = clock(), StageTimer()  # warm-up times are dropped
        if timed and done - cfg.warmup >= cfg.iters and clock() - (start or 0) >= cfg.duration_s:
            break
        t0 = clock()
        frames = []
        for _ in range(cfg.batch):
            f = read()
            if f is None:
                raise EOFError("the frame source ran out")
            frames.append(f)
        t1 = clock()
        boxed, lbs = zip(*(letterbox(f, info.input_size) for f in frames))
        x = backend.prepare(np.stack(boxed))
        t2 = clock()
        boxes, scores = backend.run(x)
        t3 = clock()
        check_outputs(boxes, scores)
        for b, s, lb in zip(boxes, scores, lbs):
            d = select_per_image(b, s, info.level_counts, post)
            pending.append(Detections(boxes_to_source(d.boxes, lb), d.scores, d.labels))
        t4 = clock()
        decided = 0.0
        in_frame = decision.in_frame(lbs[0].src_h)  # its distances in the frames' px
        while len(pending) >= cfg.frames:
            td = clock()
            decide(pending[: cfg.frames], info.class_names, in_frame)
            del pending[: cfg.frames]
            ms = (clock() - td) * 1e3
            timer.add("decision", ms)
            decided += ms
        t5 = clock()
        for stage, ms in (
            ("read", t1 - t0),
            ("preprocess", t2 - t1),
            ("inference", t3 - t2),
            ("postprocess", t4 - t3),
            ("end_to_end", t5 - t0),
        ):
            timer.add(stage, ms * 1e3)
        for stage, ms in backend.last_times.items():
            timer.add(stage, ms)
        # The frame that completes a container carries its decision, as on the line.
        overhead = (t2 - t1 + t4 - t3) * 1e3 + decided
        timer.add("edge_overhead", overhead / cfg.batch)
        done += 1
        if progress is not None:
            progress(done)
    items = {"end_to_end": cfg.batch, "inference": cfg.batch, "compute": cfg.batch}
    order = (
        "read",
        "preprocess",
        "h2d",
        "compute",
        "d2h",
        "inference",
        "postprocess",
        "decision",
        "end_to_end",
        "edge_overhead",
    )
    stats = timer.summary(items)
    return {
        "stages": {k: stats[k].to_dict() for k in order if k in stats},
        "end_to_end_ms": timer.times["end_to_end"],
        "fps": stats["end_to_end"].throughput_per_s,
        "batch": cfg.batch,
        "iterations": len(timer.times["end_to_end"]),
    }
