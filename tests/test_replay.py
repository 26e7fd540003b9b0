"""`fod audit replay`: recorded containers decided again under another decision config."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge.audit import AuditConfig, AuditLog, ContainerRecord
from edge.decision import DecisionConfig
from edge.errors import FodError
from edge.replay import recorded_containers, recorded_rows, replay, summarize
from fod.cli import main

NAMES = ["fiber", "particle", "glass_flake"]


def _sinking(score: float, n: int = 6, label: int = 1) -> list:
    """A particle sinking 8 px a frame, one detection per frame at `score`."""
    return [[[100.0, 100.0 + 8 * t, 106.0, 106.0 + 8 * t, score, float(label)]] for t in range(n)]


def _audit(folder: Path) -> Path:
    rows = [  # id, decision, fault, detections (what the line recorded)
        ("c000001-0", "reject", None, _sinking(0.9)),  # a clear particle
        ("c000002-1", "accept", None, [*_sinking(0.45)[:4], [], []]),  # an unsure one
        ("c000003-2", "reject", "camera_drop", []),  # a fault: no model decision
        ("c000004-3", "accept", None, [[] for _ in range(6)]),  # nothing seen
        ("c000005-4", "accept", None, _sinking(0.9)),  # an accept the gate did not pass ...
        ("c000005-4", "reject", "late", []),  # ... amended: kept as recorded
    ]
    with AuditLog(AuditConfig(folder, min_free_bytes=0)) as log:
        for i, (cid, dec, fault, dets) in enumerate(rows):
            log.record(ContainerRecord(cid, i, i + 1, dec, "r", fault, dets, "m", "c"))
    return folder


def test_replay_hand_made(tmp_path: Path) -> None:
    rec = recorded_containers(_audit(tmp_path / "audit"))
    assert [r.container_id for r in rec] == [f"c00000{i}-{i - 1}" for i in range(1, 6)]
    assert rec[4].fault == "late" and rec[4].decision == "reject" and len(rec[4].detections) == 6

    same = replay(rec, NAMES, DecisionConfig(), 0.05)
    # Row by row, as `fod audit replay` reads a trail, the amended container merges alike.
    assert replay(recorded_rows(tmp_path / "audit"), NAMES, DecisionConfig(), 0.05) == same
    assert [r.after for r in same] == ["reject", "accept", "reject", "accept", "reject"]
    assert summarize(same) == {
        "containers": 5,
        "faulted": 2,
        "replayed": 3,
        "accept_to_reject": 0,
        "reject_to_accept": 0,
    }
    # A lower threshold turns the unsure particle into a reject; faults stay rejects.
    low = replay(rec, NAMES, DecisionConfig(score_threshold=0.4, track_threshold=0.4), 0.05)
    assert [r.after for r in low] == ["reject", "reject", "reject", "accept", "reject"]
    assert low[1].reason.startswith("particle: particle track, moving particle (24 px)")
    truth = {"c000001": "reject", "c000002": "reject", "c000003": "reject", "c000004": "accept"}
    truth["c000005"] = "accept"
    s = summarize(low, truth)
    assert s["accept_to_reject"] == 1 and s["defective"] == 2 and s["good"] == 1
    assert s["detection_rate_before"] == 0.5 and s["detection_rate_after"] == 1.0
    assert s["false_reject_rate_before"] == 0.0 == s["false_reject_rate_after"]
    assert (s["defective_rejected_before"], s["defective_rejected_after"]) == (1, 2)
    assert s["good_rejected_before"] == 0 == s["good_rejected_after"]
    # A high threshold lets the clear particle through: the replay says so, it does not hide it.
    high = summarize(
        replay(rec, NAMES, DecisionConfig(score_threshold=0.95, unsure_weight=0), 0.05), truth
    )
    assert high["reject_to_accept"] == 1 and high["detection_rate_after"] == 0.0
    assert high["defective_rejected_after"] == 0 and high["good_rejected_after"] == 0


def test_replay_refuses_what_it_cannot_know(tmp_path: Path) -> None:
    rec = recorded_containers(_audit(tmp_path / "audit"))
    with pytest.raises(FodError, match=r"keeps detections from 0\.3"):
        replay(rec, NAMES, DecisionConfig(track_threshold=0.2), 0.3)  # never recorded
    with pytest.raises(FodError, match="class index 1 on record, but only 1 class"):
        replay(rec, ["fiber"], DecisionConfig(), 0.05)
    with pytest.raises(FodError, match="no truth label"):
        summarize(replay(rec, NAMES, DecisionConfig(), 0.05), {"c000001": "reject"})
    with pytest.raises(FodError, match="no audit-"):
        recorded_containers(tmp_path)


def test_fod_audit_replay_reproduces_a_simulated_line(tmp_path: Path, small_set: Path, capsys):
    """The demo model on the simulated line, then its audit replayed under the same config:
    every recorded decision and reason comes back; under a stricter one, the changes."""
    sim = tmp_path / "sim"
    argv = ["simulate", "--sequences", str(small_set), "--containers", "4", "--rate", "60"]
    assert main([*argv, "--frames", "3", "--out", str(sim), "--json"]) == 0  # videos of 5
    capsys.readouterr()
    same = tmp_path / "same.toml"
    same.write_text("")  # the defaults `fod simulate` ran with
    rec = recorded_containers(sim / "audit")
    assert len(rec) == 4
    truth = str(small_set / "sequences.json")
    report = tmp_path / "replay.json"
    assert main(["audit", "replay", str(sim / "audit"), "--config", str(same), "--truth", truth,
                 "--out", str(report), "--json"]) == 0  # fmt: skip
    s = json.loads(capsys.readouterr().out)
    assert s["accept_to_reject"] == 0 == s["reject_to_accept"]
    assert s["containers"] == 4 and s["replayed"] + s["faulted"] == 4
    assert s["replayed"] >= 2, s  # decided by the model, not faults (3 frames: in time)
    assert s["detection_rate_before"] == s["detection_rate_after"]
    again = replay(rec, NAMES, DecisionConfig(), 0.05)
    assert [r.reason for r in again] == [r.reason for r in rec]  # the same words, too
    assert json.loads(report.read_text())["changed"] == []

    strict = tmp_path / "strict.toml"
    strict.write_text("[decision]\nmin_evidence = 100.0\n")  # nothing can reach it
    assert main(["audit", "replay", str(sim / "audit"), "--config", str(strict), "--truth",
                 truth]) == 0  # fmt: skip
    out = capsys.readouterr().out
    model_rejects = sum(r.decision == "reject" and r.fault is None for r in rec)
    assert f"0 accept -> reject, {model_rejects} reject -> accept" in out
    # The counts behind the rates, each side of the arrow: every model reject is undone.
    counts = re.search(r"defective rejected (\d+) -> 0 of \d+ .*good rejected (\d+) -> 0 of", out)
    assert counts and int(counts[1]) + int(counts[2]) == model_rejects
    assert main(["audit", "replay", str(sim / "audit")]) == 2
    assert "needs --config" in capsys.readouterr().err


def test_a_reader_that_left_gets_no_traceback(tmp_path: Path) -> None:
    """`fod audit replay ... | head`: the reader is gone before fod writes."""
    audit = _audit(tmp_path / "audit")
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    r, w = os.pipe()
    os.close(r)  # every write to w fails with EPIPE
    try:
        p = subprocess.run(
            [sys.executable, "-m", "fod", "audit", "replay", str(audit), "--config", str(cfg)],
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(w)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr


def test_replay_scales_distances_to_the_recorded_camera(tmp_path: Path, capsys):
    """An audit of a 768-px-high camera: a particle jumping 50 px a frame. Distances set
    for a 384-px-high frame (reference_height 384) make it one track under a config naming
    the camera, three one-sighting tracks when the camera is the demo model's size (384 px
    high, read from the config's bundle) and under the default (the camera's own px).
    With no camera.height and no readable bundle the scale is unknown: refused."""
    jumps = [[[100.0, 100.0 + 50 * t, 112.0, 112.0 + 50 * t, 0.9, 1.0]] for t in range(3)]
    with AuditLog(AuditConfig(tmp_path / "audit", min_free_bytes=0)) as log:
        log.record(ContainerRecord("c000001-0", 0, 1, "reject", "r", None, jumps, "m", "c"))
    demo = Path(__file__).resolve().parents[1] / "models" / "demo"
    ref = "[decision]\nreference_height = 384.0\n"
    configs = {
        "fine": "[camera]\nwidth = 1280\nheight = 768\n" + ref,
        "model": f'[model]\nbundle = "{demo}"\n' + ref,
        "plain": "[camera]\nwidth = 1280\nheight = 768\n",
        "lost": f'[camera]\nwidth = 1280\n[model]\nbundle = "{tmp_path / "gone"}"\n' + ref,
    }
    for name, text in configs.items():
        (tmp_path / f"{name}.toml").write_text(text)
    audit = str(tmp_path / "audit")
    for name, flipped in (("fine", 0), ("model", 1), ("plain", 1)):
        assert main(["audit", "replay", audit, "--config", str(tmp_path / f"{name}.toml"),
                     "--json"]) == 0  # fmt: skip
        assert json.loads(capsys.readouterr().out)["reject_to_accept"] == flipped, name
    assert main(["audit", "replay", audit, "--config", str(tmp_path / "lost.toml")]) == 2
    assert "gone: bundle not found" in capsys.readouterr().err
