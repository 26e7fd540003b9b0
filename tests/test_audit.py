"""The audit trail: hash chain catches edits and deletions, rotation carries the chain,
disk budget and disk-full behaviour, and SIGKILL at random points leaves a sound DB."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edge.audit import AuditConfig, AuditError, AuditLog, AuditUnavailable, ContainerRecord
from edge.audit_verify import verify


def _rec(i: int, decision: str = "accept") -> ContainerRecord:
    return ContainerRecord(
        f"c{i}",
        1000 * i,
        1000 * i + 500,
        decision,
        "clean",
        None,
        [[[1.0, 2.0, 3.0, 4.0, 0.9, 1.0]]],
        "m" * 64,
        "c" * 64,
    )


def _write(folder: Path, n: int, **cfg) -> None:
    with AuditLog(AuditConfig(folder, min_free_bytes=0, **cfg)) as log:
        for i in range(n):
            log.record(_rec(i))


def test_chain_verifies(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    r = verify(tmp_path)
    assert (r.files, r.rows, r.first_seq, r.last_seq) == (1, 10, 1, 10)


def test_edit_is_caught(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    db = sqlite3.connect(str(tmp_path / "audit-000001.db"))
    db.execute("UPDATE containers SET decision = 'accept', reason = 'x' WHERE seq = 4")
    db.commit()
    db.close()
    with pytest.raises(AuditError, match="row seq 4 was edited"):
        verify(tmp_path)


def test_delete_is_caught(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    db = sqlite3.connect(str(tmp_path / "audit-000001.db"))
    db.execute("DELETE FROM containers WHERE seq = 7")
    db.commit()
    db.close()
    with pytest.raises(AuditError, match="row seq 7 missing"):
        verify(tmp_path)


def test_rotation_carries_chain_and_reopen_continues(tmp_path: Path) -> None:
    _write(tmp_path, 5, rotate_bytes=1)  # every container starts a new file
    _write(tmp_path, 3, rotate_bytes=1)  # a restart continues the same chain
    r = verify(tmp_path)
    assert r.rows == 8 and r.files == 8 and r.last_seq == 8
    # Dropping a middle file breaks the link between its neighbours.
    (tmp_path / "audit-000004.db").unlink()
    with pytest.raises(AuditError, match=r"audit-000005\.db: does not continue the chain"):
        verify(tmp_path)


def test_daily_rotation(tmp_path: Path) -> None:
    cfg = AuditConfig(tmp_path, min_free_bytes=0)
    day = dt.datetime(2026, 11, 25, 23, 59, tzinfo=dt.timezone.utc)
    with AuditLog(cfg) as log:
        log.record(_rec(0), now=day)
        log.record(_rec(1), now=day)
        log.record(_rec(2), now=day + dt.timedelta(minutes=2))
    assert [p.name for p in sorted(tmp_path.glob("audit-*.db"))] == [
        "audit-000001.db",
        "audit-000002.db",
    ]
    assert verify(tmp_path).rows == 3


def test_disk_full_refuses_to_record(tmp_path: Path) -> None:
    with AuditLog(AuditConfig(tmp_path, min_free_bytes=2**62)) as log, pytest.raises(
        AuditUnavailable, match="bytes free"
    ):
        log.record(_rec(0))


def test_reject_images_within_budget(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64), dtype=np.uint8)  # ~4 KB as PNG
    archive = tmp_path / "archived"
    archive.mkdir()
    with AuditLog(AuditConfig(tmp_path, min_free_bytes=0, image_budget_bytes=10_000)) as log:
        for i in range(6):
            log.record(_rec(i, "reject"), image=img)
        kept = sorted((tmp_path / "images").glob("*.png"))
        assert 1 <= len(kept) <= 3 and kept[-1].name.startswith("000000006-")
        assert sum(p.stat().st_size for p in kept) <= 10_000
        # Evidence archived by hand (moved away) while the line runs leaves the budget when
        # its turn comes, and every reject after it is recorded (before: as many records
        # failed, AuditUnavailable, as files had gone).
        for p in kept:
            p.rename(archive / p.name)
        for i in range(6, 12):
            assert log.record(_rec(i, "reject"), image=img) == i + 1
    kept = sorted((tmp_path / "images").glob("*.png"))
    assert 1 <= len(kept) <= 3 and kept[-1].name.startswith("000000012-")
    assert sum(p.stat().st_size for p in kept) <= 10_000
    assert verify(tmp_path).rows == 12


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from edge.audit import AuditConfig, AuditLog, ContainerRecord
    log = AuditLog(AuditConfig(Path(sys.argv[1]), min_free_bytes=0, rotate_bytes=int(sys.argv[2])))
    i = 0
    while True:
        rec = ContainerRecord(f"c{i}", i, i + 1, "accept", "clean", None, [[]], "m", "c")
        seq = log.record(rec)
        print(seq, flush=True)  # printed only after the commit returned
        i += 1
    """
)


def test_sigkill_at_random_points_leaves_sound_db(tmp_path: Path) -> None:
    rnd = random.Random(0)
    folder = tmp_path / "audit"
    committed = 0
    for trial in range(20):
        p = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder), str(rnd.choice([4096, 10**9]))],
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 0.2 + rnd.random() * 0.6
        last = 0
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            last = int(line)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        rest = p.stdout.read().split()
        last = int(rest[-1]) if rest else last
        p.stdout.close()
        r = verify(folder)  # opens and verifies after every kill
        assert r.last_seq >= last, f"trial {trial}: committed seq {last} lost"
        assert r.last_seq >= committed
        committed = r.last_seq
    assert committed > 20


# --- attacks on the trail, and the writer's own failures ------------------------------


def _write_with_images(folder: Path, n: int, **cfg) -> None:
    img = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    with AuditLog(AuditConfig(folder, min_free_bytes=0, **cfg)) as log:
        for i in range(n):
            log.record(_rec(i, "reject"), image=img if i % 2 else None)


def test_cut_tail_is_caught(tmp_path: Path) -> None:
    _write(tmp_path, 10)
    db = sqlite3.connect(str(tmp_path / "audit-000001.db"))
    db.execute("DELETE FROM containers WHERE seq > 7")
    db.commit()
    db.close()
    with pytest.raises(AuditError, match="ends at seq 7 but its anchor is at seq 10"):
        verify(tmp_path)


def test_all_rows_deleted_is_caught(tmp_path: Path) -> None:
    _write(tmp_path, 5)
    db = sqlite3.connect(str(tmp_path / "audit-000001.db"))
    db.execute("DELETE FROM containers")
    db.commit()
    db.close()
    with pytest.raises(AuditError, match="ends at seq 0"):
        verify(tmp_path)


def test_deleted_newest_and_oldest_files_are_caught(tmp_path: Path) -> None:
    _write(tmp_path, 5, rotate_bytes=1)  # one file per container
    (tmp_path / "audit-000005.db").unlink()
    with pytest.raises(AuditError, match="anchor is at seq 5"):
        verify(tmp_path)
    other = tmp_path / "b"
    _write(other, 5, rotate_bytes=1)
    (other / "audit-000001.db").unlink()
    with pytest.raises(AuditError, match=r"audit-000002\.db: does not continue the genesis"):
        verify(other)


def test_swapped_evidence_png_is_caught(tmp_path: Path) -> None:
    _write_with_images(tmp_path, 4)
    assert verify(tmp_path).images == 2
    png = sorted((tmp_path / "images").glob("*.png"))[0]
    other = np.full((32, 32), 7, np.uint8)
    import cv2

    png.write_bytes(cv2.imencode(".png", other)[1].tobytes())
    with pytest.raises(AuditError, match="evidence image of seq 2 was replaced"):
        verify(tmp_path)


def test_recomputed_chain_is_caught_by_signed_checkpoints(tmp_path: Path) -> None:
    from edge.audit import FIELDS, GENESIS, row_hash
    from edge.signing import generate_keypair

    key, pub = generate_keypair(tmp_path / "keys")
    folder = tmp_path / "audit"
    with AuditLog(
        AuditConfig(folder, min_free_bytes=0, signing_key=str(key), checkpoint_every=3)
    ) as log:
        for i in range(7):
            log.record(_rec(i))
    r = verify(folder, pub)
    assert (r.checkpoints, r.signed) == (2, True)
    # An editor flips seq 2 to a reject and recomputes every hash after it, and the anchor.
    db = sqlite3.connect(str(folder / "audit-000001.db"))
    rows = db.execute(f"SELECT {', '.join(FIELDS)} FROM containers ORDER BY seq").fetchall()
    prev = GENESIS
    for r in rows:
        f = dict(zip(FIELDS, r))
        if f["seq"] == 2:
            f["decision"] = "reject"
        h = row_hash(prev, f)
        db.execute(
            "UPDATE containers SET decision = ?, prev_hash = ?, row_hash = ? WHERE seq = ?",
            (f["decision"], prev, h, f["seq"]),
        )
        prev = h
    db.commit()
    db.close()
    (folder / "anchor.json").write_text(json.dumps({"seq": 7, "hash": prev, "file": ""}))
    with pytest.raises(AuditError, match="checkpoint at seq 3 is not on the chain"):
        verify(folder, pub)


def test_failed_insert_rolls_back_and_the_next_record_works(tmp_path: Path) -> None:
    deny = {"n": 0}

    def auth(action, arg1, *rest):
        if action == sqlite3.SQLITE_INSERT and arg1 == "containers" and deny["n"] == 1:
            deny["n"] += 1
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    with AuditLog(AuditConfig(tmp_path, min_free_bytes=0), authorizer=auth) as log:
        assert log.record(_rec(0)) == 1
        deny["n"] = 1
        with pytest.raises(AuditUnavailable, match="not authorized"):
            log.record(_rec(1))
        assert log.record(_rec(2)) == 2  # no transaction left open, no seq burnt
    r = verify(tmp_path)
    assert (r.rows, r.last_seq) == (2, 2)


def test_restart_after_a_cut_tail_never_reuses_a_seq(tmp_path: Path) -> None:
    _write(tmp_path, 6)
    db = sqlite3.connect(str(tmp_path / "audit-000001.db"))
    db.execute("DELETE FROM containers WHERE seq > 4")
    db.commit()
    db.close()
    with AuditLog(AuditConfig(tmp_path, min_free_bytes=0)) as log:
        assert log.chain_fault is not None and "cut" in log.chain_fault
        assert log.record(_rec(9)) == 7  # after the anchor, in a new file linked to it
    seqs = []
    for p in sorted(tmp_path.glob("audit-*.db")):
        db = sqlite3.connect(str(p))
        seqs += [s for (s,) in db.execute("SELECT seq FROM containers")]
        db.close()
    assert seqs == [1, 2, 3, 4, 7]
    with pytest.raises(AuditError, match=r"seq 5 missing|does not continue"):
        verify(tmp_path)  # the cut stays visible


def test_a_file_is_complete_or_absent(tmp_path: Path) -> None:
    """A temp file left by a kill during creation is not an audit file; the next writer
    makes the real one from scratch."""
    (tmp_path / ".audit-000001.db.tmp").write_bytes(b"half")
    _write(tmp_path, 2)
    assert verify(tmp_path).rows == 2


def _near(img: np.ndarray, xy: tuple, bgr: tuple, r: int = 2) -> bool:
    """Whether a pixel within r of (x, y) has this colour (each channel within 60)."""
    x, y = xy
    patch = img[y - r : y + r + 1, x - r : x + r + 1].astype(int)  # [2r+1, 2r+1, 3]
    return bool((np.abs(patch - np.array(bgr)) < 60).all(axis=2).any())


def test_show_draws_the_tracks_as_the_decision_reads_them(tmp_path: Path) -> None:
    """A reject row with a sinking particle and two bubbles that linking joins by a jump:
    the review image draws the particle's path magenta, the bubbles' pieces cyan and the
    jump yellow; with the jump test off the bubbles' track is one moving path."""
    from edge.audit_verify import draw_record
    from edge.decision import DecisionConfig

    from .test_path_tests import BUBBLES

    sink = [(50.0, 40.0 + 6 * t) for t in range(8)]
    dets = [[[x, y, x + 6, y + 6, 0.8, 1.0] for x, y in (sink[t], BUBBLES[t])] for t in range(8)]
    rec = ContainerRecord("c0", 0, 500, "reject", "particle: ...", None, dets, "m" * 64, "c" * 64)
    with AuditLog(AuditConfig(tmp_path, min_free_bytes=0)) as log:
        log.record(rec, image=np.zeros((200, 200), np.uint8))
    names = ["fiber", "particle", "glass_flake"]
    img = draw_record(tmp_path, 1, names, decision=DecisionConfig())
    magenta, cyan, yellow = (255, 0, 255), (255, 255, 0), (0, 255, 255)
    assert _near(img, (53, 64), magenta)  # the particle, between its 4th and 5th sighting
    assert _near(img, (104, 95), cyan) and _near(img, (124, 106), cyan)  # each bubble
    assert _near(img, (113, 99), yellow)  # the jump from one bubble to the next
    off = draw_record(tmp_path, 1, names, decision=DecisionConfig(jump_distance=0))
    assert _near(off, (113, 99), magenta) and not _near(off, (113, 99), yellow)
    with pytest.raises(AuditError, match="class index 1, but only 1 class names"):
        draw_record(tmp_path, 1, ["fiber"], decision=DecisionConfig())
    # A row with a non-finite box (never a decision's: the runtime faults on those) is
    # drawn without it, not a crash.
    dets[0][0][0] = float("nan")
    with AuditLog(AuditConfig(tmp_path, min_free_bytes=0)) as log:
        log.record(
            dataclasses.replace(rec, container_id="c1", detections=dets),
            image=np.zeros((200, 200), np.uint8),
        )
    assert draw_record(tmp_path, 2, names, decision=DecisionConfig()).shape == (200, 200, 3)


def test_export_and_show(tmp_path: Path) -> None:
    from edge.audit_verify import draw_record, export_rows

    _write_with_images(tmp_path, 3)
    out = io.StringIO()
    assert export_rows(tmp_path, "jsonl", out) == 3
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and json.loads(lines[1])["image_sha256"]
    out = io.StringIO()
    export_rows(tmp_path, "csv", out)
    csv_text = out.getvalue()
    assert csv_text.splitlines()[0].startswith("seq,container_id") and "row_hash" in csv_text
    img = draw_record(tmp_path, 2, ["fiber", "particle", "glass_flake"])
    assert img.shape == (32, 32, 3) and (img[..., 2] > img[..., 0]).any()  # red boxes drawn
    with pytest.raises(AuditError, match="no evidence image"):
        draw_record(tmp_path, 1)
    image = json.loads(lines[1])["image"]
    (tmp_path / image).rename(tmp_path / "archived.png")  # QA keeps it elsewhere
    with pytest.raises(AuditError, match=f"{image}: evidence image of seq 2 is not in the"):
        draw_record(tmp_path, 2)


def test_one_writer_per_audit_folder(tmp_path: Path) -> None:
    """A second runtime on the same folder (a `fod run` by hand beside the service) would
    append after the same last row and fork the chain: it is refused, naming the holder;
    once the first closes (or dies: the SIGKILL test above reopens after every kill), the
    next one writes on after the last row."""
    cfg = AuditConfig(tmp_path, min_free_bytes=0)
    rec = ContainerRecord("c0", 0, 1, "accept", "clean", None, [[]], "m", "c")
    with AuditLog(cfg) as first:
        first.record(rec)
        with pytest.raises(AuditError, match=f"another process \\(pid {os.getpid()} since"):
            AuditLog(cfg)
        first.record(rec)
    with AuditLog(cfg) as again:
        assert again.record(rec) == 3
    assert verify(tmp_path).last_seq == 3
