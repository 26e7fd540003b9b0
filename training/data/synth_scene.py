"""The empty container: a back-lit glass vial on a diffuser, rendered in grey levels.

Lamp inspection images a container against a bright diffuser: the glass walls
refract light away (dark bands with bright refraction stripes inside them), the
liquid absorbs a little, the meniscus is a dark curve with a bright line under it,
and the lens vignettes. Everything is built from 1-D row/column profiles and
broadcasting, so one 1280x800 frame costs a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Container:
    """Pose and look of one container in image pixels; all floats, drawn per image."""

    cx: float  # centre column of the container
    half_width: float  # outer half width of the glass body
    top: float  # first row of the body (may lie above the frame: the shoulder is cut)
    bottom: float  # last row of the rounded bottom
    corner_radius: float  # radius of the rounded bottom corners
    fill: float  # row of the flat part of the liquid surface
    meniscus_rise: float  # how far the liquid climbs the wall (concave meniscus)
    diffuser: float  # diffuser brightness, 0..1
    vignette: float  # brightness loss at the frame corners
    liquid: float  # light transmitted by the liquid
    wall_dark: float  # depth of the dark refraction band at the walls
    highlight: float  # strength of the bright refraction stripe near each wall
    blur_sigma: float  # optics defocus on the static scene, px
    # The look families' extras (synth_looks.py); these defaults draw the classic vial.
    wall: float = 0.035  # width of the dark wall band, fraction of the half width
    tint: float = 1.0  # light the glass passes (amber glass: ~0.5)
    plunger: float = 0.0  # row where a cartridge's rubber plunger starts (0: none)
    neck: float = 0.0  # row of an ampoule's constriction ring above the liquid (0: none)

    def half_width_at(self, rows: np.ndarray) -> np.ndarray:
        """Inner half width per row (0 outside the body), rounding the bottom corners."""
        hw = np.full(rows.shape, self.half_width, dtype=np.float32)
        r = self.corner_radius
        yc = self.bottom - r
        dy = np.clip(rows - yc, 0.0, None)
        curve = self.half_width - r + np.sqrt(np.clip(r * r - dy * dy, 0.0, None))
        hw = np.where(rows > yc, curve, hw)
        hw[(rows < self.top) | (rows > self.bottom)] = 0.0
        return hw

    def meniscus_at(self, u: np.ndarray) -> np.ndarray:
        """Liquid surface row at normalised column u in [-1, 1] (0 = axis)."""
        edge = 1.0 - np.abs(u)
        return self.fill - self.meniscus_rise * np.exp(-edge / 0.08)

    def liquid_region(self, margin: float) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of a box inside the liquid, `margin` px from walls and surface."""
        x0 = self.cx - self.half_width + margin
        x1 = self.cx + self.half_width - margin
        y0 = self.fill + margin
        y1 = self.bottom - max(margin, 0.3 * self.corner_radius)
        if self.plunger:
            y1 = min(y1, self.plunger - margin)
        return x0, y0, x1, y1


def sample_container(rng: np.random.Generator, width: int, height: int) -> Container:
    """Draw a container pose, fill level and lighting that fit a `width` x `height` frame."""
    half_width = rng.uniform(0.2, 0.32) * width
    half_width = min(half_width, 0.45 * height * 1.6)
    cx = width / 2 + rng.uniform(-0.08, 0.08) * width
    bottom = height * rng.uniform(0.86, 0.97)
    top = height * rng.uniform(-0.15, 0.04)
    return Container(
        cx=cx,
        half_width=half_width,
        top=top,
        bottom=bottom,
        corner_radius=half_width * rng.uniform(0.12, 0.3),
        fill=top + (bottom - top) * rng.uniform(0.12, 0.3),
        meniscus_rise=rng.uniform(4, 14),
        diffuser=rng.uniform(0.72, 0.9),
        vignette=rng.uniform(0.1, 0.3),
        liquid=rng.uniform(0.86, 0.97),
        wall_dark=rng.uniform(0.45, 0.75),
        highlight=rng.uniform(0.08, 0.2),
        blur_sigma=rng.uniform(0.5, 1.1),
    )


def _wall_profile(c: Container, n: int = 1024) -> np.ndarray:
    """Glass transmission as a lookup table over |u| in [0, 1]: dark walls, bright stripes."""
    a = np.linspace(0.0, 1.0, n, dtype=np.float32)
    edge = 1.0 - a
    t = 1.0 - c.wall_dark * np.exp(-((edge / c.wall) ** 2))
    t += c.highlight * np.exp(-(((edge - (0.09 + 2.5 * (c.wall - 0.035))) / 0.025) ** 2))
    t *= 1.0 - 0.05 * a**2  # thicker glass seen obliquely near the walls
    return t.astype(np.float32)


def illumination(c: Container, width: int, height: int) -> np.ndarray:
    """The lit diffuser alone (H, W) float32: brightness with the lens' vignetting."""
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)
    vx = 1.0 - c.vignette * ((xs - width / 2) / (width / 2)) ** 2
    vy = 1.0 - c.vignette * ((ys - height / 2) / (height / 2)) ** 2
    return (c.diffuser * np.outer(vy, vx)).astype(np.float32)  # [H, W]


def render_container(c: Container, width: int, height: int) -> np.ndarray:
    """The static scene (H, W) float32 in [0, 1]: diffuser, glass, liquid, meniscus, blur."""
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)
    img = illumination(c, width, height)

    hw = c.half_width_at(ys)  # [H]
    rows = np.nonzero(hw > 1.0)[0]
    if rows.size:
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        x0 = max(int(np.floor(c.cx - c.half_width)) - 1, 0)
        x1 = min(int(np.ceil(c.cx + c.half_width)) + 2, width)
        sub_y = ys[r0:r1, None]  # [h, 1]
        u = (xs[None, x0:x1] - c.cx) / hw[r0:r1, None]  # [h, w]
        inside = np.abs(u) < 1.0
        lut = _wall_profile(c)
        idx = np.minimum((np.abs(u) * (len(lut) - 1)).astype(np.int32), len(lut) - 1)
        trans = np.where(inside, lut[idx], 1.0)

        surface = c.meniscus_at(np.clip(u, -1.0, 1.0))  # [h, w]
        d = sub_y - surface
        liquid = inside & (d > 0)
        trans = np.where(liquid, trans * c.liquid, trans)
        # The meniscus: dark refraction band at the surface, a bright line just below.
        band = np.exp(-((d / 2.5) ** 2)) * 0.55 - np.exp(-(((d - 6.0) / 2.0) ** 2)) * 0.12
        trans = np.where(inside, trans * (1.0 - band), trans)
        # The thick glass of the bottom: a dark rim following the rounded outline.
        rim = np.exp(-(((c.bottom - sub_y) / 5.0) ** 2)) * 0.6
        trans = np.where(inside, trans * (1.0 - rim), trans)
        if c.tint != 1.0:
            trans = np.where(inside, trans * c.tint, trans)
        if c.plunger:  # dark rubber with moulded ribs
            below = sub_y - c.plunger
            ribs = 0.1 + 0.06 * np.cos(below * (2 * np.pi / 11.0))
            trans = np.where(inside & (below > 0), trans * ribs, trans)
        if c.neck:  # the constriction ring: a dark band with a bright edge under it
            dn = sub_y - c.neck
            ring = np.exp(-((dn / 4.0) ** 2)) * 0.6 - np.exp(-(((dn - 7.0) / 2.0) ** 2)) * 0.15
            trans = np.where(inside, trans * (1.0 - ring), trans)
        img[r0:r1, x0:x1] *= trans

    cv2.GaussianBlur(img, (0, 0), c.blur_sigma, dst=img)
    return img
