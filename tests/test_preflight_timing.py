"""`fod check`'s timing: containers through the configured model, tiles and decision on
this unit against what the gate leaves; and the frame checks `fod run` and `fod check`
share, so a config the preflight passes starts."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest

import edge.backends.select as select
import edge.detector as detector
from edge.config import frames_for_model
from edge.errors import FodError
from edge.preflight import FAIL, OK, WARN, check_model, check_timing, preflight

from .test_runtime import _cfg, _refused_at_start

DEMO = Path(__file__).resolve().parents[1] / "models" / "demo"
ROOMY = {"delay_ms": 60_000, "pulse_ms": 20}  # 59.9 s before the gate: any machine fits


def test_timing_fits_the_gate_or_fails_the_check(bundle: Path, tmp_path: Path) -> None:
    cfg = _cfg(bundle, tmp_path, gpio=ROOMY)
    budget = 60_000 - cfg.timing.decision_margin_ms
    ok = check_timing(cfg)
    assert ok.status == OK and ok.ms is not None and ok.ms > 0, ok
    assert "3 frames 320x256: model + decision" in ok.detail and "capture not measured" in ok.detail
    # Containers closer than a pulse plus the debounce are trigger_conflict rejects.
    slow_gate = check_timing(_cfg(bundle, tmp_path, gpio={**ROOMY, "pulse_ms": 30_000}))
    assert "keeps up with 2 containers/min (the gate's bound" in slow_gate.detail, slow_gate
    # The camera's capture time counts against the same gate.
    late = check_timing(cfg, capture_ms=budget)
    assert late.status == FAIL and "rejected late" in late.detail, late
    tight = check_timing(cfg, capture_ms=0.85 * budget)
    assert tight.status == WARN and "little headroom" in tight.detail, tight
    # A gate that leaves no time: the model alone overruns it.
    cfg = _cfg(bundle, tmp_path, gpio={"delay_ms": 100.001}, timing={"decision_margin_ms": 100})
    assert check_timing(cfg).status == FAIL


def test_timing_runs_the_tiles_the_line_runs(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    calls: Dict[str, int] = {"images": 0}
    whole = detector.EdgeDetector.detect_whole

    def counted(self, images):
        calls["images"] += len(images)
        return whole(self, images)

    monkeypatch.setattr(detector.EdgeDetector, "detect_whole", counted)
    cfg = _cfg(
        bundle, tmp_path, gpio=ROOMY, model={"tiles": "2x2"}, camera={"width": 640, "height": 512}
    )
    c = check_timing(cfg, containers=2)
    assert c.status == OK and "3 frames 640x512 in 2x2 tiles" in c.detail, c
    # warm-up + 2 containers, 3 frames, 4 tiles; and one reference frame, whole
    assert calls["images"] == (2 + 1) * 3 * 4 + 1
    assert "+ a reference frame" in c.detail
    calls["images"] = 0
    cfg = _cfg(bundle, tmp_path, gpio=ROOMY, model={"mirror": True, "reference_every_s": 0.0})
    c = check_timing(cfg, containers=2)
    assert c.status == OK and "3 frames 320x256, mirrored too:" in c.detail, c
    assert "reference frame" not in c.detail  # checked at start only: no wait for one
    assert calls["images"] == (2 + 1) * 3 * 2  # each frame and its mirror


def test_a_model_that_outputs_nan_fails_the_timing(
    bundle: Path, tmp_path: Path, monkeypatch
) -> None:
    opened = select.open_configured

    def nan_scores(b, model_cfg):
        backend, digest = opened(b, model_cfg)
        infer = backend.infer

        def bad(images):
            boxes, scores = infer(images)
            return boxes, np.full_like(scores, np.nan)

        backend.infer = bad
        return backend, digest

    monkeypatch.setattr(select, "open_configured", nan_scores)
    c = check_timing(_cfg(bundle, tmp_path, gpio=ROOMY))
    assert c.status == FAIL and "the model failed on test frames" in c.detail, c


def test_preflight_loads_the_model_once_and_closes_it(
    bundle: Path, tmp_path: Path, monkeypatch
) -> None:
    """The model and timing checks share one backend (a TensorRT engine is seconds and
    memory on a Jetson), closed when the preflight is done."""
    opened = select.open_configured
    backends: list = []
    closed: list = []

    def spied(b, model_cfg):
        backend, digest = opened(b, model_cfg)
        close = backend.close
        backend.close = lambda: closed.append(backend) or close()
        backends.append(backend)
        return backend, digest

    monkeypatch.setattr(select, "open_configured", spied)
    cfg = _cfg(bundle, tmp_path, gpio=ROOMY, camera={"source": "sim"})
    checks = {c.name: c for c in preflight(cfg)}
    assert checks["model"].status == WARN and checks["timing"].status == OK, checks
    assert "no reference frames in the bundle" in checks["model"].detail
    assert len(backends) == 1 and closed == backends


def test_frames_for_model_says_what_fod_run_would_refuse(bundle: Path, tmp_path: Path) -> None:
    cfg = _cfg(bundle, tmp_path, camera={"width": 0, "height": 0, "mono": True})
    assert frames_for_model(cfg, (320, 256), "uint8_nhw") == ((256, 320), (1, 1))
    cfg = _cfg(bundle, tmp_path, camera={"width": 1280, "height": 800}, model={"tiles": "2x2"})
    assert frames_for_model(cfg, (640, 384), "uint8_nhwc") == ((800, 1280, 3), (2, 2))
    with pytest.raises(FodError, match=r"takes grey frames; set camera\.mono = true"):
        frames_for_model(cfg, (640, 384), "uint8_nhw")
    # A camera of the model's size, which the config alone cannot check tiles against.
    model = {"tiles": "2x1", "tile_overlap": 400}
    cfg = _cfg(bundle, tmp_path, camera={"width": 0, "height": 0}, model=model)
    with pytest.raises(FodError, match=r"model\.tiles for 320x256 frames"):
        frames_for_model(cfg, (320, 256), "uint8_nhwc")
    # A min_size no box in these frames reaches: every detection would be dropped.
    cfg = _cfg(bundle, tmp_path, camera={"width": 0, "height": 0}, decision={"min_size": 321.0})
    with pytest.raises(FodError, match=r"decision\.min_size is 321 px in 320x256 frames"):
        frames_for_model(cfg, (320, 256), "uint8_nhwc")
    scaled = {"min_size": 200.0, "reference_height": 128.0}  # 400 px in 256-px-high frames
    cfg = _cfg(bundle, tmp_path, camera={"width": 0, "height": 0}, decision=scaled)
    with pytest.raises(FodError, match=r"min_size is 400 px"):
        frames_for_model(cfg, (320, 256), "uint8_nhwc")
    cfg = _cfg(bundle, tmp_path, camera={"width": 0, "height": 0}, decision={"min_size": 320.0})
    assert frames_for_model(cfg, (320, 256), "uint8_nhwc")[0] == (256, 320, 3)


@pytest.mark.skipif(not DEMO.exists(), reason="no models/demo in this tree")
def test_preflight_fails_a_colour_camera_on_a_grey_model(tmp_path: Path) -> None:
    """The demo model takes grey frames: `fod run` refuses a colour camera, and so does the
    preflight now (model failed, timing not run), instead of saying the unit is ready."""
    cfg = _cfg(DEMO, tmp_path, camera={"source": "sim", "mono": False, "width": 0, "height": 0})
    with pytest.raises(FodError, match=r"set camera\.mono = true"):
        check_model(cfg)  # what a rollout's check stops on
    checks = {c.name: c for c in preflight(cfg)}
    m = checks["model"]
    assert m.status == FAIL and "set camera.mono = true" in m.detail, m
    assert checks["timing"].status == FAIL and "not timed" in checks["timing"].detail
    assert checks["camera"].ms is None  # the sim camera: no capture measured


@pytest.mark.skipif(not DEMO.exists(), reason="no models/demo in this tree")
def test_fod_run_refuses_a_colour_camera_on_a_grey_model_before_the_pins(tmp_path: Path):
    """The same refusal at `fod run`'s start: before the gate pins are claimed, the audit
    opened or the bundle recorded as run - so no container meets a line that would reject
    every one of them as a backend error."""
    cfg = _cfg(DEMO, tmp_path, camera={"source": "sim", "mono": False, "width": 0, "height": 0})
    _refused_at_start(cfg, r"set camera\.mono = true")
