"""Knapp study: zones, efficiency and false-reject rate on hand-made inspections; from an audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.audit import AuditConfig, AuditLog, ContainerRecord
from edge.errors import FodError
from edge.knapp import knapp
from fod.cli import main


def test_knapp_hand_made() -> None:
    truth = {"a": "reject", "b": "reject", "c": "accept", "d": "accept"}
    # a rejected 10/10, b 5/10 (grey), c 1/10, d 4/10 (grey)
    dec = [("a", True)] * 10 + [("b", i < 5) for i in range(10)] + [("c", i < 1) for i in range(10)]
    dec += [("d", i < 4) for i in range(10)]
    r = knapp(dec, truth)
    assert r.reject_zone_efficiency == 0.5
    assert r.detection_probability == pytest.approx(0.75)
    assert r.false_reject_rate == pytest.approx(0.25)
    assert r.zones == {
        "reject": {"reject": 1, "grey": 1, "accept": 0},
        "accept": {"reject": 0, "grey": 1, "accept": 1},
    }
    with pytest.raises(FodError, match="no truth"):
        knapp([("x", True)], truth)


def test_fod_knapp_from_audit(tmp_path: Path, capsys) -> None:
    with AuditLog(AuditConfig(tmp_path / "audit", min_free_bytes=0)) as log:
        for i in range(4):
            for cid, rej in (("c000001", True), ("c000002", i == 0)):
                log.record(
                    ContainerRecord(
                        f"{cid}-{i}",
                        i,
                        i + 1,
                        "reject" if rej else "accept",
                        "r",
                        None,
                        [],
                        "m",
                        "c",
                    )
                )
    seq = tmp_path / "sequences.json"
    seq.write_text(
        json.dumps({"containers": [{"id": 1, "label": "reject"}, {"id": 2, "label": "accept"}]})
    )
    assert (
        main(
            [
                "knapp",
                "--audit",
                str(tmp_path / "audit"),
                "--truth",
                str(seq),
                "--out",
                str(tmp_path / "k"),
                "--json",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert r["reject_zone_efficiency"] == 1.0 and r["false_reject_rate"] == 0.25
    assert (tmp_path / "k" / "knapp.png").stat().st_size > 0
    assert "| c000002 | accept | 1/4 | 0.25 | accept |" in (tmp_path / "k" / "knapp.md").read_text()
    # A file of the trail that does not read is named (before: a sqlite3 traceback).
    (tmp_path / "audit" / "audit-000002.db").write_bytes(b"not a database" * 100)
    argv = ["knapp", "--audit", str(tmp_path / "audit"), "--truth", str(seq)]
    assert main([*argv, "--out", str(tmp_path / "k2")]) == 2
    assert "audit-000002.db: unreadable: file is not a database" in capsys.readouterr().err
    assert not (tmp_path / "k2").exists()


@pytest.mark.parametrize(
    "containers, problem",
    [
        ([{"id": 1, "label": "good"}], "containers[0]: 'label' must be one of"),
        ([{"id": "1", "label": "reject"}], "containers[0]: 'id' must be a non-negative integer"),
        ([{"id": 1, "label": "reject", "path": 3}], "containers[0]: 'path' must name"),
        ([{"id": 1, "label": "reject"}, {"id": 1, "label": "accept"}], "id 1 appears twice"),
        ([], "'containers' must be a non-empty list"),
    ],
)
def test_a_sequences_file_is_checked(tmp_path: Path, containers, problem) -> None:
    from edge.knapp import truth_from_sequences

    seq = tmp_path / "sequences.json"
    seq.write_text(json.dumps({"containers": containers}))
    with pytest.raises(FodError) as e:
        truth_from_sequences(seq)
    assert str(e.value).startswith(str(seq)) and problem in str(e.value)


def _refused(seqs: Path, entries: list, capsys, *more: str) -> str:
    """`fod simulate` on the set: exit 2, nothing written; its error."""
    (seqs / "sequences.json").write_text(json.dumps({"containers": entries}))
    out = seqs.parent / "sim"
    assert main(["simulate", "--sequences", str(seqs), *more, "--out", str(out)]) == 2
    assert not out.exists()
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "entry, problem",
    [
        # A label outside accept/reject would count the container on neither side: the
        # report's false-reject rate came out empty instead of the file being refused.
        ({"id": 1, "label": "good", "path": "c.avi"}, "'label' must be one of"),
        ({"id": 1, "label": "accept", "path": "missing.avi"}, "missing.avi not found"),
        ({"id": 1, "label": "accept"}, "names no video"),
    ],
)
def test_fod_simulate_refuses_a_bad_set_before_writing(
    tmp_path: Path, capsys, entry, problem
) -> None:
    seqs = tmp_path / "seqs"
    seqs.mkdir()
    (seqs / "c.avi").write_bytes(b"")
    err = _refused(seqs, [entry], capsys)
    assert str(seqs / "sequences.json") in err and problem in err


def _video(path: Path, frames: int, size: tuple = (64, 48)) -> str:
    """A real AVI (MJPG) of `frames` grey frames, each a shade lighter than the last."""
    import cv2
    import numpy as np

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size, False)
    for k in range(frames):
        out.write(np.full(size[::-1], 40 + 20 * k, np.uint8))
    out.release()
    return path.name


def test_fod_simulate_refuses_videos_that_would_fault_every_container(tmp_path, capsys) -> None:
    """Videos that are too short, of mixed or wrong sizes, or no video at all would be
    `camera_drop` or `corrupt_frame` rejects of their containers on the line, every
    one rejected for the set's fault: refused first, naming the container and the fix."""
    from edge.simulate import check_videos, load_sequences

    seqs = tmp_path / "seqs"
    seqs.mkdir()
    entries = [
        {"id": 1, "label": "accept", "path": _video(seqs / "c1.avi", 8)},
        {"id": 2, "label": "reject", "path": _video(seqs / "c2.avi", 3)},
        {"id": 3, "label": "reject", "path": _video(seqs / "c3.avi", 5)},
    ]
    err = _refused(seqs, entries, capsys)  # --frames 8 by default
    path = seqs / "sequences.json"
    assert f"{path}: c000002's video holds 3 frame(s), fewer than the 8 a container" in err
    assert "(2 of 3 containers short; the fewest, 3: pass --frames 3 or fewer)" in err
    # At 3 frames the set fits: its videos' own size becomes the simulated camera's.
    assert check_videos(path, load_sequences(seqs), 3) == (64, 48)
    err = _refused(
        seqs, [{**e, "width": 640, "height": 384} for e in entries], capsys, "--frames", "3"
    )
    assert f"{path}: declares 640x384 frames; its videos are 64x48" in err
    cfg = tmp_path / "line.toml"
    cfg.write_text("[camera]\nwidth = 1280\nheight = 800\n")
    err = _refused(seqs, entries, capsys, "--frames", "3", "--config", str(cfg))
    assert f"its videos are 64x48, the camera of {cfg} takes 1280x800" in err
    # Only the containers a run shows are checked: the first, of 8 frames, fits --frames 8.
    err = _refused(seqs, entries, capsys, "--containers", "1", "--config", str(cfg))
    assert "takes 1280x800" in err and "frame(s)" not in err
    wide = {"id": 4, "label": "accept", "path": _video(seqs / "c4.avi", 8, (96, 48))}
    err = _refused(seqs, [*entries, wide], capsys, "--frames", "3")
    assert "videos of more than one frame size (c000001 64x48, c000004 96x48)" in err
    (seqs / "notes.avi").write_text("not a video")
    notes = {"id": 5, "label": "accept", "path": "notes.avi"}
    err = _refused(seqs, [*entries, notes], capsys, "--frames", "3")
    assert f"{path}: c000005's video: {seqs / 'notes.avi'}: cannot open" in err


def test_fod_simulate_prints_its_summary_and_a_knapp_study(
    bundle: Path, small_set: Path, tmp_path: Path, capsys
) -> None:
    """The README's main command without --json: one line a line engineer reads, with the
    fields the README names; with --knapp 2 every container runs twice (fresh sensor noise),
    and the Knapp study of those inspections is written beside the summary."""
    out = tmp_path / "sim"
    argv = ["simulate", "--bundle", str(bundle), "--sequences", str(small_set), "--frames", "5"]
    assert main([*argv, "--knapp", "2", "--rate", "240", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    n = len(json.loads((small_set / "sequences.json").read_text())["containers"])
    assert line.startswith(f"{2 * n} containers: ")
    for name in ("passed the gate", "detection rate", "false-reject rate", "passed_defective",
                 "passed_faulty", "audit_disagrees", "alarms", "decision p50/p99"):  # fmt: skip
        assert name in line, (name, line)
    s = json.loads((out / "summary.json").read_text())
    assert s["containers"] == 2 * n and s["audit_disagrees"] == 0
    study = json.loads((out / "knapp.json").read_text())
    assert len(study["containers"]) == n  # each inspected twice: its zone from both
    assert sum(sum(z.values()) for z in study["zones"].values()) == n
    assert s["knapp"]["zones"] == study["zones"]
    assert (out / "knapp.md").stat().st_size > 0 and (out / "knapp.png").stat().st_size > 0
