"""benchmarks/resample_sequences.py and a camera finer than the model on the simulated line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import cv2
import pytest

from edge.errors import FodError
from edge.knapp import sequences_frame_size
from fod.cli import main

from .conftest import load_script


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> tuple:
    root = tmp_path_factory.mktemp("resample")
    src, fine = root / "src", root / "fine"
    probe, resample = load_script("probe_look"), load_script("resample_sequences")
    assert probe.main(["--out", str(src), "--containers", "3", "--seed", "11"]) == 0
    assert resample.main(["--src", str(src), "--out", str(fine), "--factor", "2"]) == 0
    return src, fine


def test_resampled_frames_and_boxes_scale_together(sets) -> None:
    src, fine = sets
    assert sequences_frame_size(src / "sequences.json") == (640, 384)
    assert sequences_frame_size(fine / "sequences.json") == (1280, 768)
    a = json.loads((src / "sequences.json").read_text())["containers"]
    b = json.loads((fine / "sequences.json").read_text())["containers"]
    for ca, cb in zip(a, b):
        for fa, fb in zip(ca["frames"], cb["frames"]):
            assert [[2 * v for v in o["bbox"]] for o in fa] == [o["bbox"] for o in fb]
        cap = cv2.VideoCapture(str(fine / cb["path"]))
        ok, frame = cap.read()
        n = 1 + sum(cap.read()[0] for _ in range(20))
        cap.release()
        assert ok and frame.shape[:2] == (768, 1280) and n == cb["num_frames"] == 8


def test_a_set_of_mixed_sizes_is_refused(sets, tmp_path: Path) -> None:
    data = json.loads((sets[1] / "sequences.json").read_text())
    data["containers"][0]["width"] = 640
    (tmp_path / "sequences.json").write_text(json.dumps(data))
    with pytest.raises(FodError, match="share one width x height"):
        sequences_frame_size(tmp_path / "sequences.json")


def test_fod_simulate_takes_the_camera_size_from_the_set(sets, tmp_path: Path, capsys) -> None:
    """1280x768 containers before the demo's 640x384 model: the simulated camera is set to
    the set's size, so its frames are decided (not rejected as corrupt), and the audit's
    boxes are in the camera's pixels."""
    out = tmp_path / "sim"
    argv = ["simulate", "--sequences", str(sets[1]), "--containers", "3", "--rate", "60"]
    # 3 frames, not 8: on a shared 2-core CPU without VNNI 8 frames' calls outlast the 3 s
    # gate, the inference stage is alarmed stuck and every container rejected `stall`.
    argv += ["--frames", "3"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["containers"] == 3 and s["audit_disagrees"] == 0 and not s["violations"]
    assert "corrupt" not in s["faults"]
    assert s["frame_size"] == [1280, 768] and s["model_input"] == [640, 384]
    db = sqlite3.connect(str(next((out / "audit").glob("audit-*.db"))))
    rows = db.execute("SELECT detections FROM containers").fetchall()
    db.close()
    boxes = [b for (d,) in rows for f in json.loads(d) for b in f]
    assert boxes and max(b[3] for b in boxes) > 384  # below the model's height: camera px


def test_fod_simulate_draws_its_own_containers_at_the_configs_camera(tmp_path: Path, capsys):
    """Without --sequences, the containers are drawn at the --config's camera size (not the
    model's, whose frames that camera would reject as corrupt) and letterboxed to it."""
    cfg = tmp_path / "line.toml"
    cfg.write_text("[camera]\nwidth = 800\nheight = 480\n")
    out = tmp_path / "sim"
    argv = ["simulate", "--config", str(cfg), "--containers", "2", "--frames", "2"]
    assert main([*argv, "--delay-ms", "3000", "--out", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["frame_size"] == [800, 480] and s["model_input"] == [640, 384]
    assert s["faults"] == {} and not s["violations"] and s["containers"] == 2
    assert sequences_frame_size(out / "sequences-800x480-f2-s0" / "sequences.json") == (800, 480)
