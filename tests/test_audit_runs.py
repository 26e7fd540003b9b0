"""`fod audit runs`: the trail cut at each run's `start` event - which software, bundle and
config decided which rows - with rows that do not match their run's start counted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edge.audit import AuditConfig, AuditLog
from edge.audit_runs import runs, table
from edge.events import EventLog
from fod.cli import main

from .test_audit import _rec

M1, C1 = "1" * 64, "c" * 64  # start A's model and config (C1: every _rec row's config)


def _start(model: str, bundle: str) -> dict:
    return {"unit": "u1 (Orin)", "software": {"pharma-fod": "0.1.0"}, "bundle": bundle,
            "edge_code_sha256": "e" * 64, "backend": "tensorrt engine x.engine on Orin",
            "model_sha256": model, "config_sha256": C1}  # fmt: skip


def test_rows_are_cut_at_each_start_and_an_off_record_row_is_counted(
    tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "audit"
    with AuditLog(AuditConfig(folder, min_free_bytes=0)) as log:
        events = EventLog(folder)
        for i in range(2):  # a trail begun before starts were recorded
            log.record(_rec(i))
        events.post("start", _start(M1, "line 2026.12.01"), log.last_seq)
        for i in range(2, 5):
            rec = _rec(i, "reject" if i == 3 else "accept")
            log.record(dataclasses.replace(rec, model_hash=M1 if i < 4 else "2" * 64))
        events.post("alarm", "stage inference crashed", log.last_seq)
        events.post("start", _start(M1, "line 2026.12.01"), log.last_seq)  # recorded nothing
        events.post("start", _start("3" * 64, "line 2026.12.05"), log.last_seq)
        for i in range(5, 7):
            log.record(dataclasses.replace(_rec(i), model_hash="3" * 64))
        assert events.flush()
    got = runs(folder)
    assert [(r.start is None, r.after_seq, r.first_seq, r.last_seq, r.rows) for r in got] == [
        (True, 0, 1, 2, 2),
        (False, 2, 3, 5, 3),
        (False, 5, None, None, 0),
        (False, 5, 6, 7, 2),
    ]
    assert [r.rejects for r in got] == [0, 1, 0, 0] and [r.off_start for r in got] == [0, 1, 0, 0]
    lines = table(got)
    assert lines[0].startswith("-  rows 1..2 (2 containers, 0 rejected): no start on record")
    assert lines[1].startswith("1  ") and "rows 3..5 (3 containers, 1 rejected)" in lines[1]
    assert "bundle line 2026.12.01, model 111111111111, config cccccccccccc" in lines[1]
    assert lines[1].endswith("; 1 row NOT decided by this start's model/config")
    assert lines[2].startswith("2  ") and "no rows (0 containers" in lines[2]
    assert lines[3].startswith("3  ") and "bundle line 2026.12.05, model 333333333333" in lines[3]
    assert main(["audit", "runs", str(folder)]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    assert main(["audit", "runs", str(folder), "--json"]) == 0
    assert [r["rows"] for r in json.loads(capsys.readouterr().out)] == [2, 3, 0, 2]


def test_a_broken_event_chain_is_named(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "audit"
    with AuditLog(AuditConfig(folder, min_free_bytes=0)) as log:
        log.record(_rec(0))
        events = EventLog(folder)
        events.post("start", _start(M1, "b 1"), 0)
        assert events.flush()
    path = folder / "events.jsonl"
    path.write_text(path.read_text().replace("b 1", "b 2"))
    assert main(["audit", "runs", str(folder)]) == 2
    assert "events.jsonl: line 1 was edited" in capsys.readouterr().err
