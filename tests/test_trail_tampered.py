"""A unit starts on an audit trail that was tampered with while it was down: its newest
row deleted (with or without its `anchor.json`), or its last row's hash rewritten. The
runtime goes on with the line - after a cut, a new file links to the anchor, so what was
done stays visible - but the alarm goes up at start, judged at the alarm pin, with its
cause in the events, and `verify` names the fault before the restart and, where the
chain can show it, after. A trail the writer cannot read at all (its anchor or newest
file garbled) keeps the unit from starting, the file named."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.audit import AuditConfig, AuditError, AuditLog
from edge.audit_verify import verify
from edge.events import read_events

from .gate_run import released
from .test_audit import _write
from .test_runtime import _cfg

# how -> (SQL on the last file, verify's fault before the restart, the runtime's alarm at
# its start, verify's fault after it)
TAMPER = {
    "cut": (
        "DELETE FROM containers WHERE seq = 3",
        "ends at seq 2 but its anchor is at seq 3",
        "ends at seq 2 but its anchor is at seq 3: rows were cut",
        r"audit-000002\.db: does not continue .* \(rows seq 3\.\.3 missing: cut from its end",
    ),
    # No anchor: the runtime can see only that it is gone, and continues after the last row
    # left; an unsigned chain then shows nothing more (with a key, checkpoints would).
    "anchor removed": (
        "DELETE FROM containers WHERE seq = 3",
        "anchor.json missing: the head cannot be checked",
        "anchor.json missing while the trail has rows (to seq 2)",
        None,
    ),
    "edited": (
        "UPDATE containers SET row_hash = 'f00d' WHERE seq = 3",
        "row seq 3 was edited",
        "the last row does not match the anchor (edited)",
        "row seq 3 was edited",
    ),
}


@pytest.mark.parametrize("how", sorted(TAMPER))
def test_a_unit_started_on_a_tampered_trail_raises_the_alarm_and_keeps_releasing(
    bundle: Path, tmp_path: Path, how: str
) -> None:
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0})
    late, _, raised = released(cfg, ["c0", "c1", "c2"])
    assert not raised and max(map(abs, late)) < 0.2
    sql, fault, alarm, fault_after = TAMPER[how]
    db = sqlite3.connect(str(sorted(cfg.audit.folder.glob("audit-*.db"))[-1]))
    db.execute(sql)
    db.commit()
    db.close()
    if how == "anchor removed":
        (cfg.audit.folder / "anchor.json").unlink()
    with pytest.raises(AuditError, match=fault):
        verify(cfg.audit.folder)
    late, alarm_states, raised = released(cfg, ["c3", "c4"])
    assert raised and any(alarm_states), "no alarm at the pin for a tampered trail"
    assert max(map(abs, late)) < 0.2  # the line goes on: each released at its gate time
    alarms = [str(e["detail"]) for e in read_events(cfg.audit.folder) if e["kind"] == "alarm"]
    assert any(alarm in a for a in alarms), alarms  # on record with its cause
    if fault_after is None:
        assert verify(cfg.audit.folder).rows == 4  # seq 3 taken again: only the events tell
        return
    with pytest.raises(AuditError, match=fault_after):  # the new rows hide nothing
        verify(cfg.audit.folder)


@pytest.mark.parametrize(
    "what, spoil",
    [
        ("anchor", lambda f: (f / "anchor.json").write_text("{not json")),
        ("anchor", lambda f: (f / "anchor.json").write_text('{"hash": "00"}')),
        ("file", lambda f: (f / "audit-000001.db").write_bytes(b"\0" * 4096)),
    ],
    ids=["anchor-garbled", "anchor-without-seq", "db-overwritten"],
)
def test_a_trail_the_writer_cannot_read_is_refused_naming_the_file(
    tmp_path: Path, what: str, spoil
) -> None:
    """A garbled anchor.json or a newest audit file that is no SQLite database: the writer
    cannot know where the chain ends, so it refuses to open (the runtime does not start)
    naming the file, and leaves both as they were for a reviewer."""
    _write(tmp_path, 3)
    for stale in tmp_path.glob("audit-000001.db-*"):  # WAL and shared memory: the file alone
        stale.unlink()
    spoil(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    name = "anchor.json" if what == "anchor" else "audit-000001.db"
    with pytest.raises(AuditError, match=rf"{name}: unreadable"):
        AuditLog(AuditConfig(tmp_path, min_free_bytes=0))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
