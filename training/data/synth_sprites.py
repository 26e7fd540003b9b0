"""Small rendered objects: foreign particles and the look-alikes the detector must ignore.

A `Shape` is resolution-free geometry (strokes around a centre); `render_shape`
rasterises it at a position and angle into a `Sprite`: two small patches, the
fraction of back-light it absorbs and the light it adds (refraction glints).
Effects below `VISIBLE_*` are cut to exactly zero, so the pixels a sprite changes
are exactly its mask and a box from the mask is tight around what was drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

VISIBLE_ABSORB = 0.05  # below this fraction of back-light removed, a pixel is left alone
VISIBLE_GLOW = 0.03  # below this added brightness (of full scale), likewise
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel vertex positions
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Stroke:
    """One polyline or polygon of a shape."""

    points: np.ndarray  # [K, 2] xy relative to the shape centre, px
    thickness: int  # line width in px; 0 fills the polygon
    closed: bool  # join the last point to the first
    absorb: float  # fraction of back-light removed where drawn
    glow: float  # brightness added where drawn, of full scale


@dataclass(frozen=True)
class Shape:
    """A particle or look-alike, independent of where it is drawn."""

    kind: str  # class name ("fiber", ...) or look-alike ("bubble", ...)
    strokes: Tuple[Stroke, ...]
    blur: float  # defocus of this object (its depth in the liquid), px sigma

    def radius(self) -> float:
        """Largest distance of any vertex from the centre, px."""
        return max(float(np.hypot(*s.points.T).max()) for s in self.strokes)


@dataclass(frozen=True)
class Sprite:
    """A shape rasterised at one place: patches and their top-left corner in the image."""

    kind: str
    x0: int
    y0: int
    absorb: np.ndarray  # [h, w] float32, 0 or >= VISIBLE_ABSORB
    glow: np.ndarray  # [h, w] float32, 0 or >= VISIBLE_GLOW

    @property
    def mask(self) -> np.ndarray:
        """[h, w] bool: the pixels this sprite changes."""
        return (self.absorb > 0) | (self.glow > 0)

    def box(self, width: int, height: int) -> Optional[Tuple[int, int, int, int]]:
        """Tight COCO box (x, y, w, h) of the changed pixels inside a width x height image."""
        ys, xs = np.nonzero(self.mask)
        xs = xs + self.x0
        ys = ys + self.y0
        keep = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
        if not keep.any():
            return None
        xs, ys = xs[keep], ys[keep]
        x0, y0 = int(xs.min()), int(ys.min())
        return x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]], dtype=np.float64)


def render_shape(shape: Shape, cx: float, cy: float, angle: float = 0.0) -> Sprite:
    """Rasterise `shape` centred at image point (cx, cy), rotated by `angle` radians."""
    pad = math.ceil(3 * shape.blur) + 3
    r = math.ceil(shape.radius()) + pad
    ix, iy = math.floor(cx), math.floor(cy)
    size = 2 * r + 1
    absorb = np.zeros((size, size), np.float32)
    glow = np.zeros((size, size), np.float32)
    canvas = np.zeros((size, size), np.uint8)
    origin = np.array([r + cx - ix, r + cy - iy])
    for st in shape.strokes:
        pts = np.round((_rotate(st.points, angle) + origin) * _ONE).astype(np.int32)
        canvas[:] = 0
        if st.thickness == 0:
            cv2.fillPoly(canvas, [pts], 255, cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(canvas, [pts], st.closed, 255, st.thickness, cv2.LINE_AA, _SHIFT)
        cover = canvas.astype(np.float32) * (1.0 / 255.0)
        if st.absorb > 0:
            np.maximum(absorb, cover * st.absorb, out=absorb)
        if st.glow > 0:
            np.maximum(glow, cover * st.glow, out=glow)
    if shape.blur > 0:
        cv2.GaussianBlur(absorb, (0, 0), shape.blur, dst=absorb)
        cv2.GaussianBlur(glow, (0, 0), shape.blur, dst=glow)
    absorb[absorb < VISIBLE_ABSORB] = 0.0
    glow[glow < VISIBLE_GLOW] = 0.0
    ys, xs = np.nonzero((absorb > 0) | (glow > 0))
    if ys.size == 0:  # too faint to see: an empty 1x1 sprite changes nothing
        return Sprite(shape.kind, ix, iy, absorb[:1, :1] * 0, glow[:1, :1] * 0)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return Sprite(
        shape.kind,
        ix - r + int(x0),
        iy - r + int(y0),
        np.ascontiguousarray(absorb[y0:y1, x0:x1]),
        np.ascontiguousarray(glow[y0:y1, x0:x1]),
    )


def overlap(
    image: np.ndarray, sprite: Sprite
) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image region, absorb, glow) where the sprite lies inside the image (views of equal
    shape), or None when it lies wholly outside."""
    h, w = image.shape
    sh, sw = sprite.absorb.shape
    x0, y0 = max(sprite.x0, 0), max(sprite.y0, 0)
    x1, y1 = min(sprite.x0 + sw, w), min(sprite.y0 + sh, h)
    if x0 >= x1 or y0 >= y1:
        return None
    a = sprite.absorb[y0 - sprite.y0 : y1 - sprite.y0, x0 - sprite.x0 : x1 - sprite.x0]
    g = sprite.glow[y0 - sprite.y0 : y1 - sprite.y0, x0 - sprite.x0 : x1 - sprite.x0]
    return image[y0:y1, x0:x1], a, g


def composite(image: np.ndarray, sprite: Sprite) -> None:
    """Draw `sprite` into a float image (H, W) in place: img = img * (1 - absorb) + glow."""
    o = overlap(image, sprite)
    if o is not None:
        region, a, g = o
        region *= 1.0 - a
        region += g


# --- shape samplers: sizes follow what lamp inspection sees (mostly < 32 px) ---------------


def _polygon(rng: np.random.Generator, radius: float, k: int, jitter: float) -> np.ndarray:
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radii = radius * rng.uniform(1 - jitter, 1 + jitter, k)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def fiber(rng: np.random.Generator) -> Shape:
    """A thin curved fibre, 1-3 px wide, 10-60 px long, dark against the back-light."""
    length = 10 + 50 * rng.beta(1.4, 3.0)
    n = max(int(length / 2), 6)
    step = length / n
    heading = rng.uniform(0, 2 * np.pi)
    bend = rng.normal(0, 0.08)
    turns = heading + np.cumsum(bend + rng.normal(0, 0.12, n))
    pts = np.cumsum(np.stack([np.cos(turns), np.sin(turns)], axis=1) * step, axis=0)
    pts = np.vstack([[0.0, 0.0], pts])
    pts -= pts.mean(axis=0)
    width = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    opacity = rng.uniform(0.35, 0.8)
    return Shape("fiber", (Stroke(pts, width, False, opacity, 0.0),), rng.uniform(0.3, 0.8))


def particle(rng: np.random.Generator) -> Shape:
    """A dark irregular speck, 2-12 px across."""
    diameter = 2 + 10 * rng.beta(1.3, 2.5)
    pts = _polygon(rng, diameter / 2, int(rng.integers(5, 10)), 0.3)
    opacity = rng.uniform(0.5, 0.95)
    return Shape("particle", (Stroke(pts, 0, True, opacity, 0.0),), rng.uniform(0.3, 0.7))


def glass_flake(rng: np.random.Generator) -> Shape:
    """A semi-transparent angular flake, 5-22 px, with bright refracting edges."""
    size = 5 + 17 * rng.beta(1.5, 2.5)
    pts = _polygon(rng, size / 2, int(rng.integers(4, 8)), 0.35)
    body = Stroke(pts, 0, True, rng.uniform(0.06, 0.16), 0.0)
    split = int(rng.integers(1, len(pts)))
    lit = Stroke(pts[: split + 1], 1, False, 0.0, rng.uniform(0.2, 0.4))
    dark = Stroke(np.vstack([pts[split:], pts[:1]]), 1, False, rng.uniform(0.25, 0.45), 0.0)
    return Shape("glass_flake", (body, dark, lit), rng.uniform(0.3, 0.7))


def bubble(rng: np.random.Generator) -> Shape:
    """An air bubble: a bright ring inside a thin dark rim (look-alike, unlabelled)."""
    r = rng.uniform(2.5, 9.0)
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)
    rim = Stroke(circle * (r + 1.0), 1, True, rng.uniform(0.3, 0.55), 0.0)
    ring = Stroke(circle * r * 0.7, max(1, int(r / 3)), True, 0.0, rng.uniform(0.18, 0.35))
    return Shape("bubble", (rim, ring), rng.uniform(0.3, 0.7))


def scratch(rng: np.random.Generator) -> Shape:
    """A faint straight-ish scratch on the glass wall (look-alike, static)."""
    length = rng.uniform(25, 180)
    t = np.linspace(-0.5, 0.5, 8)[:, None]
    direction = rng.uniform(0, 2 * np.pi)
    d = np.array([[np.cos(direction), np.sin(direction)]])
    normal = np.array([[-d[0, 1], d[0, 0]]])
    pts = t * length * d + (t**2 - 0.25) * rng.normal(0, 0.1) * length * normal
    if rng.random() < 0.5:
        st = Stroke(pts, 1, False, 0.0, rng.uniform(0.06, 0.16))
    else:
        st = Stroke(pts, 1, False, rng.uniform(0.07, 0.18), 0.0)
    return Shape("scratch", (st,), rng.uniform(0.2, 0.5))


def reflection(rng: np.random.Generator) -> Shape:
    """A soft vertical specular streak from the lamp on the glass (look-alike, static)."""
    a, b = rng.uniform(2, 6), rng.uniform(10, 40)
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    pts = np.stack([a * np.cos(t), b * np.sin(t)], axis=1)
    return Shape("reflection", (Stroke(pts, 0, True, 0.0, rng.uniform(0.1, 0.25)),), 2.5)


def _circle(r: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1) * r


def bubble_plain(rng: np.random.Generator) -> Shape:
    """A bubble without the dark rim: only the bright ring, or a bright filled dot when
    small (back-lit bubbles lose the rim at low magnification; dark field shows only light)."""
    r = rng.uniform(1.5, 10.0)
    if r < 3.5:
        dot = Stroke(_circle(r, 12), 0, True, 0.0, rng.uniform(0.15, 0.4))
        return Shape("bubble", (dot,), rng.uniform(0.3, 0.8))
    ring = Stroke(_circle(r * 0.8), max(1, int(r / 3)), True, 0.0, rng.uniform(0.15, 0.4))
    core = Stroke(_circle(r * 0.3, 12), 0, True, 0.0, rng.uniform(0.05, 0.2))
    return Shape("bubble", (ring, core), rng.uniform(0.3, 0.8))


def bubble_cluster(rng: np.random.Generator) -> Shape:
    """Foam: 3-8 small bubbles stuck together (they rise as one)."""
    strokes = []
    for _ in range(int(rng.integers(3, 9))):
        r = rng.uniform(1.2, 4.0)
        centre = rng.normal(0, 4.0, 2)
        strokes.append(Stroke(_circle(r, 16) + centre, 1, True, rng.uniform(0.2, 0.5), 0.0))
        if r > 2.0:
            strokes.append(
                Stroke(_circle(r * 0.5, 12) + centre, 1, True, 0.0, rng.uniform(0.15, 0.3))
            )
    return Shape("bubble_cluster", tuple(strokes), rng.uniform(0.3, 0.6))


def printing(rng: np.random.Generator) -> Shape:
    """Lot printing on the glass: a row of small dark glyphs (static, on the wall)."""
    height = rng.uniform(4.0, 9.0)
    n = int(rng.integers(3, 10))
    advance = height * rng.uniform(0.7, 1.0)
    strokes = []
    for i in range(n):
        k = int(rng.integers(2, 5))
        pts = rng.uniform(-0.5, 0.5, (k, 2)) * [height * 0.6, height]
        pts[:, 0] += (i - (n - 1) / 2) * advance
        strokes.append(Stroke(pts, 1, False, rng.uniform(0.3, 0.7), 0.0))
    return Shape("printing", tuple(strokes), rng.uniform(0.3, 0.7))


def wall_highlight(rng: np.random.Generator) -> Shape:
    """A thin vertical glare line on the wall with bright blobs at its ends (static)."""
    length = rng.uniform(20, 90)
    level = rng.uniform(0.15, 0.35)
    line = Stroke(np.array([[0.0, -length / 2], [0.0, length / 2]]), 1, False, 0.0, level)
    ends = []
    for y in (-length / 2, length / 2):
        r = rng.uniform(1.5, 4.0)
        ends.append(
            Stroke(_circle(r, 12) + np.array([0.0, y]), 0, True, 0.0, min(level * 1.6, 0.6))
        )
    return Shape("highlight", (line, *ends), rng.uniform(0.4, 1.0))


PARTICLE_SAMPLERS = {"fiber": fiber, "particle": particle, "glass_flake": glass_flake}
