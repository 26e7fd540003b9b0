"""Student noise statistics, seeded reproducibility, and the paired teacher/student view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration.noise import (
    NoiseConfig,
    NoiseDraw,
    add_gaussian_noise,
    add_poisson_noise,
    add_salt_pepper,
    apply_noise,
    sample_noise,
    student_noise,
)
from edge.preprocess import boxes_to_model, boxes_to_source, letterbox, letterbox_params
from training.data.augment import (
    AugmentConfig,
    apply_geometry,
    augment,
    paired_view,
    photometric,
    sample_geometry,
)
from training.data.dataset import CocoDetection, Sample

GREY = np.full((400, 500, 3), 128, np.uint8)


def test_gaussian_sigma_matches() -> None:
    out = add_gaussian_noise(GREY, 0.03, np.random.default_rng(0))
    resid = out - 128.0
    assert abs(resid.mean()) < 0.1
    assert resid.std() == pytest.approx(0.03 * 255, rel=0.02)


def test_poisson_variance_follows_signal() -> None:
    photons = 100.0
    for level in (64, 192):
        img = np.full((300, 300), level, np.uint8)
        out = add_poisson_noise(img, photons, np.random.default_rng(1))
        # counts ~ Poisson(level/255 * photons): variance in grey levels = level * 255 / photons
        assert out.mean() == pytest.approx(level, rel=0.01)
        assert out.var() == pytest.approx(level * 255 / photons, rel=0.05)


def test_salt_pepper_fraction_and_values() -> None:
    out = add_salt_pepper(GREY, 0.004, np.random.default_rng(2))
    changed = np.any(out != 128, axis=2)
    assert changed.sum() == round(0.004 * 400 * 500)
    vals = out[changed]
    assert set(np.unique(vals)) <= {0, 255}
    assert np.all(vals[:, :1] == vals)  # all channels of a pixel together
    assert 0.3 < (vals[:, 0] == 255).mean() < 0.7


def test_sampled_parameters_follow_config() -> None:
    cfg = NoiseConfig()
    rng = np.random.default_rng(3)
    draws = [sample_noise(cfg, rng) for _ in range(4000)]
    applied = [d for d in draws if d.applied]
    assert len(applied) / len(draws) == pytest.approx(cfg.p, abs=0.03)
    sig = np.array([d.gaussian_sigma for d in applied])
    sp = np.array([d.salt_pepper for d in applied])
    ph = np.array([d.photons for d in applied])
    assert sig.min() >= 0 and sig.max() <= cfg.gaussian_sigma_max
    assert sig.mean() == pytest.approx(cfg.gaussian_sigma_max / 2, rel=0.05)
    assert sp.max() <= cfg.salt_pepper_max and sp.mean() == pytest.approx(
        cfg.salt_pepper_max / 2, rel=0.05
    )
    assert cfg.photons[0] <= ph.min() and ph.max() <= cfg.photons[1]
    assert np.median(np.log(ph)) == pytest.approx(
        np.log(cfg.photons).mean(), abs=0.15
    )  # log-uniform


def test_same_seed_same_noise_and_p0_is_identity() -> None:
    a, da = student_noise(GREY, NoiseConfig(p=1.0), np.random.default_rng(42))
    b, db = student_noise(GREY, NoiseConfig(p=1.0), np.random.default_rng(42))
    c, _ = student_noise(GREY, NoiseConfig(p=1.0), np.random.default_rng(43))
    assert da == db and np.array_equal(a, b) and not np.array_equal(a, c)
    same, d = student_noise(GREY, NoiseConfig(p=0.0), np.random.default_rng(0))
    assert d == NoiseDraw(False) and np.array_equal(same, GREY)
    assert apply_noise(GREY, NoiseDraw(True), np.random.default_rng(0)).dtype == np.uint8


def test_bad_noise_config() -> None:
    with pytest.raises(ValueError, match="p must be"):
        NoiseConfig(p=1.5)


def _sample() -> Sample:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 30, 36], [200, 100, 212, 110]], np.float32)
    return Sample(img, boxes, np.array([0, 2]), 1)


def test_paired_view_identical_geometry() -> None:
    cfg = AugmentConfig(size=(320, 256), crop=(160, 128), crop_on_object=1.0)
    noise = NoiseConfig(p=1.0, salt_pepper_max=0.0)
    for seed in range(10):
        pv = paired_view(_sample(), cfg, noise, np.random.default_rng(seed))
        plain = augment(_sample(), cfg, np.random.default_rng(seed))
        # The teacher's view is exactly the un-noised augmentation with the same draws ...
        assert np.array_equal(pv.teacher, plain.image)
        np.testing.assert_array_equal(pv.boxes, plain.boxes)
        assert pv.teacher.shape == pv.student.shape == (128, 160, 3)
        assert len(pv.boxes) >= 1  # crop_on_object keeps a particle in view
        # ... and the student differs from it only by zero-mean noise: no shift, no flip.
        diff = pv.student.astype(np.float32) - pv.teacher
        assert abs(diff.mean()) < 2.0
        corr = np.corrcoef(pv.student.ravel(), pv.teacher.ravel())[0, 1]
        assert corr > 0.9


def test_crop_and_flip_move_boxes_with_pixels() -> None:
    s = _sample()
    s.image[:] = 0
    s.image[20:36, 10:30] = 255  # box 0 drawn into the image
    cfg = AugmentConfig(crop=(100, 80), crop_on_object=1.0, hflip=1.0)
    for seed in range(5):
        geo = sample_geometry(
            Sample(s.image, s.boxes[:1], s.labels[:1], 1), cfg, np.random.default_rng(seed)
        )
        out = apply_geometry(s, geo)
        assert len(out.boxes) == 1
        x0, y0, x1, y1 = out.boxes[0].astype(int)
        ys, xs = np.nonzero(out.image[..., 0])
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)


def test_letterbox_round_trip() -> None:
    img = np.zeros((800, 1280, 3), np.uint8)
    out, lb = letterbox(img, (640, 640))
    assert out.shape == (640, 640, 3) and lb.scale == 0.5 and lb.pad_y == 120
    boxes = np.array([[100, 200, 120, 230]], np.float32)
    np.testing.assert_allclose(boxes_to_source(boxes_to_model(boxes, lb), lb), boxes, atol=1e-4)
    with pytest.raises(ValueError):
        letterbox_params((0, 10), (64, 64))


def test_dataset_reads_synthetic_set(small_set: Path) -> None:
    ds = CocoDetection(small_set)
    assert ds.class_names == ["fiber", "particle", "glass_flake"]
    s = ds[0]
    assert s.image.shape == (256, 320, 3) and s.image.dtype == np.uint8
    assert s.boxes.shape[1] == 4 and s.boxes.dtype == np.float32
    assert np.all(s.boxes[:, 2:] > s.boxes[:, :2])


def test_grey_images_get_grey_noise() -> None:
    """A mono frame widened to RGB is noised once on its grey plane (R = G = B after), as
    the device's sensor sees it; a colour image keeps per-channel noise."""
    from calibration.noise import NoiseDraw, apply_noise, is_grey

    rng = np.random.default_rng(3)
    grey = rng.integers(40, 200, (64, 80), dtype=np.uint8)
    wide = np.repeat(grey[..., None], 3, axis=2)
    draw = NoiseDraw(True, gaussian_sigma=0.04, photons=300.0, salt_pepper=0.003)
    out = apply_noise(wide, draw, np.random.default_rng(0))
    assert is_grey(out) and not np.array_equal(out, wide)
    # The same draw on the single plane gives the same pixels: one model, one noise.
    plane = apply_noise(grey, draw, np.random.default_rng(0))
    np.testing.assert_array_equal(out[..., 0], plane)
    colour = rng.integers(40, 200, (64, 80, 3), dtype=np.uint8)
    noisy = apply_noise(colour, draw, np.random.default_rng(0))
    assert (noisy.astype(int) - colour).std(axis=(0, 1)).min() > 0
    assert not is_grey(noisy)


def test_photometric_strength_and_blur() -> None:
    """strength scales the jitter (0: the image as it was); blur softens edges; the default
    draws the same numbers as before the knobs (a run's bytes do not move)."""
    rng = np.random.default_rng(0)
    img = rng.integers(40, 215, (64, 96, 3), dtype=np.uint8)
    off = AugmentConfig(strength=0.0)
    assert np.array_equal(photometric(img, off, np.random.default_rng(1)), img)

    def change(strength: float) -> float:  # the same draws, scaled
        out = photometric(img, AugmentConfig(strength=strength), np.random.default_rng(7))
        return float(np.abs(out.astype(int) - img).mean())

    assert 0 < change(1.0) < change(3.0)
    sharp = photometric(img, AugmentConfig(strength=0.0, blur=1.0), np.random.default_rng(2))
    assert (
        np.abs(np.diff(sharp.astype(int), axis=1)).mean()
        < 0.5 * np.abs(np.diff(img.astype(int), axis=1)).mean()
    )
    # The defaults, against the jitter as it was written before the knobs.
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    x = img.astype(np.float32) * (1.0 / 255.0)
    gain = b.uniform(0.85, 1.15)
    x = (x - x.mean()) * gain + x.mean() + b.uniform(-0.1, 0.1)
    x = np.clip(x, 0.0, 1.0) ** np.exp(b.uniform(-0.15, 0.15))
    before = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    assert np.array_equal(photometric(img, AugmentConfig(), a), before)
    assert a.random() == b.random()  # and the same draws after it


@pytest.mark.parametrize("flag", [("--photometric", "-1"), ("--blur", "1.5")])
def test_bad_augment_flags_are_refused(tmp_path: Path, flag, capsys) -> None:
    from fod.cli import main

    rc = main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), *flag])
    assert rc != 0 and not (tmp_path / "r").exists()
    assert flag[0] in capsys.readouterr().err
