"""`fod audit archive`: the oldest files of a trail move off the unit; the folder left
behind and the archive each verify, signatures included, and tampering still shows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edge.audit_archive
from edge.audit import AuditConfig, AuditError, AuditLog, ContainerRecord, _last_row, audit_files
from edge.audit_archive import archive
from edge.audit_verify import iter_rows, verify
from edge.signing import generate_keypair
from fod.cli import main

IMG = np.random.default_rng(0).integers(0, 255, (48, 64), dtype=np.uint8)
DETS = [[[10.0, 20.0, 30.0, 40.0, 0.9, 1.0]] * 30] * 8  # about 9 KB a row


def _log(folder: Path, key: Path, every: int = 10) -> AuditLog:
    cfg = AuditConfig(
        folder, rotate_bytes=2**20, min_free_bytes=0, signing_key=str(key), checkpoint_every=every
    )
    return AuditLog(cfg)


def _record(log: AuditLog, n: int) -> None:
    for _ in range(n):
        i = log.last_seq
        reject = i % 3 == 0
        rec = ContainerRecord(
            f"c{i}", i, i + 1, "reject" if reject else "accept", "r", None, DETS, "m", "c"
        )
        log.record(rec, image=IMG if reject else None)


def _seqs(folder: Path) -> list:
    return [int(r["seq"]) for r in iter_rows(folder) if "_chain" not in r]


@pytest.fixture
def keys(tmp_path: Path):
    return generate_keypair(tmp_path / "keys")


def test_archive_moves_the_oldest_files_and_both_halves_verify(tmp_path: Path, keys) -> None:
    key, pub = keys
    trail, arc = tmp_path / "audit", tmp_path / "nas" / "arc"
    with _log(trail, key) as log:  # the runtime's writer stays open: the line runs
        _record(log, 500)
        files = audit_files(trail)
        assert len(files) >= 4
        a = archive(trail, arc, keep=2, public_key=pub, signing_key=key)
        assert a.files == [f.name for f in files[:-2]] and a.first_seq == 1
        assert a.images > 0 and len(list((arc / "images").glob("*.png"))) == a.images
        assert [f.name for f in audit_files(trail)] == [f.name for f in files[-2:]]
        _record(log, 100)  # the line goes on after it
    kept, moved = verify(trail, pub), verify(arc, pub)
    assert moved.first_seq == 1 and moved.last_seq == a.last_seq and moved.signed
    assert kept.first_seq == a.last_seq + 1 and kept.last_seq == 600 and kept.signed
    assert kept.retired is not None and kept.retired.seq == a.last_seq
    assert moved.checkpoints + kept.checkpoints == 60  # every signed checkpoint, once
    assert _seqs(arc) + _seqs(trail) == list(range(1, 601))
    # Again to the same archive: it continues; then to a new one, which starts after it.
    second = archive(trail, arc, keep=1, public_key=pub, signing_key=key)
    assert second.first_seq == a.last_seq + 1 and verify(arc, pub).last_seq == second.last_seq
    with _log(trail, key) as log:  # a restarted runtime goes on after the trail's last row
        assert log.last_seq == 600
        _record(log, 200)
    third = archive(trail, tmp_path / "arc2", keep=1, public_key=pub, signing_key=key)
    assert third.first_seq == second.last_seq + 1
    assert verify(tmp_path / "arc2", pub).first_seq == third.first_seq
    assert _seqs(arc) + _seqs(tmp_path / "arc2") + _seqs(trail) == list(range(1, 801))
    assert verify(trail, pub).last_seq == 800


def test_tampering_still_shows_after_an_archive(tmp_path: Path, keys) -> None:
    key, pub = keys
    trail = tmp_path / "audit"
    with _log(trail, key) as log:
        _record(log, 400)
    archive(trail, tmp_path / "arc", keep=2, signing_key=key)
    assert verify(trail, pub).signed
    oldest = audit_files(trail)[0]
    saved = oldest.read_bytes()
    oldest.unlink()  # the oldest file left here removed by hand
    with pytest.raises(AuditError, match="does not continue the retired rows"):
        verify(trail)
    oldest.write_bytes(saved)
    retired = json.loads((trail / "retired.json").read_text())
    (trail / "retired.json").write_text(json.dumps({**retired, "hash": "0" * 64}))
    with pytest.raises(AuditError, match="does not continue the retired rows"):
        verify(trail)
    # The oldest kept file removed and retired.json rewritten to claim it archived: the
    # chain alone cannot tell; the retirement's signature can.
    seq, head = _last_row(oldest)
    claim = {**retired, "seq": seq, "hash": head, "files": [*retired["files"], oldest.name]}
    (trail / "retired.json").write_text(json.dumps(claim))
    oldest.unlink()
    assert verify(trail).first_seq == seq + 1
    with pytest.raises(AuditError, match=r"retired.json: bad signature \(edited"):
        verify(trail, pub)
    del claim["sig"]
    (trail / "retired.json").write_text(json.dumps(claim))
    with pytest.raises(AuditError, match=r"retired.json: unsigned, while a public key was given"):
        verify(trail, pub)


def test_a_signed_trail_is_archived_only_with_its_own_key(tmp_path: Path, keys) -> None:
    """Without a signing key, or with one that is not the public key's other half, a signed
    trail is refused before anything is copied or removed."""
    key, pub = keys
    other, _ = generate_keypair(tmp_path / "other", "audit")
    trail, arc = tmp_path / "audit", tmp_path / "arc"
    with _log(trail, key) as log:
        _record(log, 400)
    before = audit_files(trail)
    with pytest.raises(AuditError, match=r"a signed trail .* give --signing-key"):
        archive(trail, arc, keep=1, public_key=pub)
    with pytest.raises(AuditError, match=r"audit.key: not the private half of .*fod_signing.pub"):
        archive(trail, arc, keep=1, public_key=pub, signing_key=other)
    assert audit_files(trail) == before and not arc.exists()
    assert not (trail / "retired.json").exists()


def test_a_stop_before_the_files_are_removed_leaves_both_verifiable(
    tmp_path: Path, keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, pub = keys
    trail, arc = tmp_path / "audit", tmp_path / "arc"
    with _log(trail, key) as log:
        _record(log, 400)
    before = audit_files(trail)

    def power_cut(path: Path) -> None:
        raise OSError("power cut")

    with monkeypatch.context() as m:
        m.setattr(edge.audit_archive, "_remove", power_cut)
        with pytest.raises(OSError):
            archive(trail, arc, keep=2, signing_key=key)
    assert audit_files(trail) == before  # nothing removed, the retirement on record
    assert _seqs(arc) + _seqs(trail) == list(range(1, 401))  # each row in one half
    assert verify(trail, pub).retired is not None and verify(arc, pub).last_seq < 400
    again = archive(trail, arc, keep=2, signing_key=key)  # the rerun removes the copies left here
    assert again.files == [] and len(audit_files(trail)) == 2


def test_a_foreign_archive_or_the_folder_itself_is_refused(tmp_path: Path, keys, capsys) -> None:
    key, _ = keys
    trail, other = tmp_path / "audit", tmp_path / "other"
    for folder in (trail, other):
        with _log(folder, key) as log:
            _record(log, 400)
    before = audit_files(trail)
    archive(other, tmp_path / "arc", keep=1, signing_key=key)  # another line's archive
    with pytest.raises(AuditError, match="holds an archive that ends at seq"):
        archive(trail, tmp_path / "arc", keep=1, signing_key=key)
    with pytest.raises(AuditError, match="another folder than the trail"):
        archive(trail, trail, keep=1, signing_key=key)
    assert audit_files(trail) == before and verify(trail).first_seq == 1  # untouched
    assert not (trail / "retired.json").exists()
    assert main(["audit", "archive", str(trail)]) == 2
    assert "needs --to DEST" in capsys.readouterr().err
    assert main(["audit", "archive", str(tmp_path / "nowhere"), "--to", str(tmp_path / "a")]) == 2
    assert "nowhere: no such audit folder" in capsys.readouterr().err
    assert main(["audit", "archive", str(trail), "--to", str(tmp_path / "a3")]) == 2
    assert "a signed trail (checkpoints.jsonl): give --signing-key" in capsys.readouterr().err
    argv = ["audit", "archive", str(trail), "--to", str(tmp_path / "a3"), "--signing-key", str(key)]
    assert main(argv) == 0
    assert "both verified" in capsys.readouterr().out
    assert main(["audit", "verify", str(trail)]) == 0
    assert f"archived, last to {(tmp_path / 'a3').resolve()})" in capsys.readouterr().out


def test_rows_since_an_archive_need_no_checkpoint_of_their_own(tmp_path: Path, keys) -> None:
    """A signed trail whose kept rows have not reached their next checkpoint yet still
    verifies with the public key (its checkpoints went with the archive)."""
    key, pub = keys
    trail = tmp_path / "audit"
    with _log(trail, key, every=100) as log:
        _record(log, 390)  # checkpoints at 100, 200, 300; the newest file starts after 300
    a = archive(trail, tmp_path / "arc", keep=1, public_key=pub, signing_key=key)
    assert a.last_seq > 300
    kept = verify(trail, pub)
    assert kept.signed and kept.checkpoints == 0 and kept.last_seq == 390
    assert verify(tmp_path / "arc", pub).checkpoints == 3


def test_an_archive_beside_the_live_line_leaves_every_gate_release_in_time(
    bundle: Path, tmp_path: Path
) -> None:
    """`fod audit archive` run while the runtime records (small files, so it rotates): each
    container accepted before, during and after it is released at the gate pin at its own
    time, the alarm pin never comes on, and both halves of the trail verify."""
    from .gate_run import released
    from .test_runtime import _cfg

    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0}, audit={"rotate_bytes": 20_000})

    def between(cid: str) -> None:
        if cid == "c5":
            archive(cfg.audit.folder, tmp_path / "arc", keep=1)

    late, alarm_states, _ = released(cfg, [f"c{i}" for i in range(8)], between)
    assert all(abs(d) < 0.2 for d in late)  # 8 releases, each at its trigger + delay
    assert not any(alarm_states)
    assert verify(tmp_path / "arc").first_seq == 1
    kept = verify(cfg.audit.folder)
    assert kept.retired is not None and kept.last_seq == 8
