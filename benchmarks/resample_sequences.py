"""A container-sequence set as a camera of another resolution would take it, same field of
view: every frame resized by --factor, every truth box scaled with it.

    python benchmarks/resample_sequences.py --src D --out D2x --factor 2
    fod simulate --bundle models/demo --sequences D2x --containers 100 --out sim-2x

A site moving to a finer camera of the same field of view sees its particles move more
pixels; with its distances scaled (`decision.reference_height`) the same containers
should be decided alike at 1280x768 and at 640x384. Upsampled frames add no detail, so
the model sees nearly the same pixels after letterboxing; what the set tests is the
decision's distances. FFV1 (lossless), grey, and a `sequences.json` like its
source's (widths, heights and boxes scaled; `info.resampled_from` records the source).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2

from edge.errors import FodError
from edge.fsutil import atomic_write_json, staged_dir
from edge.knapp import read_sequences, sequences_frame_size


def _resample_video(src: Path, dst: Path, size: tuple, fps: float) -> int:
    """Frames of `src` resized to `size` (w, h) into `dst`; the number of frames."""
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise FodError(f"{src}: OpenCV cannot read the video")
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"FFV1"), fps, size, False)
    if not writer.isOpened():
        cap.release()
        raise FodError(f"{dst}: OpenCV cannot write FFV1 video (no FFmpeg backend?)")
    n = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
            up = size[0] > grey.shape[1]
            writer.write(
                cv2.resize(grey, size, interpolation=cv2.INTER_CUBIC if up else cv2.INTER_AREA)
            )
            n += 1
    finally:
        cap.release()
        writer.release()
    if n == 0:
        raise FodError(f"{src}: no frames")
    return n


def resample_set(src: Path, out: Path, factor: float) -> Dict[str, Any]:
    """`src`'s set resampled by `factor` into `out` (staged beside it, then renamed)."""
    path = src / "sequences.json"
    read_sequences(path)  # checked: labels, ids, video paths
    wh = sequences_frame_size(path)  # checked: one size for the set, as the simulator takes it
    if wh is None:
        raise FodError(f"{path}: its containers declare no width and height")
    size = (round(wh[0] * factor), round(wh[1] * factor))
    data = json.loads(path.read_text(encoding="utf-8"))
    rows: List[Dict[str, Any]] = []
    with staged_dir(out) as tmp:
        for c in data["containers"]:
            if (c.get("width"), c.get("height")) != wh:  # the set's size skips undeclared ones
                raise FodError(f"{path}: container {c['id']} declares no width and height")
            (tmp / c["path"]).parent.mkdir(parents=True, exist_ok=True)
            n = _resample_video(src / c["path"], tmp / c["path"], size, float(c.get("fps", 25.0)))
            frames = [
                [dict(o, bbox=[v * factor for v in o["bbox"]]) for o in objs]
                for objs in c["frames"]
            ]
            rows.append(dict(c, width=size[0], height=size[1], num_frames=n, frames=frames))
        info = dict(data.get("info", {}), resampled_from=str(src), factor=factor)
        atomic_write_json(tmp / "sequences.json", dict(data, info=info, containers=rows))
    return {"containers": len(rows), "size": list(size)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, required=True, help="a set from fod synth or probe_look")
    ap.add_argument("--out", type=Path, required=True, help="new folder for the resampled set")
    ap.add_argument("--factor", type=float, required=True, help="e.g. 2: 640x384 -> 1280x768")
    args = ap.parse_args(argv)
    if not 0.1 <= args.factor <= 8:
        ap.error(f"--factor must be in [0.1, 8], got {args.factor}")
    try:
        print(json.dumps(resample_set(args.src, args.out, args.factor)))
    except FodError as e:
        raise SystemExit(f"resample_sequences: error: {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
