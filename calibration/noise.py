"""The student noise: random sensor noise on the student's images (docs/design.md).

The teacher sees the clean image; the student the same pixels with noise, so
distillation teaches it to see particles through noise. With probability p an image
gets, in this order: Poisson shot noise (signal dependent), Gaussian read noise with
sigma ~ U(0, 0.05) of full scale, and salt-and-pepper on up to 0.5 % of pixels.
Everything is drawn from the generator passed in: the same seed gives the same noise,
which is how the INT8 calibration set is made reproducibly.

It lives here, numpy only, so INT8 calibration and training draw from one model without
calibration importing training. A grey image (one plane, or three equal planes: a mono
frame widened) gets its noise drawn once on the grey plane and then widened, as the
device's sensor produces it; per-channel noise would be colour noise a mono line never sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np


@dataclass(frozen=True)
class NoiseConfig:
    """Student-noise distribution."""

    p: float = 0.5  # fraction of images that get noise at all; the rest stay clean
    gaussian_sigma_max: float = 0.05  # read noise sigma ~ U(0, this), of full scale
    poisson: bool = True  # shot noise on
    photons: Tuple[float, float] = (50.0, 2000.0)  # full-scale photon count, log-uniform
    salt_pepper_max: float = 0.005  # fraction of pixels forced to 0 or 255 ~ U(0, this)

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"noise p must be in [0, 1], got {self.p}")
        if self.gaussian_sigma_max < 0 or not 0 <= self.salt_pepper_max <= 1:
            raise ValueError("noise amplitudes must be non-negative (salt-and-pepper at most 1)")
        if not 0 < self.photons[0] <= self.photons[1]:
            raise ValueError(f"photon range must be positive and ordered, got {self.photons}")


@dataclass(frozen=True)
class NoiseDraw:
    """What one image got; recorded so a calibration report can name it."""

    applied: bool
    gaussian_sigma: float = 0.0  # of full scale
    photons: float = 0.0  # full-scale photon count; 0 = no shot noise
    salt_pepper: float = 0.0  # fraction of pixels


def sample_noise(cfg: NoiseConfig, rng: np.random.Generator) -> NoiseDraw:
    """Draw the noise parameters of one image."""
    if rng.random() >= cfg.p:
        return NoiseDraw(False)
    lo, hi = math.log(cfg.photons[0]), math.log(cfg.photons[1])
    return NoiseDraw(
        True,
        gaussian_sigma=float(rng.uniform(0.0, cfg.gaussian_sigma_max)),
        photons=float(math.exp(rng.uniform(lo, hi))) if cfg.poisson else 0.0,
        salt_pepper=float(rng.uniform(0.0, cfg.salt_pepper_max)),
    )


def add_poisson_noise(image: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise: counts ~ Poisson(image / 255 * photons), rescaled. uint8 in, float32 out."""
    lam = image.astype(np.float32) * (photons / 255.0)
    return rng.poisson(lam).astype(np.float32) * (255.0 / photons)


def add_gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Read noise: + N(0, (sigma * 255)^2) per value. Returns float32 (not clipped)."""
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma * 255.0)
    return image.astype(np.float32) + noise


def add_salt_pepper(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Set a fraction `amount` of pixels (all channels together) to 0 or 255, half each."""
    out = image.copy()
    h, w = image.shape[:2]
    n = round(amount * h * w)
    if n == 0:
        return out
    idx = rng.choice(h * w, size=n, replace=False)
    ys, xs = np.divmod(idx, w)
    out[ys, xs] = (
        np.where(rng.random(n) < 0.5, 0, 255)
        .astype(out.dtype)
        .reshape((n,) + (1,) * (out.ndim - 2))
    )
    return out


def is_grey(image: np.ndarray) -> bool:
    """[H, W], or [H, W, 3] whose three planes are equal (a grey frame widened)."""
    if image.ndim == 2:
        return True
    return (
        image.ndim == 3
        and image.shape[2] == 3
        and np.array_equal(image[..., 0], image[..., 1])
        and np.array_equal(image[..., 1], image[..., 2])
    )


def apply_noise(image: np.ndarray, draw: NoiseDraw, rng: np.random.Generator) -> np.ndarray:
    """Apply a drawn noise to a uint8 image (H, W[, C]); returns uint8 of the same shape.
    A widened grey image is noised on its grey plane, then widened again."""
    if not draw.applied:
        return image.copy()
    if image.ndim == 3 and is_grey(image):
        plane = _apply(np.ascontiguousarray(image[..., 0]), draw, rng)  # [H, W]
        return np.repeat(plane[..., None], image.shape[2], axis=2)
    return _apply(image, draw, rng)


def _apply(image: np.ndarray, draw: NoiseDraw, rng: np.random.Generator) -> np.ndarray:
    x = image.astype(np.float32)
    if draw.photons > 0:
        x = add_poisson_noise(image, draw.photons, rng)
    if draw.gaussian_sigma > 0:
        x = add_gaussian_noise(x, draw.gaussian_sigma, rng)
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if draw.salt_pepper > 0:
        out = add_salt_pepper(out, draw.salt_pepper, rng)
    return out


def student_noise(
    image: np.ndarray, cfg: NoiseConfig, rng: np.random.Generator
) -> Tuple[np.ndarray, NoiseDraw]:
    """Draw and apply the student noise to one uint8 image."""
    draw = sample_noise(cfg, rng)
    return apply_noise(image, draw, rng), draw
