"""`model.mirror`: each frame also run mirrored left-right, the views' detections merged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.config import ConfigError, parse_config
from edge.detector import EdgeDetector, mirrored
from edge.health import BadOutput
from edge.postprocess import Detections

from .gate_run import _spoil_call, _two_containers
from .test_runtime import _cfg
from .test_tiles import Blobs


class RightHalfBlobs(Blobs):
    """Sees bright pixels in the right half of its input only: a detector whose view of an
    object depends on where it sits, as a trained one's does."""

    def infer(self, images: np.ndarray):
        masked = images.copy()
        masked[:, :, : images.shape[2] // 2] = 0
        return super().infer(masked)


def test_mirrored_boxes_come_back_to_the_frame() -> None:
    d = Detections(
        np.array([[0, 2, 10, 8], [90, 0, 100, 5]], np.float32),
        np.array([0.9, 0.4], np.float32),
        np.array([1, 2]),
    )
    m = mirrored(d, 100)
    assert m.boxes.tolist() == [[90, 2, 100, 8], [0, 0, 10, 5]]
    assert m.scores.tolist() == d.scores.tolist() and m.labels.tolist() == [1, 2]
    assert mirrored(mirrored(d, 100), 100).boxes.tolist() == d.boxes.tolist()
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0))
    assert mirrored(empty, 100).boxes.shape == (0, 4)


def test_the_mirrored_view_finds_what_the_plain_one_misses_in_frame_pixels() -> None:
    be = RightHalfBlobs((64, 48))
    frame = np.zeros((48, 64), np.uint8)
    frame[5:9, 10:13] = 255  # left half: the plain view cannot see it
    assert len(EdgeDetector(be, be.info).detect([frame])[0]) == 0
    be.calls = 0
    d = EdgeDetector(be, be.info, mirror=True).detect([frame])[0]
    assert be.calls == 2  # the frame, then its mirror
    assert d.boxes.tolist() == [[10, 5, 13, 9]] and d.labels.tolist() == [1]
    frame[:] = 0
    frame[5:9, 40:43] = 255  # right half: seen by the plain view only, still one box
    d = EdgeDetector(be, be.info, mirror=True).detect([frame])[0]
    assert d.boxes.tolist() == [[40, 5, 43, 9]]


def test_an_object_both_views_see_is_one_detection_also_in_tiles() -> None:
    be = Blobs((64, 48))
    det = EdgeDetector(be, be.info, tiles=(2, 2), overlap=8, mirror=True)
    frame = np.zeros((88, 120), np.uint8)
    frame[70:74, 20:24] = 255
    d = det.detect([frame])[0]
    assert be.calls == 8  # four tiles of each view
    assert d.boxes.tolist() == [[20, 70, 24, 74]]


def test_a_bad_output_of_the_mirrored_view_fails_the_frame() -> None:
    be = Blobs((64, 48), nan_on=2)  # the mirrored view's call
    with pytest.raises(BadOutput):
        EdgeDetector(be, be.info, mirror=True).detect([np.zeros((48, 64), np.uint8)])


def test_mirror_must_be_a_bool() -> None:
    assert parse_config({"model": {"mirror": True}}).model.mirror is True
    with pytest.raises(ConfigError, match=r"model\.mirror"):
        parse_config({"model": {"mirror": "yes"}})


def test_a_mirrored_view_gone_bad_rejects_the_container_at_the_gate(bundle: Path, tmp_path: Path):
    """Through the runtime (real ONNX Runtime, MockFactory pins): with `model.mirror` the
    model runs twice a frame; NaN scores from the mirrored view of the second frame reject
    the container - no pulse on the gate - and the audit names the fault; the next
    container, every view sound, is decided by the model."""
    wrap, calls = _spoil_call(4, lambda boxes, scores: (boxes, np.full_like(scores, np.nan)))
    cfg = _cfg(bundle, tmp_path, model={"mirror": True}, gpio={"delay_ms": 5000})
    rows, states = _two_containers(cfg, wrap, (256, 320, 3))
    assert rows["c0"][:2] == ("reject", "bad_output")
    assert calls["n"] == 4 + 6  # c0 stops at its second frame's mirror; c1: 3 frames x 2
    assert rows["c1"][1] is None  # decided by the model, whatever it decided
    assert states.count(True) == (rows["c1"][0] == "accept")  # a pulse only for an accept
