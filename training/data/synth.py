"""Synthetic lamp-inspection frames and container sequences, seeded and deterministic.

One image: a container (synth_scene) with 0..N labelled particles and unlabelled
look-alikes (synth_sprites), sensor noise, 8-bit grey. One sequence: the same
container over F frames after spin-stop; particles swirl, drift and sink, bubbles
rise to the surface, scratches and reflections stay where they are.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from .synth_scene import Container, render_container, sample_container
from .synth_sprites import (
    Shape,
    Sprite,
    bubble,
    composite,
    fiber,
    glass_flake,
    particle,
    reflection,
    render_shape,
    scratch,
)

# (name, sampler): the category id of a class is its position here + 1.
CLASSES: Tuple[Tuple[str, Callable[[np.random.Generator], Shape]], ...] = (
    ("fiber", fiber),
    ("particle", particle),
    ("glass_flake", glass_flake),
)
CLASS_NAMES: Tuple[str, ...] = tuple(name for name, _ in CLASSES)


@dataclass(frozen=True)
class SynthConfig:
    """What the generator draws; the defaults mimic a 1280x800 lamp-inspection camera."""

    width: int = 1280
    height: int = 800
    negative_fraction: float = 0.3  # images with no particle: the detector must stay quiet
    max_particles: int = 4  # per positive image
    class_weights: Tuple[float, ...] = (0.35, 0.4, 0.25)  # fiber, particle, glass_flake
    max_bubbles: int = 4  # look-alikes per image, each count uniform in 0..max
    max_scratches: int = 3
    max_reflections: int = 2
    read_noise: Tuple[float, float] = (0.003, 0.01)  # sensor noise sigma, of full scale
    frames: int = 12  # per container sequence (a station takes ~10-20 after spin-stop)
    reject_fraction: float = 0.5  # containers holding at least one particle
    fps: float = 25.0  # sequence frame rate written to the video
    # The "hard" preset's knobs (1 and 0 draw nothing extra: the default set's bytes stay).
    contrast: float = 1.0  # particles' absorption and glow scaled by U(contrast, 1)
    defocus: float = 0.0  # particles' extra blur, px sigma ~ U(0, defocus)


# Named generator settings: `fod synth --preset`. "hard" is a benchmark on which the methods
# can be ranked: fainter and more defocused particles, more sensor noise, denser look-alikes.
PRESETS = {
    "default": {},
    "hard": {
        "contrast": 0.35,
        "defocus": 1.5,
        "read_noise": (0.012, 0.03),
        "max_bubbles": 8,
        "max_scratches": 5,
        "max_reflections": 3,
    },
}


@dataclass
class SceneObject:
    """One drawn object with its truth."""

    sprite: Sprite
    category_id: Optional[int]  # 1-based COCO id; None for an unlabelled look-alike
    track_id: int  # stable across the frames of a sequence
    box: Optional[Tuple[int, int, int, int]]  # COCO xywh of the changed pixels


@dataclass
class Frame:
    """A rendered frame: 8-bit grey image and every object drawn into it."""

    image: np.ndarray  # [H, W] uint8
    objects: List[SceneObject] = field(default_factory=list)

    @property
    def labelled(self) -> List[SceneObject]:
        return [o for o in self.objects if o.category_id is not None and o.box is not None]


@dataclass
class _Track:
    """An object and its motion: position at frame t = start + drift + decaying swirl."""

    shape: Shape
    category_id: Optional[int]
    x: float
    y: float
    vx: float = 0.0  # px/frame
    vy: float = 0.0  # px/frame, + sinks, - rises
    swirl: float = 0.0  # amplitude of the residual rotation of the liquid, px
    omega: float = 0.0  # its angular frequency, rad/frame
    phase: float = 0.0
    angle: float = 0.0  # orientation, rad
    spin: float = 0.0  # rad/frame
    bounds: Tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x0, y0, x1, y1 of centre

    def pose(self, t: int) -> Tuple[float, float, float]:
        x = (
            self.x
            + self.vx * t
            + self.swirl * math.sin(self.omega * t + self.phase) * math.exp(-t / 8)
        )
        y = self.y + self.vy * t
        x0, y0, x1, y1 = self.bounds
        return min(max(x, x0), x1), min(max(y, y0), y1), self.angle + self.spin * t


def _overlaps(box: Tuple[float, float, float, float], taken: List[Tuple[float, ...]]) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in taken)


def _place(
    rng: np.random.Generator,
    shape: Shape,
    region: Tuple[float, float, float, float],
    taken: List[Tuple[float, ...]],
    tries: int = 30,
) -> Optional[Tuple[float, float]]:
    """A centre in `region` whose padded extent overlaps nothing in `taken`, or None."""
    x0, y0, x1, y1 = region
    r = shape.radius() + 3 * shape.blur + 4
    if x1 - x0 < 2 * r or y1 - y0 < 2 * r:
        return None
    for _ in range(tries):
        cx, cy = rng.uniform(x0 + r, x1 - r), rng.uniform(y0 + r, y1 - r)
        box = (cx - r, cy - r, cx + r, cy + r)
        if not _overlaps(box, taken):
            taken.append(box)
            return cx, cy
    return None


def _draw_class(rng: np.random.Generator, cfg: SynthConfig) -> int:
    w = np.asarray(cfg.class_weights, dtype=np.float64)
    return int(rng.choice(len(CLASSES), p=w / w.sum()))


def _harder(shape: Shape, cfg: SynthConfig, rng: np.random.Generator) -> Shape:
    """A fainter, more defocused particle for the hard preset; untouched (and no draw from
    `rng`) at the default contrast 1 and defocus 0."""
    if cfg.contrast >= 1.0 and cfg.defocus <= 0.0:
        return shape
    k = rng.uniform(cfg.contrast, 1.0)
    strokes = tuple(
        dataclasses.replace(s, absorb=s.absorb * k, glow=s.glow * k) for s in shape.strokes
    )
    return dataclasses.replace(
        shape, strokes=strokes, blur=shape.blur + rng.uniform(0, cfg.defocus)
    )


def _sample_tracks(
    rng: np.random.Generator, cfg: SynthConfig, c: Container, n_particles: int, moving: bool
) -> List[_Track]:
    """Particles in the liquid and look-alikes, none overlapping at frame 0."""
    taken: List[Tuple[float, ...]] = []
    tracks: List[_Track] = []
    liquid = c.liquid_region(margin=12)
    glass = (c.cx - c.half_width + 6, max(c.top, 0) + 6, c.cx + c.half_width - 6, c.bottom - 6)
    walls = c.half_width * 0.75

    for _ in range(n_particles):
        k = _draw_class(rng, cfg)
        shape = _harder(CLASSES[k][1](rng), cfg, rng)
        # Sequences start particles in the upper liquid so they have room to sink.
        region = (liquid[0], liquid[1], liquid[2], liquid[1] + 0.7 * (liquid[3] - liquid[1]))
        pos = _place(rng, shape, region if moving else liquid, taken)
        if pos is None:
            continue
        pad = shape.radius()
        tr = _Track(
            shape,
            k + 1,
            *pos,
            bounds=(liquid[0] + pad, liquid[1] + pad, liquid[2] - pad, liquid[3] - pad),
        )
        if moving:
            tr.vx = rng.normal(0, 0.8)
            tr.vy = rng.uniform(0.8, 5.0)
            tr.swirl = rng.uniform(5, 25)
            tr.omega = rng.uniform(0.2, 0.6)
            tr.phase = rng.uniform(0, 2 * np.pi)
            tr.spin = rng.normal(0, 0.08)
        tr.angle = rng.uniform(0, 2 * np.pi)
        tracks.append(tr)

    for _ in range(int(rng.integers(0, cfg.max_bubbles + 1))):
        shape = bubble(rng)
        pos = _place(rng, shape, liquid, taken)
        if pos is not None:
            pad = shape.radius()
            tr = _Track(
                shape,
                None,
                *pos,
                bounds=(liquid[0] + pad, c.fill + 2 * pad, liquid[2] - pad, liquid[3]),
            )
            if moving:
                tr.vy = -rng.uniform(2.0, 9.0)
                tr.vx = rng.normal(0, 0.5)
            tracks.append(tr)
    for _ in range(int(rng.integers(0, cfg.max_scratches + 1))):
        shape = scratch(rng)
        pos = _place(rng, shape, glass, taken)
        if pos is not None:
            tracks.append(_Track(shape, None, *pos, bounds=(-1e9, -1e9, 1e9, 1e9)))
    for _ in range(int(rng.integers(0, cfg.max_reflections + 1))):
        shape = reflection(rng)
        side = rng.choice([-1.0, 1.0])
        x = c.cx + side * rng.uniform(0.55, 0.85) * walls
        region = (x - 12, glass[1], x + 12, glass[3])
        pos = _place(rng, shape, region, taken, tries=5)
        if pos is not None:
            tracks.append(_Track(shape, None, *pos, bounds=(-1e9, -1e9, 1e9, 1e9)))
    return tracks


def _render_frame(
    rng: np.random.Generator, cfg: SynthConfig, scene: np.ndarray, tracks: List[_Track], t: int
) -> Frame:
    img = scene.copy()
    objects = []
    for tid, tr in enumerate(tracks):
        x, y, angle = tr.pose(t)
        sprite = render_shape(tr.shape, x, y, angle)
        composite(img, sprite)
        objects.append(SceneObject(sprite, tr.category_id, tid, sprite.box(cfg.width, cfg.height)))
    sigma = rng.uniform(*cfg.read_noise)
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    img = img * 255.0 + noise * (sigma * 255.0)
    np.clip(img, 0, 255, out=img)
    return Frame(np.rint(img).astype(np.uint8), objects)


def render_image(rng: np.random.Generator, cfg: SynthConfig) -> Frame:
    """One independent still frame; about `negative_fraction` of them hold no particle."""
    c = sample_container(rng, cfg.width, cfg.height)
    n = 0 if rng.random() < cfg.negative_fraction else int(rng.integers(1, cfg.max_particles + 1))
    tracks = _sample_tracks(rng, cfg, c, n, moving=False)
    return _render_frame(rng, cfg, render_container(c, cfg.width, cfg.height), tracks, 0)


def render_sequence(rng: np.random.Generator, cfg: SynthConfig) -> Tuple[bool, Iterator[Frame]]:
    """One container after spin-stop: (holds a particle, lazily rendered frames).

    A container drawn as `reject` always has at least one labelled particle in frame 0.
    """
    c = sample_container(rng, cfg.width, cfg.height)
    reject = bool(rng.random() < cfg.reject_fraction)
    n = int(rng.integers(1, min(cfg.max_particles, 3) + 1)) if reject else 0
    tracks = _sample_tracks(rng, cfg, c, n, moving=True)
    if reject and not any(tr.category_id is not None for tr in tracks):
        reject = False  # nothing fitted: the truth must follow what was drawn
    scene = render_container(c, cfg.width, cfg.height)
    return reject, (_render_frame(rng, cfg, scene, tracks, t) for t in range(cfg.frames))
