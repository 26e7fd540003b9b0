"""A line whose decision geometry lets no moving particle reject is refused once the frame
size is known (`fod run` after the model loads, `fod check`'s model line), judged by the
decision itself on probe paths (edge/reach.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import LineConfig, blind_spots
from edge.decision import DecisionConfig, decide
from edge.reach import blind_geometry, reach, sinking
from fod.cli import main
from fod.line import DEMO_BUNDLE

SIZE = (640, 384)


def test_default_line_rejects_particles_from_a_slow_to_a_fast_sink() -> None:
    # 12 frames: travels 6 px (moving_distance) from 0.55 px a frame; a step of 40 px
    # (match_distance) still links: the ladder's 0.71 and 32
    assert reach(DecisionConfig(), 12, SIZE) == pytest.approx((0.7071, 32.0), abs=1e-4)
    # 2 frames (min_evidence 3 at 1.5 a frame): one step, at least 6 px
    assert reach(DecisionConfig(), 2, SIZE) == (8.0, 32.0)


def test_probe_is_the_decisions_own_reading() -> None:
    cfg = DecisionConfig()
    frames = sinking(12, 2.0, SIZE, (6.0, 6.0))
    assert [len(d) for d in frames] == [1] * 12
    d = decide(frames, ["particle"], cfg)
    assert d.reject and "moving particle" in d.reason
    assert [len(d) for d in sinking(12, 100.0, SIZE, (6.0, 6.0))] == [1] * 4 + [0] * 8  # foot
    # a min_size longer than the frame is high: a fibre lying across the frame still counts
    assert reach(DecisionConfig(min_size=500.0), 12, SIZE) is not None


BLIND = [
    ({"moving_distance": 2000.0}, 12),  # every particle a static mark
    ({"match_distance": 0.5}, 12),  # nothing links far enough to travel 6 px
    ({"moving_distance": 50.0, "match_distance": 4.0}, 12),  # 11 steps of 4 < 50
    ({"min_evidence": 1.0}, 1),  # one frame shows no path; the weights alone say it can
    ({"reference_height": 1e6}, 12),  # every distance scaled to nothing
]


@pytest.mark.parametrize("decision, frames", BLIND)
def test_blind_geometry_is_found_where_the_weights_see_none(decision: dict, frames: int) -> None:
    cfg = _line(decision, frames)
    assert not blind_spots(cfg)  # the weights' check passes each of them
    why = blind_geometry(cfg.decision.in_frame(384), frames, SIZE)
    assert why is not None and "no moving particle could reject a container" in why
    assert blind_geometry(DecisionConfig(), frames if frames > 1 else 2, SIZE) is None


def _line(decision: dict, frames: int) -> LineConfig:
    base = LineConfig()
    return dataclasses.replace(
        base,
        camera=dataclasses.replace(base.camera, frames=frames),
        decision=dataclasses.replace(base.decision, **decision),
    )


def _config(tmp_path: Path, decision: str) -> Path:
    video = tmp_path / "camera.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 25, SIZE)
    for i in range(14):
        w.write(np.full((SIZE[1], SIZE[0], 3), 100 + i, np.uint8))
    w.release()
    cfg = tmp_path / "line.toml"
    cfg.write_text(
        f'[camera]\nsource = "file:{video}"\nmono = true\n'
        f'[model]\nbundle = "{DEMO_BUNDLE}"\nallow_unsigned = true\n'
        f'[decision]\n{decision}\n[gpio]\npin_factory = "mock"\ndelay_ms = 5000\n'
        f'[audit]\nfolder = "{tmp_path / "audit"}"\nmin_free_bytes = 0\n[metrics]\nport = 0\n'
    )
    return cfg


@pytest.mark.skipif(not DEMO_BUNDLE.exists(), reason="no models/demo in this tree")
def test_fod_run_and_fod_check_refuse_a_blind_geometry(tmp_path: Path, capsys) -> None:
    """Once the model's frame is known: `fod run` exits 2 naming the config before any
    output is driven or any state written; `fod check` fails the model line."""
    cfg = _config(tmp_path, "moving_distance = 2000.0")
    argv = ["run", "--config", str(cfg), "--allow-mock-pins", "--rate", "60"]
    assert main([*argv, "--max-containers", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: no moving particle could reject a container" in err
    assert "moving_distance is 2000 px" in err and not (tmp_path / "audit").exists()
    assert main(["check", "--config", str(cfg), "--json"]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["decision"]["status"] == "ok"  # the weights reach min_evidence
    assert checks["model"]["status"] == "fail"
    assert "no moving particle could reject" in checks["model"]["detail"]
    cfg.write_text(cfg.read_text().replace("moving_distance = 2000.0", "max_gap = 2"))
    main(["check", "--config", str(cfg), "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["model"]["status"] == "ok", checks["model"]
    window = "a particle sinking 0.71-32 px a frame through 640x384 frames rejects"
    assert window in checks["model"]["detail"]
