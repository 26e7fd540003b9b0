"""Container sequences of a look written apart from `fod synth`: its own vial, lamp,
look-alikes and motion, drawn by code that shares nothing with the generator the demo
was trained on. A bundle that holds only on `fod synth`'s looks fails here first.

    python benchmarks/probe_look.py --out D [--containers 100] [--seed 7] [--frames 8]
    fod simulate --bundle models/demo --sequences D --containers 100 --out sim

The scene: a back-lit vial on a lamp whose brightness falls off to the sides, dark
walls, a curved meniscus, static bright wall highlights; per container 0-4 air bubbles
(dark rim, bright glint) rising 3-9 px a frame and resting under the meniscus, 0-3 faint
scratches and 0-2 dark specks on the outer glass (static); about half the containers hold
1-2 particles: dark specks (4-12 px), thin bent fibers (14-40 px) or translucent glass
flakes with a bright edge (7-16 px), each swirling and sinking at constant velocity. 8
frames (`--frames`) of 640x384, FFV1, and a `sequences.json` as `fod synth` writes it (per frame the
particles' tight boxes, category and track id), so `fod simulate`, `fod knapp` and
`fod audit replay --truth` read it as they read `fod synth`'s. Same seed, same bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.errors import FodError
from edge.fsutil import atomic_write_json, staged_dir

W, H, FRAMES, FPS = 640, 384, 8, 25.0  # FRAMES: the default frames a container
CATEGORIES = ("fiber", "particle", "glass_flake")


@dataclass(frozen=True)
class Particle:
    category: int  # 1-based, as in COCO
    path: np.ndarray  # [frames, 2] centre per frame
    shape: Dict[str, Any]  # floats; a flake's corner angles and radii as arrays [n]


def _disk(cx: float, cy: float, r: float) -> np.ndarray:
    """Anti-aliased disk coverage [H, W] in [0, 1]."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.clip((r - np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)) / 0.8 + 0.5, 0.0, 1.0)


def _poly(points: np.ndarray, thickness: Optional[float] = None) -> np.ndarray:
    """Coverage [H, W] of a filled polygon, or of a polyline `thickness` px wide, drawn at
    4x and averaged down so that 1-2 px shapes keep their sub-pixel weight."""
    m = np.zeros((H * 4, W * 4), np.uint8)
    p = (np.asarray(points) * 4).astype(np.int32)
    if thickness is None:
        cv2.fillPoly(m, [p], 255, cv2.LINE_AA)
    else:
        cv2.polylines(m, [p], False, 255, max(1, int(thickness * 4)), cv2.LINE_AA)
    return cv2.resize(m, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _lamp_and_vial(rng: np.random.Generator) -> Tuple[np.ndarray, Tuple[float, ...]]:
    """The static scene [H, W] float and the liquid's area (x0, x1, y0, y1)."""
    x = np.linspace(-1, 1, W)[None, :]
    y = np.linspace(-1, 1, H)[:, None]
    img = rng.uniform(120, 200) * (1 - rng.uniform(0.05, 0.25) * x**2)
    img = np.broadcast_to(img * (1 + rng.uniform(-0.1, 0.1) * y), (H, W)).copy()
    x0, x1 = rng.uniform(90, 170), rng.uniform(470, 550)
    xs = np.arange(W, dtype=np.float64)[None, :]
    wall = rng.uniform(6, 16)
    img = np.where((xs > x0) & (xs < x1), img, img * rng.uniform(0.55, 0.8))  # beside the vial
    dist = np.minimum(np.abs(xs - x0), np.abs(xs - x1))
    img -= rng.uniform(25, 60) * np.exp(-(dist**2) / (2 * wall**2))
    meniscus = int(rng.uniform(25, 60))
    t = (np.arange(int(x0), int(x1)) - x0) / (x1 - x0) * 2 - 1
    for xx, yy in zip(range(int(x0), int(x1)), (meniscus + 10 * t * t).astype(int)):
        img[max(yy - 3, 0) : yy + 3, xx] *= 0.7
    below = np.arange(H)[:, None] > meniscus
    for _ in range(rng.integers(1, 4)):  # wall highlights: static bright streaks
        cx, width = rng.uniform(x0 + 5, x1 - 5), rng.uniform(1.5, 5)
        img += rng.uniform(15, 45) * np.exp(-((xs - cx) ** 2) / (2 * width**2)) * below
    return img, (x0 + 12, x1 - 12, meniscus + 15, H - 20)


def _particles(
    rng: np.random.Generator, area: Sequence[float], frames: int = FRAMES
) -> List[Particle]:
    x0, x1, y0, y1 = area
    out = []
    for _ in range(rng.integers(1, 3)):
        category = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
        start = np.array([rng.uniform(x0 + 20, x1 - 20), rng.uniform(y0 + 10, y1 - 80)])
        velocity = np.array([rng.uniform(-6, 6), rng.uniform(1, 5)])  # swirl and sink
        path = start + velocity * np.arange(frames)[:, None] + rng.normal(0, 0.7, (frames, 2))
        if category == 1:
            shape = dict(
                length=rng.uniform(14, 40),
                angle=rng.uniform(0, np.pi),
                bend=rng.uniform(-0.4, 0.4),
                spin=rng.uniform(-0.15, 0.15),
                width=rng.uniform(1.0, 2.0),
                dark=rng.uniform(40, 90),
            )
        elif category == 2:
            shape = dict(radius=rng.uniform(2.0, 6.0), dark=rng.uniform(50, 110))
        else:
            n = int(rng.integers(4, 7))
            radius = rng.uniform(3.5, 8.0)
            shape = dict(
                angles=np.sort(rng.uniform(0, 2 * np.pi, n)),
                radii=radius * rng.uniform(0.6, 1.0, n),
                spin=rng.uniform(-0.2, 0.2),
                dark=rng.uniform(15, 35),
                edge=rng.uniform(20, 50),
            )
        out.append(Particle(category, path, shape))
    return out


def _draw_particle(img: np.ndarray, p: Particle, t: int) -> np.ndarray:
    """Draws particle `p` at frame `t` into img; returns its coverage [H, W]."""
    cx, cy = p.path[t]
    s = p.shape
    if p.category == 1:
        a = s["angle"] + s["spin"] * t
        u = np.linspace(-0.5, 0.5, 9)[:, None]
        d, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
        pts = (cx, cy) + s["length"] * u * d + s["bend"] * s["length"] * (u**2 - 0.25) * n
        m = _poly(pts, s["width"])
        img -= s["dark"] * m
        return m
    if p.category == 2:
        m = _disk(cx, cy, s["radius"])
        img -= s["dark"] * m
        return m
    a, r = s["angles"] + s["spin"] * t, s["radii"]
    pts = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)
    m = _poly(pts)
    edge = _poly(np.vstack([pts, pts[:1]]), 1.0)  # the glint on its broken edge
    img -= s["dark"] * m
    img += s["edge"] * edge
    return np.maximum(m, edge)


def _tight_box(coverage: np.ndarray) -> Optional[List[int]]:
    ys, xs = np.nonzero(coverage > 0.25)
    if not len(xs):
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def render_container(
    rng: np.random.Generator, reject: bool, frames: int = FRAMES
) -> Tuple[List[np.ndarray], list]:
    """`frames` uint8 [H, W] frames and, per frame, the particles' COCO boxes."""
    scene, area = _lamp_and_vial(rng)
    x0, x1, y0, y1 = area
    particles = _particles(rng, area, frames) if reject else []
    bubbles = []
    for _ in range(rng.integers(0, 5)):
        cx, cy = rng.uniform(x0 + 10, x1 - 10), rng.uniform(y0 + 80, y1)
        rise, r, wobble = rng.uniform(3, 9), rng.uniform(2.5, 7), rng.uniform(0, 2)
        path = [(cx + wobble * np.sin(t), max(cy - rise * t, y0 - 5)) for t in range(frames)]
        bubbles.append((path, r))  # rests under the meniscus once it gets there
    for _ in range(rng.integers(0, 4)):  # faint scratches on the glass
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        length, a = rng.uniform(8, 40), rng.uniform(0, np.pi)
        line = [(cx, cy), (cx + length * np.cos(a), cy + length * np.sin(a))]
        scene += rng.uniform(-30, 30) * _poly(line, 1.0)
    for _ in range(rng.integers(0, 3)):  # dark specks on the outer glass
        cx, cy, r = rng.uniform(x0, x1), rng.uniform(y0, y1), rng.uniform(1.5, 4)
        scene += rng.uniform(-40, -15) * _disk(cx, cy, r)
    noise = rng.uniform(1.5, 4.0)
    out, truth = [], []
    for t in range(frames):
        img = scene.copy()
        for path, r in bubbles:
            cx, cy = path[t]
            img -= 35 * (_disk(cx, cy, r) - _disk(cx, cy, r - 1.2))  # rim
            img += 40 * _disk(cx - r / 3, cy - r / 3, max(r / 3, 0.8))  # glint
        boxes = []
        for track, p in enumerate(particles):
            box = _tight_box(_draw_particle(img, p, t))
            if box is not None:
                boxes.append({"bbox": box, "category_id": p.category, "track_id": track})
        img = cv2.GaussianBlur(img, (0, 0), 0.7) + rng.normal(0, noise, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
        truth.append(boxes)
    return out, truth


def _write_video(path: Path, frames: Sequence[np.ndarray]) -> None:
    fourcc = cv2.VideoWriter_fourcc(*"FFV1")  # lossless: a lossy codec erases 2-px specks
    writer = cv2.VideoWriter(str(path), fourcc, FPS, (W, H), False)
    if not writer.isOpened():
        raise FodError(f"{path}: OpenCV cannot write FFV1 video (no FFmpeg backend?)")
    try:
        for f in frames:
            writer.write(f)
    finally:
        writer.release()


def write_set(out: Path, containers: int, seed: int, frames: int = FRAMES) -> Dict[str, int]:
    """The set in `out` (staged beside it, then renamed: never half a set)."""
    with staged_dir(out) as tmp:
        (tmp / "sequences").mkdir()
        rows = _write_containers(tmp, containers, seed, frames)
    return {"containers": containers, "rejects": sum(r["label"] == "reject" for r in rows)}


def _write_containers(root: Path, containers: int, seed: int, frames: int) -> List[Dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, containers + 1):
        reject = bool(rng.random() < 0.5)
        images, truth = render_container(rng, reject, frames)
        rel = f"sequences/c{i:06d}.avi"
        _write_video(root / rel, images)
        rows.append(
            {"id": i, "path": rel, "label": "reject" if reject else "accept", "num_frames": frames,
             "width": W, "height": H, "fps": FPS, "frames": truth}
        )  # fmt: skip
    cats = [
        {"id": i + 1, "name": n, "supercategory": "foreign_matter"}
        for i, n in enumerate(CATEGORIES)
    ]
    info = {"description": "pharma-fod probe look (benchmarks/probe_look.py)", "seed": seed}
    atomic_write_json(
        root / "sequences.json", {"info": info, "categories": cats, "containers": rows}
    )
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="new folder for the set")
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7, help="same seed, same bytes")
    ap.add_argument(
        "--frames", type=int, default=FRAMES, help=f"frames a container (default {FRAMES})"
    )
    args = ap.parse_args(argv)
    if args.containers < 1 or args.frames < 2:
        ap.error(
            f"--containers must be at least 1 and --frames 2, got {args.containers}, {args.frames}"
        )
    try:
        print(json.dumps(write_set(args.out, args.containers, args.seed, args.frames)))
    except FodError as e:  # e.g. --out holds a set already: refused, nothing written
        raise SystemExit(f"probe_look: error: {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
