"""Synthetic lamp-inspection frames and container sequences, seeded and deterministic.

One image: a container (synth_scene) with 0..N labelled particles and unlabelled
look-alikes (synth_sprites), sensor noise, 8-bit grey, under a look (synth_looks: the
classic vial, or a family's container, light, background and camera). One sequence: the same
container over F frames after spin-stop; particles swirl, drift and sink, bubbles
rise to the surface, scratches and reflections stay where they are.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .synth_looks import (
    TRAIN_FAMILIES,
    Look,
    camera,
    composite_look,
    render_scene,
    sample_container_for,
    sample_look,
    style_particle,
)
from .synth_scene import Container, render_container, sample_container
from .synth_sprites import (
    Shape,
    Sprite,
    bubble,
    bubble_cluster,
    bubble_plain,
    composite,
    fiber,
    glass_flake,
    particle,
    printing,
    reflection,
    render_shape,
    scratch,
    wall_highlight,
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
    look: str = "classic"  # synth_looks: classic (the first sets' look), random, a family


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
    look: Optional[Look] = None  # None: the classic look

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


@dataclass(frozen=True)
class Decor:
    """One kind of unlabelled look-alike: its sampler, how many at most, and where it lives:
    "liquid" (rises in a sequence, like a bubble), "glass" (static on the glass) or "wall"
    (static, near a wall: glare and reflections)."""

    sampler: Callable[[np.random.Generator], Shape]
    max_count: int
    where: str


def classic_decor(cfg: SynthConfig) -> Tuple[Decor, ...]:
    return (
        Decor(bubble, cfg.max_bubbles, "liquid"),
        Decor(scratch, cfg.max_scratches, "glass"),
        Decor(reflection, cfg.max_reflections, "wall"),
    )


def look_decor(look: Look) -> Tuple[Decor, ...]:
    def bubbles(rng: np.random.Generator) -> Shape:
        return bubble(rng) if rng.random() < look.bubble_rims else bubble_plain(rng)

    return (
        Decor(bubbles, look.bubbles, "liquid"),
        Decor(bubble_cluster, look.clusters, "liquid"),
        Decor(scratch, look.scratches, "glass"),
        Decor(printing, look.printing, "glass"),
        Decor(wall_highlight, look.highlights, "wall"),
        Decor(reflection, look.reflections, "wall"),
    )


def _sample_tracks(
    rng: np.random.Generator,
    cfg: SynthConfig,
    c: Container,
    n_particles: int,
    moving: bool,
    decor: Sequence[Decor],
    style: Callable[[Shape, np.random.Generator], Shape],
) -> List[_Track]:
    """Particles in the liquid and look-alikes, none overlapping at frame 0."""
    taken: List[Tuple[float, ...]] = []
    tracks: List[_Track] = []
    liquid = c.liquid_region(margin=12)
    glass = (c.cx - c.half_width + 6, max(c.top, 0) + 6, c.cx + c.half_width - 6, c.bottom - 6)
    walls = c.half_width * 0.75

    for _ in range(n_particles):
        k = _draw_class(rng, cfg)
        shape = _harder(style(CLASSES[k][1](rng), rng), cfg, rng)
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

    fixed = (-1e9, -1e9, 1e9, 1e9)
    for d in decor:
        for _ in range(int(rng.integers(0, d.max_count + 1))):
            shape = d.sampler(rng)
            if d.where == "liquid":
                pos = _place(rng, shape, liquid, taken)
                if pos is None:
                    continue
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
            elif d.where == "glass":
                pos = _place(rng, shape, glass, taken)
                if pos is not None:
                    tracks.append(_Track(shape, None, *pos, bounds=fixed))
            else:
                side = rng.choice([-1.0, 1.0])
                x = c.cx + side * rng.uniform(0.55, 0.85) * walls
                pos = _place(rng, shape, (x - 12, glass[1], x + 12, glass[3]), taken, tries=5)
                if pos is not None:
                    tracks.append(_Track(shape, None, *pos, bounds=fixed))
    return tracks


def _render_frame(
    rng: np.random.Generator,
    cfg: SynthConfig,
    scene: np.ndarray,
    tracks: List[_Track],
    t: int,
    look: Optional[Look] = None,
) -> Frame:
    img = scene.copy()
    objects = []
    for tid, tr in enumerate(tracks):
        x, y, angle = tr.pose(t)
        sprite = render_shape(tr.shape, x, y, angle)
        if look is None:
            composite(img, sprite)
        else:
            composite_look(img, sprite, look)
        objects.append(SceneObject(sprite, tr.category_id, tid, sprite.box(cfg.width, cfg.height)))
    if look is not None:
        return Frame(camera(img, look, rng), objects, look)
    sigma = rng.uniform(*cfg.read_noise)
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    img = img * 255.0 + noise * (sigma * 255.0)
    np.clip(img, 0, 255, out=img)
    return Frame(np.rint(img).astype(np.uint8), objects)


@dataclass(frozen=True)
class _Scene:
    """What one image or sequence draws before its particles: its look (None: classic)
    and container; the look-alikes and the particles' style follow from the look."""

    look: Optional[Look]
    container: Container

    def decor(self, cfg: SynthConfig) -> Tuple[Decor, ...]:
        return classic_decor(cfg) if self.look is None else look_decor(self.look)

    def style(self, shape: Shape, rng: np.random.Generator) -> Shape:
        return shape if self.look is None else style_particle(shape, self.look, rng)

    def render(self, cfg: SynthConfig) -> np.ndarray:
        if self.look is None:
            return render_container(self.container, cfg.width, cfg.height)
        return render_scene(self.look, self.container, cfg.width, cfg.height)


def _draw_scene(rng: np.random.Generator, cfg: SynthConfig) -> _Scene:
    family = str(rng.choice(TRAIN_FAMILIES)) if cfg.look == "random" else cfg.look
    if family == "classic":  # the first sets' draws, in their order: same seed, same bytes
        return _Scene(None, sample_container(rng, cfg.width, cfg.height))
    look = sample_look(rng, family)
    return _Scene(look, sample_container_for(rng, look, cfg.width, cfg.height))


def render_image(rng: np.random.Generator, cfg: SynthConfig) -> Frame:
    """One independent still frame; about `negative_fraction` of them hold no particle."""
    sc = _draw_scene(rng, cfg)
    n = 0 if rng.random() < cfg.negative_fraction else int(rng.integers(1, cfg.max_particles + 1))
    tracks = _sample_tracks(rng, cfg, sc.container, n, False, sc.decor(cfg), sc.style)
    return _render_frame(rng, cfg, sc.render(cfg), tracks, 0, sc.look)


def render_sequence(rng: np.random.Generator, cfg: SynthConfig) -> Tuple[bool, Iterator[Frame]]:
    """One container after spin-stop: (holds a particle, lazily rendered frames).

    A container drawn as `reject` always has at least one labelled particle in frame 0.
    """
    sc = _draw_scene(rng, cfg)
    reject = bool(rng.random() < cfg.reject_fraction)
    n = int(rng.integers(1, min(cfg.max_particles, 3) + 1)) if reject else 0
    tracks = _sample_tracks(rng, cfg, sc.container, n, True, sc.decor(cfg), sc.style)
    if reject and not any(tr.category_id is not None for tr in tracks):
        reject = False  # nothing fitted: the truth must follow what was drawn
    scene = sc.render(cfg)
    return reject, (_render_frame(rng, cfg, scene, tracks, t, sc.look) for t in range(cfg.frames))
