"""Reading a trail of weeks on the unit that runs the line: `fod audit verify`, `export`
and `show` hold a batch of rows at a time, not the trail (gigabytes: about 7 KB of
detections a container, tens of thousands of containers a day)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.audit import AuditConfig, AuditError, AuditLog, ContainerRecord, audit_files
from edge.audit_verify import BATCH, export_rows, find_row, iter_rows, verify
from edge.decision import DecisionConfig
from edge.replay import recorded_rows, replay
from fod.cli import main

from .test_audit import _rec
from .test_replay import NAMES

ROWS = 1024  # about 13 MB, in files of at most 8 MiB (the WAL counted)
# 40 boxes in each of 8 frames: 11 KB of JSON a row (the demo line's: 7 KB on average, 12 at most).
DETECTIONS = [[[10.0 + b, 20.0, 30.0, 40.0 + b, 0.123456, 1.0] for b in range(40)]] * 8


def _trail(folder: Path, rows: int = ROWS, rotate_bytes: int = 8 * 2**20) -> int:
    """A trail of `rows` containers over several files; returns its rows' bytes."""
    with AuditLog(AuditConfig(folder, min_free_bytes=0, rotate_bytes=rotate_bytes)) as log:
        for i in range(rows):
            rec = ContainerRecord(
                f"c{i}", i, i + 1, "accept", "clean", None, DETECTIONS, "m" * 64, "c" * 64
            )
            log.record(rec)
    return sum(f.stat().st_size for f in audit_files(folder))


def _peak(fn) -> int:
    """Peak bytes Python allocated while `fn` ran."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("trail")
    return folder, _trail(folder)


def test_a_trail_is_read_a_batch_at_a_time(trail) -> None:
    folder, size = trail
    assert len(audit_files(folder)) >= 2 and size > 12 * 10**6
    out = io.StringIO()
    assert export_rows(folder, "jsonl", out) == ROWS
    assert [json.loads(x)["seq"] for x in out.getvalue().splitlines()] == list(range(1, ROWS + 1))
    # Each reader's peak is a fraction of the trail, and of its larger file: reading a file
    # whole (as verify did) peaks above the file's size, and export held every file's rows.
    sink = io.StringIO()
    sink.write = len  # type: ignore[method-assign]  # rows written are gone, as to a file
    for name, fn in [
        ("verify", lambda: verify(folder)),
        ("export jsonl", lambda: export_rows(folder, "jsonl", sink)),
        ("export csv", lambda: export_rows(folder, "csv", sink)),
    ]:
        peak = _peak(fn)
        assert peak < size / 4, (name, peak, size)
    assert verify(folder).rows == ROWS


def test_a_trail_is_replayed_a_batch_at_a_time(trail) -> None:
    """`fod audit replay` decides each container as its row is read and keeps the outcome,
    not the detections (a 5 000-row trail parsed whole took 577 MB resident)."""
    folder, size = trail
    got: list = []
    peak = _peak(lambda: got.extend(replay(recorded_rows(folder), NAMES, DecisionConfig(), 0.05)))
    assert len(got) == ROWS and {r.after for r in got} == {"accept"}  # every score 0.12
    assert peak < size / 4, (peak, size)


def test_signed_checkpoints_are_read_a_line_at_a_time(tmp_path: Path) -> None:
    """One checkpoint every `checkpoint_every` rows, kept for the folder's life: millions
    on a fast line. `verify` checks each as the walk passes its row, holding none."""
    from edge.signing import generate_keypair

    key, pub = generate_keypair(tmp_path / "keys")
    folder = tmp_path / "audit"
    cfg = AuditConfig(folder, min_free_bytes=0, signing_key=str(key), checkpoint_every=1)
    with AuditLog(cfg) as log:
        for i in range(1500):
            log.record(ContainerRecord(f"c{i}", i, i + 1, "accept", "clean", None, [[]], "m", "c"))
    size = (folder / "checkpoints.jsonl").stat().st_size  # 1500 lines, about 350 KB
    got: list = []
    peak = _peak(lambda: got.append(verify(folder, pub)))
    assert got[0].checkpoints == 1500 and got[0].signed
    assert peak < size / 2, (peak, size)
    # Written in seq order: a line out of it is named.
    lines = (folder / "checkpoints.jsonl").read_text().splitlines(keepends=True)
    lines[10], lines[11] = lines[11], lines[10]
    (folder / "checkpoints.jsonl").write_text("".join(lines))
    with pytest.raises(AuditError, match=r"checkpoints.jsonl: line 12: seq 11 after seq 12"):
        verify(folder, pub)


def test_show_finds_a_row_in_any_file(trail) -> None:
    folder, _ = trail
    files = audit_files(folder)
    for seq in (1, ROWS // 2, ROWS):
        row = find_row(folder, seq)
        assert row["seq"] == seq and row["container_id"] == f"c{seq - 1}"
        assert row["_file"] in files and row["row_hash"]
    assert find_row(folder, ROWS)["_file"] == files[-1]
    with pytest.raises(AuditError, match=f"no row with seq {ROWS + 1}"):
        find_row(folder, ROWS + 1)


def test_an_export_that_fails_midway_leaves_no_file(tmp_path: Path, capsys) -> None:
    """Rows are written as they are read: a file found damaged after some were written
    leaves no export behind, neither the --out file nor its temp file."""
    folder = tmp_path / "audit"
    _trail(folder, rows=2 * BATCH, rotate_bytes=2**20)
    files = audit_files(folder)
    assert len(files) >= 2
    files[-1].write_bytes(b"not a database" * 100)
    out = tmp_path / "qa" / "rows.csv"
    assert main(["audit", "export", str(folder), "--format", "csv", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{files[-1]}: unreadable" in err, err
    assert not out.exists() and list(out.parent.iterdir()) == []
    # The sound trail exports whole, as CSV a QA system reads back.
    ok = tmp_path / "ok"
    _trail(ok, rows=3)
    assert main(["audit", "export", str(ok), "--format", "csv", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["seq"] for r in rows] == ["1", "2", "3"]
    assert json.loads(rows[0]["detections"]) == DETECTIONS
    # To stdout (`> rows.csv`), a folder without a trail writes nothing, not a CSV header.
    capsys.readouterr()
    assert main(["audit", "export", str(tmp_path / "qa"), "--format", "csv"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "qa: no audit-*.db files" in cap.err


def test_a_reader_mid_walk_does_not_hold_the_writers_rotation(tmp_path: Path) -> None:
    """A reader stopped between batches (a slow consumer of `fod audit export`) holds no
    read open on the file being written: the runtime's daily rotation, inside a record,
    checkpoints that file's WAL into it and truncates it (with a read held open it waited
    5 s for the reader, then left the WAL)."""
    day = dt.datetime(2026, 12, 7, 23, 0, tzinfo=dt.timezone.utc)
    with AuditLog(AuditConfig(tmp_path, min_free_bytes=0)) as log:
        for i in range(2 * BATCH):
            log.record(_rec(i), now=day)
        rows = iter_rows(tmp_path)
        assert "_chain" in next(rows) and next(rows)["seq"] == 1  # mid-walk, file 1
        for i in range(2 * BATCH, 2 * BATCH + 5):  # the WAL gets rows the walk has not seen
            log.record(_rec(i), now=day)
        log.record(_rec(999), now=day + dt.timedelta(hours=2))  # a new UTC day: rotation
        first = audit_files(tmp_path)[0]
        assert len(audit_files(tmp_path)) == 2
        assert first.with_name(first.name + "-wal").stat().st_size == 0
        seen = [r["seq"] for r in rows if "_chain" not in r]
    # The walk went on to the end of its file, rows appended since included (the files it
    # walks are those there when it began).
    assert seen == list(range(2, 2 * BATCH + 6))
    assert verify(tmp_path).rows == 2 * BATCH + 6


def test_fod_audit_show_writes_the_review_png_of_a_reject(tmp_path: Path, capsys) -> None:
    """`fod audit show FOLDER SEQ --out PNG`, as a QA reviewer runs it: the reject's
    evidence frame with its detections, written as PNG; an accept has no evidence image,
    and an --out that is not a .png is refused, nothing written."""
    img = np.full((96, 128), 200, np.uint8)
    dets = [[[40.0, 30.0 + 4 * t, 46.0, 36.0 + 4 * t, 0.9, 1.0]] for t in range(4)]
    with AuditLog(AuditConfig(tmp_path / "a", min_free_bytes=0)) as log:
        log.record(ContainerRecord("c0", 0, 1, "accept", "clean", None, [], "m" * 64, "c" * 64))
        rec = ContainerRecord("c1", 1, 2, "reject", "particle", None, dets, "m" * 64, "c" * 64)
        log.record(rec, image=img)
    argv = ["audit", "show", str(tmp_path / "a"), "2", "--out", str(tmp_path / "r.png")]
    assert main(argv) == 0
    assert "r.png: seq 2" in capsys.readouterr().out
    drawn = cv2.imread(str(tmp_path / "r.png"))
    assert drawn.shape == (96, 128, 3) and (drawn != 200).any()  # the boxes and labels
    argv[3] = "1"
    assert main(argv) == 2 and "no evidence image" in capsys.readouterr().err
    argv[3], argv[5] = "2", str(tmp_path / "r.jpg")
    assert main(argv) == 2 and "name it *.png" in capsys.readouterr().err
    assert not (tmp_path / "r.jpg").exists()
