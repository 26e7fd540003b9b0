"""Tiled detection (`model.tiles`): a camera larger than the model input, cut into
overlapping tiles: the windows, boxes back in frame pixels, an object in an overlap seen
once, and a bad output of one tile rejecting the container at the gate."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import pytest

from edge.config import ConfigError, parse_config
from edge.detector import EdgeDetector
from edge.health import BadOutput
from edge.model_info import ModelInfo
from edge.preprocess import letterbox_params, parse_grid, tile_windows

from .gate_run import _spoil_call, _two_containers
from .quiet import quiet_outputs
from .test_runtime import _cfg, _refused_at_start


@pytest.mark.parametrize(
    "wh, grid, overlap",
    [((1280, 800), (2, 2), 32), ((1280, 800), (3, 2), 32), ((641, 385), (2, 3), 17)],
)
def test_tiles_cover_the_frame_and_overlap(wh: Tuple[int, int], grid: tuple, overlap: int):
    wins = tile_windows(wh, grid, overlap)
    assert len(wins) == grid[0] * grid[1]
    seen = np.zeros(wh[::-1], dtype=int)
    for x0, y0, x1, y1 in wins:
        assert 0 <= x0 < x1 <= wh[0] and 0 <= y0 < y1 <= wh[1]
        seen[y0:y1, x0:x1] += 1
    assert (seen >= 1).all()  # every pixel in some tile
    assert len({(x1 - x0, y1 - y0) for x0, y0, x1, y1 in wins}) == 1  # one tile size
    xs = sorted({(x0, x1) for x0, _, x1, _ in wins})
    assert all(a[1] - b[0] >= overlap for a, b in zip(xs, xs[1:]))  # neighbours overlap


def test_tiles_take_the_model_shape_so_nothing_is_padded() -> None:
    # Padding beside a tile's edge cut through a bright container reads as a fibre.
    for x0, y0, x1, y1 in tile_windows((1280, 800), (2, 2), 32, aspect=640 / 384):
        lb = letterbox_params((x1 - x0, y1 - y0), (640, 384))
        assert lb.pad_x <= 1 and lb.pad_y <= 1


def test_one_tile_is_the_frame_and_bad_grids_are_refused() -> None:
    assert tile_windows((640, 384), (1, 1), 32) == [(0, 0, 640, 384)]
    assert parse_grid("2x3") == (2, 3)
    for bad in ("2", "0x2", "2x9", "axb", "2x2x2"):
        with pytest.raises(ValueError, match="COLSxROWS"):
            parse_grid(bad)
    assert len(tile_windows((100, 100), (8, 1), 90)) == 8  # 8 tiles of 92 px, 2 px apart
    with pytest.raises(ValueError, match="no such tiles"):
        tile_windows((100, 100), (2, 1), 100)  # an overlap as wide as the frame
    cfg = {"model": {"tiles": "2x2", "tile_overlap": 400}, "camera": {"width": 640, "height": 384}}
    with pytest.raises(ConfigError, match=r"model\.tiles: .*no such tiles"):
        parse_config(cfg)
    with pytest.raises(ConfigError, match=r"model\.tiles: tiles must be COLSxROWS"):
        parse_config({"model": {"tiles": "two"}})


class Blobs:
    """A backend that 'detects' the bright pixels of its input: one box around them,
    class 1, score 0.9 (model pixels), so a test knows where each tile saw what; its
    `nan_on`-th call (1-based; 0: none) returns NaN scores."""

    def __init__(self, wh: Tuple[int, int], nan_on: int = 0) -> None:
        self.calls, self.nan_on = 0, nan_on
        self.info = ModelInfo(["fiber", "particle", "glass_flake"], wh, [1], "0" * 64, "t")

    def infer(self, images: np.ndarray):
        self.calls += 1
        boxes, scores = quiet_outputs(len(images), 1, 3)
        for i, img in enumerate(images):
            ys, xs = np.nonzero(img > 200)
            if len(xs):
                boxes[i, 0] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                scores[i, 0, 1] = 0.9
        if self.calls == self.nan_on:
            scores[:] = np.nan
        return boxes, scores


def test_tiled_boxes_are_in_frame_pixels_and_an_overlap_is_seen_once() -> None:
    be = Blobs((64, 48))
    det = EdgeDetector(be, be.info, tiles=(2, 2), overlap=8)  # tiles 64x48: no resize
    frame = np.zeros((88, 120), np.uint8)
    frame[70:74, 20:24] = 255  # in the bottom-left tile only
    d = det.detect([frame])[0]
    assert be.calls == 4  # one model call per tile
    assert d.boxes.tolist() == [[20, 70, 24, 74]] and d.labels.tolist() == [1]
    frame[:] = 0
    frame[10:14, 58:62] = 255  # in the overlap of the top two tiles: both see it
    d = det.detect([frame])[0]
    assert d.boxes.tolist() == [[58, 10, 62, 14]]  # merged into one


def test_whole_frame_detection_is_unchanged_by_the_tiling_code() -> None:
    be = Blobs((64, 48))
    frame = np.zeros((48, 64), np.uint8)
    frame[5:9, 30:33] = 255
    d = EdgeDetector(be, be.info).detect([frame])[0]
    assert be.calls == 1 and d.boxes.tolist() == [[30, 5, 33, 9]]


def test_a_bad_output_of_one_tile_fails_the_frame() -> None:
    be = Blobs((64, 48), nan_on=3)
    det = EdgeDetector(be, be.info, tiles=(2, 2), overlap=8)
    with pytest.raises(BadOutput):
        det.detect([np.zeros((88, 120), np.uint8)])


def test_a_tile_gone_bad_rejects_the_container_at_the_gate(bundle: Path, tmp_path: Path):
    """Through the runtime (real ONNX Runtime, MockFactory pins): with 2x2 tiles the model
    runs 4 times a frame; NaN scores from one tile of the second frame reject the container
    - no pulse on the gate - and the audit names the fault; the next container, all tiles
    sound, is decided by the model."""
    wrap, calls = _spoil_call(6, lambda boxes, scores: (boxes, np.full_like(scores, np.nan)))
    # A roomy gate (4 model calls a frame on a loaded CI core must not read as a stall).
    gpio = {"delay_ms": 5000}
    cam = {"width": 640, "height": 512}
    cfg = _cfg(bundle, tmp_path, model={"tiles": "2x2"}, camera=cam, gpio=gpio)
    rows, states = _two_containers(cfg, wrap, (512, 640, 3))
    assert rows["c0"][:2] == ("reject", "bad_output")
    assert calls["n"] == 6 + 12  # c0 stops at its bad tile; c1: 3 frames x 4 tiles
    assert rows["c1"][1] is None  # decided by the model, whatever it decided
    assert states.count(True) == (rows["c1"][0] == "accept")  # a pulse only for an accept


def test_tiles_that_cannot_cut_the_frames_are_refused_at_start(bundle: Path, tmp_path: Path):
    """A camera of the model's size (camera.width/height 0: the config cannot check) with
    an overlap as wide as its frames: refused before the pins, the audit or the bundle
    record are touched, rather than rejecting every container as a backend error."""
    cfg = _cfg(
        bundle,
        tmp_path,
        model={"tiles": "2x1", "tile_overlap": 400},
        camera={"width": 0, "height": 0},
    )
    _refused_at_start(cfg, r"model\.tiles for 320x256 frames: .*no such tiles")
