"""Look families for `fod synth --look`: container, lighting, background, camera, look-alikes.

A line's look is its own vial, lamp, background and bubbles. A family is a set of ranges;
every image draws one concrete `Look` from its family and the set records it beside the
image. `random` draws each image's family among the training families; a family marked
`train=False` is never drawn by `random`, so a model trained on `random` can be measured
on a look it never saw. The classic look (the first sets' vial) is synth.py's own path,
byte for byte; `random` draws it too, as one family among the others.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Tuple

import cv2
import numpy as np

from .synth_scene import Container, illumination, render_container
from .synth_sprites import Shape, Sprite, overlap


@dataclass(frozen=True)
class Family:
    """The ranges one look family draws from."""

    containers: Tuple[str, ...]
    lighting: Tuple[str, ...]
    backgrounds: Tuple[str, ...]
    tint: Tuple[float, float] = (0.88, 1.0)  # light the glass passes
    train: bool = True  # False: never drawn by `--look random` (held out)


FAMILIES: Dict[str, Family] = {
    "vial": Family(("vial", "bottle"), ("backlight",), ("diffuser", "gradient", "mottled")),
    "ampoule": Family(("ampoule",), ("backlight", "sidelight"), ("diffuser", "stripes")),
    "amber": Family(("vial", "ampoule"), ("backlight",), ("diffuser", "gradient"), (0.45, 0.7)),
    "darkfield": Family(("vial", "ampoule", "bottle"), ("darkfield",), ("diffuser", "mottled")),
    # Held out: a container, a background and a light set-up no training family has.
    "cartridge": Family(("cartridge",), ("sidelight",), ("checker", "stripes"), train=False),
}
TRAIN_FAMILIES = ("classic", *(name for name, f in FAMILIES.items() if f.train))
HELD_OUT = tuple(name for name, f in FAMILIES.items() if not f.train)
LOOK_CHOICES = ("classic", "random", *FAMILIES)


@dataclass(frozen=True)
class Look:
    """One image's drawn look; written to the set as a dict."""

    family: str
    container: str
    lighting: str
    background: str
    tint: float
    wall: float  # dark wall band width, fraction of the half width
    light: float  # diffuser brightness (back light) or edge glow gain (dark field)
    side: float  # side light: -1 lit from the left, +1 from the right, 0 none
    pattern_contrast: float
    pattern_period: float  # px
    pattern_angle: float  # rad
    pattern_seed: int
    vignette: float
    optics_blur: float  # px sigma on the static scene
    gain: float
    gamma: float
    read_noise: float  # sigma, of full scale
    shot_noise: float  # sigma at full scale; scales with sqrt(signal)
    bright_particles: float  # chance a particle glints instead of absorbing
    min_opacity: float  # particles' absorption scaled by U(min_opacity, 1)
    defocus: float  # particles' extra blur, px sigma ~ U(0, defocus)
    bubble_rims: float  # chance a bubble keeps its dark rim
    bubbles: int  # most look-alikes of each kind per image
    clusters: int
    scratches: int
    printing: int
    highlights: int
    reflections: int

    def as_dict(self) -> Dict[str, object]:
        return {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in dataclasses.asdict(self).items()
        }


def sample_look(rng: np.random.Generator, family: str) -> Look:
    """One look of `family` (a key of FAMILIES)."""
    f = FAMILIES[family]
    lighting = str(rng.choice(f.lighting))
    return Look(
        family=family,
        container=str(rng.choice(f.containers)),
        lighting=lighting,
        background=str(rng.choice(f.backgrounds)),
        tint=float(rng.uniform(*f.tint)),
        wall=float(rng.uniform(0.025, 0.08)),
        light=float(rng.uniform(0.6, 0.95) if lighting != "darkfield" else rng.uniform(0.5, 1.2)),
        side=float(rng.choice([-1.0, 1.0])) if lighting == "sidelight" else 0.0,
        pattern_contrast=float(rng.uniform(0.03, 0.15)),
        pattern_period=float(rng.uniform(14, 70)),
        pattern_angle=float(rng.uniform(0, np.pi)),
        pattern_seed=int(rng.integers(0, 2**31)),
        vignette=float(rng.uniform(0.05, 0.4)),
        optics_blur=float(rng.uniform(0.5, 1.6)),
        gain=float(rng.uniform(0.75, 1.25)),
        gamma=float(rng.uniform(0.8, 1.25)),
        read_noise=float(rng.uniform(0.003, 0.02)),
        shot_noise=float(rng.uniform(0.0, 0.02)),
        bright_particles=float(rng.uniform(0.0, 0.3)),
        min_opacity=float(rng.uniform(0.4, 0.9)),
        defocus=float(rng.uniform(0.0, 1.5)),
        bubble_rims=float(rng.uniform(0.0, 1.0)),
        bubbles=int(rng.integers(0, 9)),
        clusters=int(rng.integers(0, 3)),
        scratches=int(rng.integers(0, 5)),
        printing=int(rng.integers(0, 2)),
        highlights=int(rng.integers(0, 4)),
        reflections=int(rng.integers(0, 3)),
    )


# Relative container proportions per type: half width (of the frame width), bottom corner
# radius (of the half width), fill row (of the body height).
_PROPORTIONS = {
    "vial": ((0.2, 0.32), (0.12, 0.3), (0.12, 0.3)),
    "ampoule": ((0.12, 0.2), (0.3, 0.6), (0.25, 0.4)),
    "cartridge": ((0.09, 0.14), (0.03, 0.08), (0.05, 0.15)),
    "bottle": ((0.3, 0.42), (0.2, 0.4), (0.1, 0.25)),
}


def sample_container_for(
    rng: np.random.Generator, look: Look, width: int, height: int
) -> Container:
    """A container of the look's type that fits a `width` x `height` frame."""
    hw_range, corner_range, fill_range = _PROPORTIONS[look.container]
    half_width = min(rng.uniform(*hw_range) * width, 0.45 * height * 1.6)
    bottom = height * rng.uniform(0.86, 0.97)
    top = height * rng.uniform(-0.15, 0.04)
    fill = top + (bottom - top) * rng.uniform(*fill_range)
    plunger = bottom - height * rng.uniform(0.08, 0.14) if look.container == "cartridge" else 0.0
    neck = fill - height * rng.uniform(0.05, 0.1) if look.container == "ampoule" else 0.0
    return Container(
        cx=width / 2 + rng.uniform(-0.08, 0.08) * width,
        half_width=half_width,
        top=top,
        bottom=bottom,
        corner_radius=half_width * rng.uniform(*corner_range),
        fill=fill,
        meniscus_rise=rng.uniform(3, 16),
        diffuser=look.light if look.lighting != "darkfield" else 0.85,
        vignette=look.vignette,
        liquid=rng.uniform(0.84, 0.98),
        wall_dark=rng.uniform(0.35, 0.8),
        highlight=rng.uniform(0.05, 0.3),
        blur_sigma=look.optics_blur,
        wall=look.wall,
        tint=look.tint,
        plunger=plunger if plunger > fill + 60 else 0.0,
        neck=neck if neck > max(top, 0) + 10 else 0.0,
    )


def background_pattern(look: Look, width: int, height: int) -> np.ndarray:
    """The diffuser's texture (H, W) float32 around 1: what stands behind the container."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    a = look.pattern_contrast
    u = xs * np.cos(look.pattern_angle) + ys * np.sin(look.pattern_angle)
    if look.background == "gradient":
        span = float(u.max() - u.min()) or 1.0
        p = 1.0 + 2 * a * ((u - u.min()) / span - 0.5)
    elif look.background == "stripes":
        p = 1.0 + a * np.sin(u * (2 * np.pi / look.pattern_period))
    elif look.background == "checker":
        period = look.pattern_period
        sq = np.sign(np.sin(xs * (np.pi / period))) * np.sign(np.sin(ys * (np.pi / period)))
        p = cv2.GaussianBlur((1.0 + a * sq).astype(np.float32), (0, 0), 1.5)
    elif look.background == "mottled":
        grid = np.random.default_rng(look.pattern_seed).standard_normal(
            (height // 48 + 2, width // 48 + 2)
        )
        p = 1.0 + a * cv2.resize(grid.astype(np.float32), (width, height), cv2.INTER_CUBIC)
    else:
        p = np.ones((height, width), np.float32)
    if look.side:
        r = xs / max(width - 1, 1)
        r = r if look.side > 0 else 1.0 - r
        p = p * (0.35 + 0.65 * r**1.5)
    return np.asarray(p, dtype=np.float32)


def render_scene(look: Look, c: Container, width: int, height: int) -> np.ndarray:
    """The static scene (H, W) float32 under the look's light: back, side or dark field."""
    pattern = background_pattern(look, width, height)
    lit = render_container(c, width, height) * pattern
    if look.lighting != "darkfield":
        return lit
    # Dark field: no direct light reaches the lens; what refracts (walls, meniscus) glows.
    empty = illumination(c, width, height) * pattern
    return 0.06 * pattern + look.light * np.clip(empty - lit, 0.0, None)


def style_particle(shape: Shape, look: Look, rng: np.random.Generator) -> Shape:
    """The look's particle: translucent to opaque, sometimes glinting, in or out of focus."""
    k = rng.uniform(look.min_opacity, 1.0)
    bright = rng.random() < look.bright_particles
    strokes = tuple(
        dataclasses.replace(
            s,
            absorb=0.0 if bright else s.absorb * k,
            glow=s.glow * k + (s.absorb * k * 0.6 if bright else 0.0),
        )
        for s in shape.strokes
    )
    return dataclasses.replace(
        shape, strokes=strokes, blur=shape.blur + rng.uniform(0, look.defocus)
    )


def composite_look(image: np.ndarray, sprite: Sprite, look: Look) -> None:
    """Draw a sprite under the look's light, in place. In dark field what absorbs back light
    scatters side light: it glows. Changed pixels stay exactly the sprite's mask."""
    o = overlap(image, sprite)
    if o is None:
        return
    region, a, g = o
    if look.lighting == "darkfield":
        region += 0.7 * a + g
    else:
        region *= 1.0 - a
        region += g


def camera(image: np.ndarray, look: Look, rng: np.random.Generator) -> np.ndarray:
    """Gain, gamma, shot and read noise -> uint8 [H, W]."""
    img = np.clip(image * look.gain, 0.0, 1.0) ** look.gamma
    sigma = np.sqrt(look.read_noise**2 + look.shot_noise**2 * img)
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    out = img * 255.0 + noise * sigma * 255.0
    np.clip(out, 0, 255, out=out)
    return np.rint(out).astype(np.uint8)
