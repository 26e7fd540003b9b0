"""A folder of PNG frames as the camera (`camera.source = "file:<folder>"`, a replay of a
line's frames): frames at their own depth, and what `fod check`'s camera check says of
frames the line's capture would refuse."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from edge.capture import capture_frames
from edge.config import CameraConfig, LineConfig
from edge.preflight import OK, WARN, check_camera
from edge.sources import SourceError, open_source

H, W = 48, 64


def _folder(path: Path, frames: List[np.ndarray]) -> Path:
    path.mkdir()
    for i, img in enumerate(frames):
        assert cv2.imwrite(str(path / f"{i:06d}.png"), img)
    return path


def _textured(i: int, dtype=np.uint8, top: int = 200) -> np.ndarray:
    return np.random.default_rng(i).integers(40, top, (H, W)).astype(dtype)


def test_a_folder_of_16_bit_frames_is_refused_at_the_open(tmp_path: Path) -> None:
    """A 12-bit camera's frames saved in 16 bits: OpenCV would read them as value / 256,
    nearly black. The source refuses them at the open, naming the first file; `fod check`
    fails the camera with that reason (its checks report an exception as a failure)."""
    folder = _folder(tmp_path / "f", [_textured(i, np.uint16, 4095) for i in range(3)])
    with pytest.raises(SourceError, match=r"000000\.png: a uint16 frame; the unit takes 8-bit"):
        open_source(f"file:{folder}", mono=True)
    cfg = LineConfig(camera=CameraConfig(source=f"file:{folder}", frames=3, mono=True))
    with pytest.raises(SourceError, match="uint16"):
        check_camera(cfg)


@pytest.mark.parametrize("mono", [True, False])
def test_a_16_bit_frame_later_in_the_folder_ends_the_capture(tmp_path: Path, mono: bool) -> None:
    """Two 8-bit frames, then a 16-bit one: read at its own depth, the capture refuses it
    (`corrupt_frame`, a reject) instead of taking it darkened 256 times."""
    frames = [_textured(0), _textured(1), _textured(2, np.uint16, 4095)]
    src = open_source(f"file:{_folder(tmp_path / 'f', frames)}", mono=mono)
    shape = (H, W) if mono else (H, W, 3)
    got = capture_frames(src.read, time.monotonic() - 1, math.inf, 3, shape, None, 1000.0)
    assert got.fault == "corrupt_frame" and "not a uint8 image (uint16)" in got.reason
    assert len(got.frames) == 2 and all(f.dtype == np.uint8 for f in got.frames)


def test_fod_check_warns_of_a_camera_whose_frames_the_line_would_reject(tmp_path: Path) -> None:
    """Black frames (the lamp off): the camera opens and keeps time, but every container
    would be a `frame_health` reject - a warning that names it; textured frames pass."""
    dark = _folder(tmp_path / "dark", [_textured(i, top=50) // 10 for i in range(3)])
    good = _folder(tmp_path / "good", [_textured(i) for i in range(3)])
    rejected = "black frame (mean 4.0): lamp off?; every container would be rejected"
    for folder, status, says in ((dark, WARN, rejected), (good, OK, "3 frames")):
        cfg = LineConfig(camera=CameraConfig(source=f"file:{folder}", frames=3, mono=True))
        check = check_camera(cfg)
        assert check.status == status and says in check.detail, check
