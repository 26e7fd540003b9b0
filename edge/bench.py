"""`fod bench`: the runtime's per-frame path, stage by stage, on this device.

Stages, as the line runs them: read (a frame from the source: a camera, a video decoded
by OpenCV, or synthetic frames already in memory as a camera hands them over),
preprocess (letterbox + the model's own input), h2d / compute / d2h (as far as the
backend tells them apart; ONNX Runtime on the CPU has only compute), inference (the
backend's whole call), postprocess (output check, top-k, NMS, back to frame pixels),
decision (per container of `frames` frames) and end_to_end (per batch). `edge_overhead`
is what the CPU adds per frame around the model: preprocess + postprocess, plus the
container's decision on the frame that completes it (as on the line). With tiles
(`model.tiles`), each frame is cut as the line cuts it and every tile is a model call of
its own; the stages sum over the tiles, and postprocess includes the merge across them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .backends import StagedBackend
from .decision import DecisionConfig, decide
from .detector import detect_mirrored, detect_tiles
from .errors import FodError
from .health import check_backend_outputs
from .model_info import ModelInfo
from .postprocess import Detections, PostprocessConfig, select_per_image
from .preprocess import boxes_to_source, letterbox, tile_windows
from .timing import StageTimer, clock


@dataclass(frozen=True)
class BenchConfig:
    batch: int = 1  # frames per backend call
    iters: int = 200  # timed iterations, at least
    warmup: int = 20  # untimed iterations first (engine autotuning, caches, clocks ramp)
    duration_s: float = 0.0  # and at least this long
    frames: int = 12  # frames per container, for the decision stage
    tiles: Tuple[int, int] = (1, 1)  # COLSxROWS model calls per frame, as model.tiles
    tile_overlap: int = 32
    mirror: bool = False  # each frame also run mirrored left-right, as model.mirror


def views_label(tiles: str, mirror: bool) -> str:
    """How a frame goes through the model, for reports: e.g. " in 2x2 tiles, mirrored too"
    ("" for whole, once)."""
    return ("" if tiles == "1x1" else f" in {tiles} tiles") + (", mirrored too" if mirror else "")


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
        if done == 0 and cfg.tiles != (1, 1):
            _check_tiles(frames[0].shape, info.input_size, cfg)
        dets, spans = _detect_frames(backend, info, frames, cfg, post)
        pending.extend(dets)
        decided = 0.0
        in_frame = decision.in_frame(frames[0].shape[0])  # its distances in the frames' px
        while len(pending) >= cfg.frames:
            td = clock()
            decide(pending[: cfg.frames], info.class_names, in_frame)
            del pending[: cfg.frames]
            ms = (clock() - td) * 1e3
            timer.add("decision", ms)
            decided += ms
        t5 = clock()
        timer.add("read", (t1 - t0) * 1e3)
        for stage, ms in spans.items():
            timer.add(stage, ms)
        timer.add("end_to_end", (t5 - t0) * 1e3)
        # The frame that completes a container carries its decision, as on the line.
        overhead = spans["preprocess"] + spans["postprocess"] + decided
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
        "tiles": f"{cfg.tiles[0]}x{cfg.tiles[1]}",
        "mirror": cfg.mirror,
        "frame_size": [int(frames[0].shape[1]), int(frames[0].shape[0])],  # as read: W, H
        "iterations": len(timer.times["end_to_end"]),
    }


def _detect_frames(
    backend: StagedBackend,
    info: ModelInfo,
    frames: Sequence[np.ndarray],
    cfg: BenchConfig,
    post: PostprocessConfig,
) -> Tuple[List[Detections], Dict[str, float]]:
    """The frames through the model as the detector runs them (whole in one call, or tile
    by tile; with `cfg.mirror` again mirrored, merged) -> their detections and the ms of
    each stage."""
    spans: Dict[str, float] = defaultdict(float)
    t0 = clock()

    def one_view(images: Sequence[np.ndarray]) -> List[Detections]:
        if cfg.tiles == (1, 1):
            return _timed_call(backend, info, images, post, spans)

        def one(tile: np.ndarray) -> Detections:
            return _timed_call(backend, info, [tile], post, spans)[0]

        return [
            detect_tiles(f, cfg.tiles, cfg.tile_overlap, info.input_size, one, post) for f in images
        ]

    dets = detect_mirrored(frames, one_view, post) if cfg.mirror else one_view(frames)
    # What no call timed (cutting tiles, merging views) is the postprocess's.
    inside = spans["preprocess"] + spans["inference"] + spans["postprocess"]
    spans["postprocess"] += max(0.0, (clock() - t0) * 1e3 - inside)
    return dets, spans


def _timed_call(
    backend: StagedBackend,
    info: ModelInfo,
    images: Sequence[np.ndarray],
    post: PostprocessConfig,
    spans: Dict[str, float],
) -> List[Detections]:
    """One backend call over `images`, as the detector makes it; its stages' ms added to
    `spans` -> detections in each image's pixels."""
    t0 = clock()
    boxed, lbs = zip(*(letterbox(np.ascontiguousarray(f), info.input_size) for f in images))
    x = backend.prepare(np.stack(boxed))
    t1 = clock()
    boxes, scores = backend.run(x)
    t2 = clock()
    check_backend_outputs(boxes, scores, len(images), info)
    out = []
    for b, s, lb in zip(boxes, scores, lbs):
        d = select_per_image(b, s, info.level_counts, post)
        out.append(Detections(boxes_to_source(d.boxes, lb), d.scores, d.labels))
    t3 = clock()
    for stage, ms in (("preprocess", t1 - t0), ("inference", t2 - t1), ("postprocess", t3 - t2)):
        spans[stage] += ms * 1e3
    for stage, ms in backend.last_times.items():
        spans[stage] += ms
    return out


def _check_tiles(shape: Tuple[int, ...], input_size: Tuple[int, int], cfg: BenchConfig) -> None:
    h, w = shape[:2]
    try:
        tile_windows((w, h), cfg.tiles, cfg.tile_overlap, input_size[0] / input_size[1])
    except ValueError as e:
        raise FodError(f"tiles {cfg.tiles[0]}x{cfg.tiles[1]} for {w}x{h} frames: {e}") from None
