"""The audit trail: one SQLite row per container, hash-chained, rotated, within a disk budget.

Each row carries the hash of the row before it (across rotated files too), so a
deleted or edited row breaks the chain at a place `verify` names. WAL journal with
synchronous=FULL and one transaction per container: a killed process leaves every
committed container readable. When the disk is too full to record, `record` raises
`AuditUnavailable` and the runtime rejects everything: no decision without a record.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from .errors import FodError

GENESIS = "0" * 64
_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    seq INTEGER PRIMARY KEY,       -- sequence number, continuous across rotated files
    container_id TEXT NOT NULL,
    trigger_ns INTEGER NOT NULL,   -- monotonic clock at the trigger edge
    decision_ns INTEGER NOT NULL,  -- monotonic clock when the decision was made
    wall_time TEXT NOT NULL,       -- UTC, for people
    decision TEXT NOT NULL,        -- accept | reject
    reason TEXT NOT NULL,
    fault TEXT,                    -- the fault class of a fail-safe reject, else NULL
    detections TEXT NOT NULL,      -- JSON: per frame, [[x0, y0, x1, y1, score, label], ...]
    model_hash TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    image TEXT,                    -- saved reject image, relative to the audit folder
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chain (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_FIELDS = (
    "seq",
    "container_id",
    "trigger_ns",
    "decision_ns",
    "wall_time",
    "decision",
    "reason",
    "fault",
    "detections",
    "model_hash",
    "config_hash",
    "image",
)


class AuditError(FodError):
    """The audit trail is broken: a gap, an edit, or an unreadable file."""


class AuditUnavailable(FodError):
    """The trail cannot record (disk full, I/O error): the line must reject everything."""


@dataclass(frozen=True)
class AuditConfig:
    folder: Path
    rotate_bytes: int = 256 * 2**20  # start a new file past this size ...
    rotate_daily: bool = True  # ... or when the UTC date changes
    image_budget_bytes: int = 2 * 2**30  # reject images kept, oldest deleted first
    min_free_bytes: int = 200 * 2**20  # below this free space: AuditUnavailable


@dataclass
class ContainerRecord:
    container_id: str
    trigger_ns: int
    decision_ns: int
    decision: str  # accept | reject
    reason: str
    fault: Optional[str]
    detections: List[List[List[float]]]
    model_hash: str
    config_hash: str


def row_hash(prev: str, fields: Dict[str, Any]) -> str:
    payload = json.dumps([fields[k] for k in _FIELDS], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev + payload).encode("utf-8")).hexdigest()


def _files(folder: Path) -> List[Path]:
    return sorted(folder.glob("audit-*.db"))


class AuditLog:
    """Append-only writer; a context manager, `close()` is idempotent."""

    def __init__(self, cfg: AuditConfig) -> None:
        self.cfg = cfg
        cfg.folder.mkdir(parents=True, exist_ok=True)
        (cfg.folder / "images").mkdir(exist_ok=True)
        self._db: Optional[sqlite3.Connection] = None
        self._path: Optional[Path] = None
        self._day = ""
        self._last_seq, self._last_hash = 0, GENESIS
        files = _files(cfg.folder)
        if files:
            db = self._open(files[-1])
            row = db.execute(
                "SELECT seq, row_hash FROM containers ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            if row is not None:
                self._last_seq, self._last_hash = int(row[0]), str(row[1])
            else:
                chain = dict(db.execute("SELECT key, value FROM chain"))
                self._last_seq = int(chain.get("first_seq", "1")) - 1
                self._last_hash = chain.get("prev_hash", GENESIS)
        self._images = sorted((cfg.folder / "images").glob("*.png"))
        self._image_bytes = sum(p.stat().st_size for p in self._images)

    def _open(self, path: Path) -> sqlite3.Connection:
        new = not path.exists()
        # One writer thread at a time (the actuation thread, then close() after it stopped).
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a committed container survives power loss too
        db.executescript(_SCHEMA)
        if new:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO chain VALUES (?, ?)",
                [
                    ("prev_hash", self._last_hash),
                    ("first_seq", str(self._last_seq + 1)),
                    ("prev_file", self._path.name if self._path else ""),
                ],
            )
            db.execute("COMMIT")
        if self._db is not None:
            self._db.close()
        self._db, self._path = db, path
        self._day = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).strftime(
            "%Y%m%d"
        )
        return db

    def _rotate_if_due(self, today: str) -> None:
        if self._db is None or self._path is None:
            self._open(self.cfg.folder / "audit-000001.db")
            self._day = today
            return
        size = self._path.stat().st_size + (
            self._path.with_name(self._path.name + "-wal").stat().st_size
            if self._path.with_name(self._path.name + "-wal").exists()
            else 0
        )
        if size >= self.cfg.rotate_bytes or (self.cfg.rotate_daily and today != self._day):
            n = int(self._path.stem.split("-")[1]) + 1
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._open(self.cfg.folder / f"audit-{n:06d}.db")
            self._day = today

    def _save_image(self, seq: int, container_id: str, image: np.ndarray) -> str:
        rel = f"images/{seq:09d}-{container_id}.png"
        # Fast compression: 19 ms for a grey 1280x800 frame at level 1, 31 ms at the default.
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise AuditUnavailable(f"{rel}: PNG encoding failed")
        (self.cfg.folder / rel).write_bytes(buf.tobytes())
        self._images.append(self.cfg.folder / rel)
        self._image_bytes += len(buf)
        while self._image_bytes > self.cfg.image_budget_bytes and len(self._images) > 1:
            old = self._images.pop(0)
            self._image_bytes -= old.stat().st_size
            old.unlink()
        return rel

    def record(
        self,
        rec: ContainerRecord,
        image: Optional[np.ndarray] = None,
        now: Optional[_dt.datetime] = None,
    ) -> int:
        """Append one container; returns its sequence number. Raises AuditUnavailable."""
        now = now or _dt.datetime.now(_dt.timezone.utc)
        try:
            if shutil.disk_usage(self.cfg.folder).free < self.cfg.min_free_bytes:
                raise AuditUnavailable(
                    f"{self.cfg.folder}: less than {self.cfg.min_free_bytes} bytes free"
                )
            self._rotate_if_due(now.strftime("%Y%m%d"))
            seq = self._last_seq + 1
            img = self._save_image(seq, rec.container_id, image) if image is not None else None
            fields = {
                "seq": seq,
                "container_id": rec.container_id,
                "trigger_ns": int(rec.trigger_ns),
                "decision_ns": int(rec.decision_ns),
                "wall_time": now.isoformat(),
                "decision": rec.decision,
                "reason": rec.reason,
                "fault": rec.fault,
                "detections": json.dumps(rec.detections, separators=(",", ":")),
                "model_hash": rec.model_hash,
                "config_hash": rec.config_hash,
                "image": img,
            }
            h = row_hash(self._last_hash, fields)
            assert self._db is not None
            self._db.execute("BEGIN")
            self._db.execute(
                f"INSERT INTO containers ({', '.join(_FIELDS)}, prev_hash, row_hash) "
                f"VALUES ({', '.join('?' * (len(_FIELDS) + 2))})",
                [fields[k] for k in _FIELDS] + [self._last_hash, h],
            )
            self._db.execute("COMMIT")
        except (OSError, sqlite3.Error) as e:
            raise AuditUnavailable(f"{self.cfg.folder}: cannot record: {e}") from None
        self._last_seq, self._last_hash = seq, h
        return seq

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class VerifyReport:
    files: int
    rows: int
    first_seq: int
    last_seq: int


def verify(folder: Path) -> VerifyReport:
    """Walk every file and row; raise AuditError at the first gap, edit or broken link."""
    files = _files(folder)
    if not files:
        raise AuditError(f"{folder}: no audit-*.db files")
    expect_hash: Optional[str] = None
    expect_seq: Optional[int] = None
    rows = 0
    first = None
    for path in files:
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            chain = dict(db.execute("SELECT key, value FROM chain"))
            data = db.execute(
                f"SELECT {', '.join(_FIELDS)}, prev_hash, row_hash FROM containers ORDER BY seq"
            ).fetchall()
            db.close()
        except sqlite3.Error as e:
            raise AuditError(f"{path}: unreadable: {e}") from None
        if (
            expect_hash is None
        ):  # the oldest file kept: its link to older, pruned files is taken as is
            expect_hash, expect_seq = chain["prev_hash"], int(chain["first_seq"])
        elif chain["prev_hash"] != expect_hash or int(chain["first_seq"]) != expect_seq:
            raise AuditError(f"{path}: does not continue the chain of the file before it")
        for r in data:
            fields = dict(zip(_FIELDS, r[: len(_FIELDS)]))
            seq = int(fields["seq"])
            first = seq if first is None else first
            if seq != expect_seq:
                raise AuditError(f"{path}: row seq {expect_seq} missing (next row is {seq}): a gap")
            if r[-2] != expect_hash or row_hash(expect_hash, fields) != r[-1]:
                raise AuditError(f"{path}: row seq {seq} was edited (its hash does not match)")
            expect_hash, expect_seq = r[-1], seq + 1
            rows += 1
    return VerifyReport(len(files), rows, first or 0, (expect_seq or 1) - 1)
