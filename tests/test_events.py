"""Alarm events on record beside the audit rows (`events.jsonl`): their own hash chain,
signed with the audit's key, walked by `fod audit verify`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge.audit import AuditConfig, AuditError, AuditLog
from edge.audit_verify import verify
from edge.events import EVENTS, EventLog, event_hash, read_events, verify_events

from .test_audit import _rec, _write


def _append(log: EventLog, detail: str, audit_seq: int) -> bool:
    """One alarm event queued and written -> whether it is on disk (as the supervisor's
    round writes what the raising thread queued)."""
    log.post("alarm", detail, audit_seq)
    return log.flush()


def test_alarm_events_are_chained_beside_the_rows(tmp_path: Path) -> None:
    """events.jsonl: appends continue the chain across a reopen; an edited, removed or cut
    line is named by line number, except a last line cut short by a death mid-append,
    which the next writer removes."""
    _write(tmp_path, 2)
    log = EventLog(tmp_path)
    assert _append(log, "stage inference crashed", 1) and _append(log, "b", 2)
    reopened = EventLog(tmp_path)
    reopened.post("alarm", "hold c3 .. c9", 2)  # queued only: the raising thread never waits
    assert verify_events(tmp_path) == {"alarm": 2}
    assert reopened.flush() and verify_events(tmp_path) == {"alarm": 3} == verify(tmp_path).events
    path = tmp_path / EVENTS
    good = path.read_text()
    lines = good.splitlines(keepends=True)
    assert [json.loads(x)["n"] for x in lines] == [1, 2, 3]
    path.write_text(good.replace("hold c3 .. c9", "hold c4 .. c9"))
    with pytest.raises(AuditError, match=r"events.jsonl: line 3 was edited"):
        verify(tmp_path)
    path.write_text(lines[0] + lines[2])
    with pytest.raises(AuditError, match=r"line 2 was edited, moved or follows a removed"):
        verify_events(tmp_path)
    path.write_text(good[:-20])  # died mid-write: the cut line is left out, and named
    assert verify_events(tmp_path) == {"alarm": 2} and verify(tmp_path).cut == (path,)
    assert _append(EventLog(tmp_path), "after the cut", 2)  # the next writer drops it
    assert verify_events(tmp_path) == {"alarm": 3} and verify(tmp_path).cut == ()
    path.write_text(lines[0] + lines[1][:-20] + "\n" + lines[2])  # a cut line mid-file
    with pytest.raises(AuditError, match=r"line 2 is not an event"):
        verify_events(tmp_path)


def test_signed_alarm_events_catch_a_recomputed_chain(tmp_path: Path) -> None:
    """With the audit's signing key each event is signed: an editor who rewrites an event
    and recomputes the hashes after it is caught with the public key, and so is an
    unsigned event where a key was given."""
    from edge.signing import generate_keypair

    key, pub = generate_keypair(tmp_path / "keys")
    folder = tmp_path / "audit"
    cfg = AuditConfig(folder, min_free_bytes=0, signing_key=str(key), checkpoint_every=1)
    with AuditLog(cfg) as log:
        log.record(_rec(0))
        events = EventLog(folder, log.signing_key)
        assert _append(events, "a", 1) and _append(events, "b", 1)
    assert verify(folder, pub).events == {"alarm": 2}
    lines = [json.loads(x) for x in (folder / EVENTS).read_text().splitlines()]
    lines[0]["detail"] = "nothing happened"
    prev = "0" * 64
    for e in lines:  # recomputed, the old signatures kept
        e["prev_hash"], e["hash"] = prev, event_hash(prev, e)
        prev = e["hash"]
    (folder / EVENTS).write_text("".join(json.dumps(e) + "\n" for e in lines))
    assert verify(folder).events == {"alarm": 2}  # without the key the chain alone looks whole
    with pytest.raises(AuditError, match=r"events.jsonl: line 1: bad signature"):
        verify(folder, pub)
    (folder / EVENTS).unlink()
    _append(EventLog(folder), "unsigned", 1)
    with pytest.raises(AuditError, match=r"no event is signed, while a public key was given"):
        verify(folder, pub)
    # The unit got its key after this event: the first signed one covers it.
    assert _append(EventLog(folder, events.key), "signed", 1)
    assert verify(folder, pub).events == {"alarm": 2}
    _append(EventLog(folder), "unsigned again", 1)
    with pytest.raises(AuditError, match=r"line 3: unsigned after signed events"):
        verify(folder, pub)


def test_events_posted_while_a_full_queue_is_written_wait_for_the_next(
    tmp_path: Path, monkeypatch
) -> None:
    """Past 1024 waiting (writes failed for a while) a post drops the oldest. Events posted
    while such a queue is being written are not taken off with the written ones (before:
    as many were taken off as were written, and those posts were lost unwritten)."""
    log = EventLog(tmp_path)
    for i in range(1024):
        log.post("alarm", f"old {i}", 0)
    fsync, posted = os.fsync, []

    def post_during_the_write(fd: int) -> None:
        fsync(fd)
        if not posted:  # the alarm thread, while the supervisor writes
            posted.extend(f"new {j}" for j in range(3))
            for detail in posted:
                log.post("alarm", detail, 1)

    monkeypatch.setattr(os, "fsync", post_during_the_write)
    assert log.flush() and log.flush()
    details = [e["detail"] for e in read_events(tmp_path)]
    assert len(details) == 1027 and details[:2] == ["old 0", "old 1"]
    assert details[-3:] == posted


def test_a_unit_that_gets_its_audit_key_verifies_with_it(bundle: Path, tmp_path: Path) -> None:
    """A unit ran without an audit key, then was provisioned with one (setup.sh makes it,
    the fleet's line.toml names it): the trail verifies with the key, its earlier rows and
    events unsigned but chained into the signed ones, and each container of both runs was
    released at its time at the gate pin."""
    import dataclasses

    from .gate_run import released
    from .test_line_files import _signed

    cfg, pub = _signed(bundle, tmp_path)
    unsigned = dataclasses.replace(cfg, audit=dataclasses.replace(cfg.audit, signing_key=""))
    for run_cfg, ids in ((unsigned, ["c0", "c1"]), (cfg, ["c2", "c3"])):
        late, alarm_states, _ = released(run_cfg, ids)
        assert all(abs(d) < 0.2 for d in late) and not any(alarm_states)
    r = verify(cfg.audit.folder, pub)
    assert (r.rows, r.checkpoints, r.signed) == (4, 2, True)
    kinds = [(e["kind"], "sig" in e) for e in read_events(cfg.audit.folder)]
    assert kinds[0] == ("start", False) and ("start", True) in kinds
