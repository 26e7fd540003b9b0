"""Training augmentation: geometry sampled once, applied to image and boxes; photometric jitter;
letterbox to the model size; and the paired teacher/student view of distillation.

Geometry is a crop at native resolution (tiny particles keep their pixels) and a
horizontal flip; no vertical flip (particles sink, bubbles rise, that is physics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from calibration.noise import NoiseConfig, NoiseDraw, student_noise
from edge.preprocess import boxes_to_model, letterbox

from .dataset import Sample

MIN_VISIBLE = 0.5  # a box cut by a crop is kept if this share of its area remains
BLUR_SIGMA = (0.5, 1.5)  # px: out of focus, a 3-5 px speck still shows


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation."""

    size: Tuple[int, int] = (1280, 800)  # model input W, H (letterbox target)
    crop: Optional[Tuple[int, int]] = None  # W, H of a native-resolution crop, None = whole image
    crop_on_object: float = 0.5  # chance a crop is centred to hold a random box
    hflip: float = 0.5  # chance of a horizontal flip
    brightness: float = 0.1  # additive shift ~ U(-b, b) of full scale
    contrast: float = 0.15  # gain ~ U(1 - c, 1 + c) around the mean
    gamma: float = 0.15  # gamma ~ exp(U(-g, g))
    strength: float = 1.0  # scales brightness, contrast and gamma together (0: no jitter)
    blur: float = 0.0  # chance of a Gaussian blur, sigma ~ U(BLUR_SIGMA): focus drift


@dataclass(frozen=True)
class Geometry:
    x0: int  # crop origin in the source image
    y0: int
    w: int  # crop size (whole image when not cropping)
    h: int
    flip: bool


def sample_geometry(sample: Sample, cfg: AugmentConfig, rng: np.random.Generator) -> Geometry:
    h, w = sample.image.shape[:2]
    flip = bool(rng.random() < cfg.hflip)
    if cfg.crop is None:
        return Geometry(0, 0, w, h, flip)
    cw, ch = min(cfg.crop[0], w), min(cfg.crop[1], h)
    if len(sample.boxes) and rng.random() < cfg.crop_on_object:
        bx0, by0, bx1, by1 = sample.boxes[int(rng.integers(len(sample.boxes)))]
        # Any origin keeping that box inside the crop (or as much of it as fits).
        lo_x, hi_x = int(np.clip(bx1 - cw, 0, w - cw)), int(np.clip(bx0, 0, w - cw))
        lo_y, hi_y = int(np.clip(by1 - ch, 0, h - ch)), int(np.clip(by0, 0, h - ch))
        x0 = int(rng.integers(min(lo_x, hi_x), max(lo_x, hi_x) + 1))
        y0 = int(rng.integers(min(lo_y, hi_y), max(lo_y, hi_y) + 1))
    else:
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
    return Geometry(x0, y0, cw, ch, flip)


def apply_geometry(sample: Sample, geo: Geometry) -> Sample:
    """Crop and flip image and boxes; drop boxes with less than MIN_VISIBLE of them left."""
    img = sample.image[geo.y0 : geo.y0 + geo.h, geo.x0 : geo.x0 + geo.w]
    boxes = sample.boxes - np.array([geo.x0, geo.y0, geo.x0, geo.y0], dtype=np.float32)  # [N, 4]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, geo.w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, geo.h)
    kept_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = kept_area >= MIN_VISIBLE * np.maximum(area, 1e-6)
    boxes, labels = clipped[keep], sample.labels[keep]
    if geo.flip:
        img = img[:, ::-1]
        boxes = np.stack(
            [geo.w - boxes[:, 2], boxes[:, 1], geo.w - boxes[:, 0], boxes[:, 3]], axis=1
        )
    return Sample(
        np.ascontiguousarray(img), boxes.astype(np.float32).reshape(-1, 4), labels, sample.image_id
    )


def photometric(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Lamp and exposure drift: contrast around the mean, brightness shift, gamma, each
    scaled by `strength`; then, with chance `blur`, focus drift."""
    k = cfg.strength
    x = image.astype(np.float32) * (1.0 / 255.0)
    gain = rng.uniform(1 - k * cfg.contrast, 1 + k * cfg.contrast)
    x = (x - x.mean()) * gain + x.mean() + rng.uniform(-k * cfg.brightness, k * cfg.brightness)
    x = np.clip(x, 0.0, 1.0) ** np.exp(rng.uniform(-k * cfg.gamma, k * cfg.gamma))
    out = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    if cfg.blur > 0 and rng.random() < cfg.blur:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(*BLUR_SIGMA)))
    return out


def to_model(sample: Sample, size: Tuple[int, int]) -> Sample:
    """Letterbox image and boxes to the model input `size` (W, H), as the device does."""
    img, lb = letterbox(sample.image, size)
    return Sample(
        img, boxes_to_model(sample.boxes, lb).reshape(-1, 4), sample.labels, sample.image_id
    )


def augment(sample: Sample, cfg: AugmentConfig, rng: np.random.Generator) -> Sample:
    """Geometry, photometric jitter, letterbox: one training view."""
    s = apply_geometry(sample, sample_geometry(sample, cfg, rng))
    s = Sample(photometric(s.image, cfg, rng), s.boxes, s.labels, s.image_id)
    return to_model(s, cfg.size if cfg.crop is None else cfg.crop)


@dataclass
class PairedSample:
    """Distillation view: one geometry, the teacher's clean image, the student's noisy one."""

    teacher: np.ndarray  # [H, W, 3] uint8 clean
    student: np.ndarray  # [H, W, 3] uint8, same pixels plus student noise
    boxes: np.ndarray  # [N, 4] float32 xyxy, shared by both
    labels: np.ndarray  # [N] int64
    noise: NoiseDraw
    image_id: int


def paired_view(
    sample: Sample, cfg: AugmentConfig, noise: NoiseConfig, rng: np.random.Generator
) -> PairedSample:
    """The teacher and student see the same augmented image; only the student's gets noise."""
    s = augment(sample, cfg, rng)
    noisy, draw = student_noise(s.image, noise, rng)
    return PairedSample(s.image, noisy, s.boxes, s.labels, draw, s.image_id)


def noisy_letterboxed(
    image: np.ndarray, size: Tuple[int, int], noise: NoiseConfig, rng: np.random.Generator
) -> Tuple[np.ndarray, NoiseDraw]:
    """A calibration input: the edge letterbox, then the student noise (seeded by `rng`)."""
    boxed, _ = letterbox(image, size)
    return student_noise(boxed, noise, rng)


__all__ = [
    "AugmentConfig",
    "Geometry",
    "PairedSample",
    "augment",
    "noisy_letterboxed",
    "paired_view",
]
