"""ONNX Runtime's integer INT8 kernels against the exact ones (dequantise + float kernels) for
a bundle's Q/DQ model on this CPU: whether `model.int8_kernels = "auto"` may keep the
fast path here. Per set: how far the top score of a frame moves, and the detections at
`--score` or more that one path finds and the other does not (same class, IoU >= 0.5).

    python benchmarks/int8_kernels.py --bundle models/demo --sequences SET [--sequences SET ...]
        [--videos 40] [--frames 3] [--score 0.5] [--json out.json]

SET is a `fod synth` sequences set (its sequences.json and videos); the first --frames
frames of the first --videos containers are read as the camera hands them over (grey),
letterboxed into the model like the line does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import cv2
import numpy as np

from edge.backends.onnxruntime_backend import OnnxRuntimeBackend, integer_kernels_exact
from edge.bundle import open_bundle
from edge.errors import FodError
from edge.fsutil import atomic_write_json
from edge.knapp import read_sequences
from edge.postprocess import Detections, PostprocessConfig, select_per_image
from edge.preprocess import letterbox
from edge.reference import iou_matrix


def set_frames(folder: Path, videos: int, frames: int) -> Iterator[np.ndarray]:
    """Grey frames of a sequences set: the first `frames` of each of the first `videos`."""
    for _, video, _ in read_sequences(folder / "sequences.json")[:videos]:
        cap = cv2.VideoCapture(str(folder / str(video)))
        try:
            for _ in range(frames):
                ok, img = cap.read()
                if not ok:
                    break
                yield img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        finally:
            cap.release()


def agreement(x: Detections, y: Detections, score: float) -> Dict[str, int]:
    """Detections at `score` or more in both, only in x, only in y (same class, IoU >= 0.5)."""
    a, b = x.scores >= score, y.scores >= score
    same = (iou_matrix(x.boxes[a], y.boxes[b]) >= 0.5) & (x.labels[a][:, None] == y.labels[b][None])
    return {
        "both": int(same.any(1).sum()),
        "first_only": int((~same.any(1)).sum()),
        "second_only": int((~same.any(0)).sum()),
    }


def compare(model: Path, folder: Path, videos: int, frames: int, score: float) -> Dict[str, Any]:
    paths = {k: OnnxRuntimeBackend(model, int8_kernels=k) for k in ("integer", "float")}
    info, post = paths["integer"].info, PostprocessConfig()
    tops: List[float] = []
    counts = {"both": 0, "integer_only": 0, "float_only": 0}
    n = 0
    for frame in set_frames(folder, videos, frames):
        image = letterbox(frame, info.input_size)[0][None]
        got = []
        for be in paths.values():
            boxes, scores = be.infer(image)
            got.append(select_per_image(boxes[0], scores[0], info.level_counts, post))
        if len(got[0]) and len(got[1]):
            tops.append(abs(float(got[0].scores.max()) - float(got[1].scores.max())))
        c = agreement(got[0], got[1], score)
        counts["both"] += c["both"]
        counts["integer_only"] += c["first_only"]
        counts["float_only"] += c["second_only"]
        n += 1
    if n == 0:
        raise FodError(f"{folder}: no frames read")
    t = np.asarray(tops or [0.0])
    return {
        "set": str(folder),
        "frames": n,
        "top_score_diff": {
            "median": float(np.median(t)),
            "p99": float(np.percentile(t, 99)),
            "max": float(t.max()),
        },
        **counts,
    }


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--sequences", type=Path, action="append", required=True)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--score", type=float, default=0.5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    try:
        with open_bundle(args.bundle) as b:
            model = b.file("int8_cpu") or b.file("int8")
            if model is None:
                raise FodError(f"{args.bundle}: no Q/DQ INT8 model (int8_cpu or int8)")
            rows = [compare(model, s, args.videos, args.frames, args.score) for s in args.sequences]
    except FodError as e:
        print(f"int8_kernels: {e}", file=sys.stderr)
        return 1
    print(f"this CPU's integer kernels exact (VNNI/AMX or not x86): {integer_kernels_exact()}")
    for r in rows:
        d = r["top_score_diff"]
        print(
            f"{r['set']}: {r['frames']} frames; top score |integer - float| median "
            f"{d['median']:.4f}, p99 {d['p99']:.4f}, max {d['max']:.4f}; detections >= "
            f"{args.score}: {r['both']} both, {r['integer_only']} integer only, "
            f"{r['float_only']} float only"
        )
    if args.json:
        atomic_write_json(args.json, {"exact": integer_kernels_exact(), "sets": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
