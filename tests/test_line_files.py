"""The audit folder's line files (`checkpoints.jsonl`, `events.jsonl`): an append is whole or
absent. A write that fails part-way is cut back off; a line cut short by a death
mid-append is left out by `fod audit verify` (and named) and removed by the next writer.
Before, either left the trail failing `verify` for good. Judged at the pins where the line
runs."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from edge.audit import CHECKPOINTS
from edge.audit_verify import verify
from edge.events import EVENTS, EventLog, read_events
from edge.lines import append_whole, cut_tail, drop_cut_tail, whole_end
from edge.signing import generate_keypair
from fod.cli import main

from .gate_run import released
from .test_runtime import _cfg

REAL_WRITE, REAL_FSYNC = os.write, os.fsync


def _fd_name(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


def _fail_once(monkeypatch: pytest.MonkeyPatch, name: str, how: str) -> dict:
    """The next append to the file `name` fails: `write` writes 10 bytes of it and then
    the disk is full; `fsync` writes it all and the flush to the disk fails (EIO)."""
    left = {"n": 1}

    def write(fd: int, data) -> int:
        if left["n"] and how == "write" and _fd_name(fd) == name:
            if len(data) > 10:
                return REAL_WRITE(fd, bytes(data[:10]))
            left["n"] = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        return REAL_WRITE(fd, data)

    def fsync(fd: int) -> None:
        if left["n"] and how == "fsync" and _fd_name(fd) == name:
            left["n"] = 0
            raise OSError(errno.EIO, "Input/output error")
        REAL_FSYNC(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    return left


@pytest.mark.parametrize("how", ["write", "fsync"])
def test_a_failed_append_leaves_the_file_as_it_was(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    path = tmp_path / "x.jsonl"
    append_whole(path, b'{"a": 1}\n')
    left = _fail_once(monkeypatch, "x.jsonl", how)
    with pytest.raises(OSError):
        append_whole(path, b'{"b": 2}\n{"c": 3}\n')
    assert left["n"] == 0 and path.read_bytes() == b'{"a": 1}\n'
    append_whole(path, b'{"d": 4}\n')
    assert path.read_bytes() == b'{"a": 1}\n{"d": 4}\n'


def test_an_append_after_a_cut_that_could_not_be_cut_back_starts_a_line_of_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "x.jsonl"
    append_whole(path, b'{"a": 1}\n')
    with monkeypatch.context() as m:
        _fail_once(m, "x.jsonl", "write")
        m.setattr(os, "ftruncate", lambda fd, n: (_ for _ in ()).throw(OSError(errno.EIO, "EIO")))
        with pytest.raises(OSError):
            append_whole(path, b'{"b": 22222}\n')  # 10 bytes of it, then the disk is full
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2222' and cut_tail(path) == 10
    append_whole(path, b'{"c": 3}\n')
    assert path.read_bytes() == b'{"a": 1}\n{"c": 3}\n'


def test_a_cut_tail_is_found_across_chunks_and_dropped(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    assert whole_end(path) == 0 == cut_tail(path) == drop_cut_tail(path)
    path.write_bytes(b"a\n" + b"b" * 200_000)  # a tail longer than the 64 KiB read
    assert whole_end(path) == 2 and cut_tail(path) == 200_000
    assert drop_cut_tail(path) == 200_000 and path.read_bytes() == b"a\n"
    assert drop_cut_tail(path) == 0 and path.read_bytes() == b"a\n"
    path.write_bytes(b"no newline at all")
    assert drop_cut_tail(path) == 17 and path.read_bytes() == b""


def test_alarm_events_whose_fsync_failed_are_written_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The flush's fsync fails: its events wait for the next flush, which must not find
    them on disk already (the same event twice breaks the chain for good)."""
    log = EventLog(tmp_path)
    log.post("alarm", "a", 0)
    assert log.flush()
    _fail_once(monkeypatch, EVENTS, "fsync")
    log.post("alarm", "b", 0)
    assert not log.flush()
    assert log.flush()
    assert [e["detail"] for e in read_events(tmp_path)] == ["a", "b"]


def _signed(bundle: Path, tmp_path: Path):
    key, pub = generate_keypair(tmp_path / "keys")
    cfg = _cfg(
        bundle,
        tmp_path,
        decision={"min_evidence": 99.0},  # every container accepted: each one a gate pulse
        audit={"signing_key": str(key), "checkpoint_every": 1},
    )
    return cfg, pub


def test_a_power_cut_mid_append_leaves_a_trail_that_verifies(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The unit dies writing a checkpoint and an event (their last lines cut short). The
    trail verifies with the key as it lies, naming the cut lines; the restarted line
    releases each container at its own time at the gate pin, alarm pin down, and after
    it the trail verifies whole."""
    cfg, pub = _signed(bundle, tmp_path)
    late, alarm_states, _ = released(cfg, ["c0", "c1"])
    assert all(abs(d) < 0.2 for d in late) and not any(alarm_states)
    folder = cfg.audit.folder
    whole_events = len(read_events(folder))
    for name in (CHECKPOINTS, EVENTS):
        text = (folder / name).read_bytes()
        (folder / name).write_bytes(text + text.splitlines(keepends=True)[-1][:40])
    r = verify(folder, pub)
    assert (r.rows, r.checkpoints) == (2, 2)
    assert set(r.cut) == {folder / CHECKPOINTS, folder / EVENTS}
    capsys.readouterr()
    assert main(["audit", "verify", str(folder), "--public-key", str(pub)]) == 0
    assert capsys.readouterr().out.count("ends in a line cut short") == 2

    late, alarm_states, _ = released(cfg, ["c2", "c3"])
    assert all(abs(d) < 0.2 for d in late) and not any(alarm_states)
    r = verify(folder, pub)
    assert (r.rows, r.checkpoints, r.cut) == (4, 4, ())
    assert sum(r.events.values()) > whole_events


def test_a_checkpoint_write_that_fails_part_way_on_the_live_line(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """c1's checkpoint meets a full disk after 10 bytes. c1 is on record already, so it
    is released at its time with the others; the alarm pin comes on (the unit cannot
    write its head); the trail verifies with the key, c1's checkpoint missing only."""
    cfg, pub = _signed(bundle, tmp_path)

    def between(cid: str) -> None:
        if cid == "c1":
            _fail_once(monkeypatch, CHECKPOINTS, "write")

    late, alarm_states, raised = released(cfg, ["c0", "c1", "c2", "c3"], between)
    assert all(abs(d) < 0.2 for d in late)
    assert raised and any(alarm_states)
    r = verify(cfg.audit.folder, pub)
    assert (r.rows, r.checkpoints, r.cut) == (4, 3, ())
