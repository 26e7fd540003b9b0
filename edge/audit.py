"""The audit trail: one SQLite row per container, hash-chained, rotated, within a disk budget.

Each row carries the hash of the row before it (across rotated files too) and the
sha256 of its evidence PNG, so a deleted or edited row, or a swapped image, breaks the
chain at a place `verify` names. After each commit the head (last seq and hash) is
written to `anchor.json`, so a cut tail or a deleted newest file shows too; with a
signing key, every `checkpoint_every` rows an Ed25519-signed checkpoint of the head
goes to `checkpoints.jsonl`, so a chain recomputed after an edit shows as well.

WAL journal with synchronous=FULL and one transaction per container: a killed process
leaves every committed container readable. A new file is built under a temporary
name with its schema and chain link, then renamed: a file is complete or absent.
A failed transaction is rolled back and raises `AuditUnavailable` (the container is
rejected); the next record works. One thread writes (the runtime's audit stage).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .errors import FodError
from .evidence import Evidence
from .folder_lock import FolderBusy, lock_folder, release
from .fsutil import atomic_write_bytes
from .lines import append_whole, drop_cut_tail

log = logging.getLogger(__name__)

GENESIS = "0" * 64
ANCHOR = "anchor.json"
CHECKPOINTS = "checkpoints.jsonl"
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
    image TEXT,                    -- saved evidence image, relative to the audit folder
    image_sha256 TEXT,             -- its bytes' hash: part of the row hash
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chain (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
FIELDS = (
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
    "image_sha256",
)


class AuditError(FodError):
    """The audit trail is broken: a gap, an edit, a cut tail, or an unreadable file."""


class AuditUnavailable(FodError):
    """The trail cannot record (disk full, I/O error): the line must reject everything."""


@dataclass(frozen=True)
class AuditConfig:
    folder: Path
    rotate_bytes: int = 256 * 2**20  # start a new file past this size ...
    rotate_daily: bool = True  # ... or when the UTC date changes
    image_budget_bytes: int = 2 * 2**30  # reject images kept, oldest deleted first
    min_free_bytes: int = 200 * 2**20  # below this free space: AuditUnavailable
    signing_key: str = ""  # Ed25519 private key (PEM): signed checkpoints of the head
    checkpoint_every: int = 100  # rows between signed checkpoints


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
    payload = json.dumps([fields[k] for k in FIELDS], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev + payload).encode("utf-8")).hexdigest()


def audit_files(folder: Path) -> List[Path]:
    return sorted(folder.glob("audit-*.db"))


def read_anchor(folder: Path) -> Optional[Tuple[int, str]]:
    """(seq, hash) of the last committed row, or None before the first."""
    try:
        data = json.loads((folder / ANCHOR).read_text(encoding="utf-8"))
        return int(data["seq"]), str(data["hash"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AuditError(f"{folder / ANCHOR}: unreadable: {e}") from None


def checkpoint_payload(seq: int, head: str) -> bytes:
    return f"pharma-fod audit checkpoint {seq} {head}".encode()


def _last_row(path: Path) -> Tuple[int, str]:
    """(seq, hash) at the end of one file (its chain link when it has no rows)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT seq, row_hash FROM containers ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is not None:
            return int(row[0]), str(row[1])
        chain = dict(db.execute("SELECT key, value FROM chain"))
        return int(chain["first_seq"]) - 1, chain["prev_hash"]
    finally:
        db.close()


class AuditLog:
    """Append-only writer; a context manager, `close()` is idempotent.

    `chain_fault` is set when the files on disk end before the anchor (a cut tail):
    recording continues after the anchor's seq, never reusing a number, and the
    runtime raises the alarm."""

    def __init__(
        self,
        cfg: AuditConfig,
        authorizer: Optional[Callable[..., int]] = None,
    ) -> None:
        self.cfg = cfg
        self._authorizer = authorizer  # fault injection at the SQLite layer (simulation)
        cfg.folder.mkdir(parents=True, exist_ok=True)
        try:  # one writer: a second would write after the same last row
            self._lock, self.unclean_end = lock_folder(cfg.folder)
        except FolderBusy as e:
            raise AuditError(f"{e}: one runtime writes an audit folder") from None
        self._db: Optional[sqlite3.Connection] = None
        self._path: Optional[Path] = None
        self._day = ""
        self._last_seq, self._last_hash = 0, GENESIS
        self.chain_fault: Optional[str] = None
        self.head_fault: Optional[str] = None  # set by a failed anchor write, taken by the caller
        self._key = None
        try:
            self._resume(cfg)
        except BaseException:
            self.close()
            raise

    def _resume(self, cfg: AuditConfig) -> None:
        """Go on after the trail's last row (or its anchor's, where rows were cut)."""
        if cfg.signing_key:
            from .signing import load_private_key

            self._key = load_private_key(Path(cfg.signing_key))
        drop_cut_tail(cfg.folder / CHECKPOINTS)  # a checkpoint cut by a death: never whole
        files = audit_files(cfg.folder)
        anchor = read_anchor(cfg.folder)
        try:
            if files:
                self._last_seq, self._last_hash = _last_row(files[-1])
        except (sqlite3.Error, KeyError, ValueError) as e:
            raise AuditError(f"{files[-1]}: unreadable: {e}") from None
        if anchor is not None and anchor[0] > self._last_seq:
            self.chain_fault = (
                f"{cfg.folder}: the trail ends at seq {self._last_seq} but its anchor is at "
                f"seq {anchor[0]}: rows were cut; continuing after the anchor"
            )
            log.error(self.chain_fault)
            self._last_seq, self._last_hash = anchor
            files = []  # start a new file that links to the anchor
        elif anchor is not None and anchor[0] == self._last_seq and anchor[1] != self._last_hash:
            self.chain_fault = f"{cfg.folder}: the last row does not match the anchor (edited)"
            log.error(self.chain_fault)
        elif anchor is None and self._last_seq > 0:  # removed (rows cut behind it?), as verify
            self.chain_fault = (
                f"{cfg.folder}: {ANCHOR} missing while the trail has rows (to seq "
                f"{self._last_seq}): the head cannot be checked; continuing after its last row"
            )
            log.error(self.chain_fault)
        if files:
            self._open(files[-1])
        self._evidence = Evidence(cfg.folder, cfg.image_budget_bytes)

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def signing_key(self) -> Any:
        """The Ed25519 private key of `audit.signing_key`, None without one."""
        return self._key

    def _connect(self, path: Path) -> sqlite3.Connection:
        # With an authorizer (fault injection) every statement is prepared anew: SQLite asks
        # the authorizer at prepare time only, and cached statements are not re-prepared.
        cache = 0 if self._authorizer is not None else 128
        db = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, cached_statements=cache
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a committed container survives power loss too
        if self._authorizer is not None:
            db.set_authorizer(self._authorizer)
        return db

    def _create(self, path: Path) -> None:
        """Schema and chain link in a temp file, then rename: complete or absent."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            # WAL is set here, not on first open: switching a live file's journal mode writes
            # through a rollback journal, and a kill then leaves a hot journal that a read-only
            # verifier cannot open.
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
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
        finally:
            db.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself survives a power loss
        finally:
            os.close(dfd)

    def _open(self, path: Path) -> None:
        if not path.exists():
            self._create(path)
        db = self._connect(path)
        if self._db is not None:
            self._db.close()
        self._db, self._path = db, path
        self._day = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).strftime(
            "%Y%m%d"
        )

    def _rotate_if_due(self, today: str) -> None:
        if self._db is None or self._path is None:
            files = audit_files(self.cfg.folder)
            n = int(files[-1].stem.split("-")[1]) + 1 if files else 1
            self._open(self.cfg.folder / f"audit-{n:06d}.db")
            self._day = today
            return
        wal = self._path.with_name(self._path.name + "-wal")
        size = self._path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        if size >= self.cfg.rotate_bytes or (self.cfg.rotate_daily and today != self._day):
            n = int(self._path.stem.split("-")[1]) + 1
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._open(self.cfg.folder / f"audit-{n:06d}.db")
            self._day = today

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
            img, img_sha = (
                self._evidence.save(seq, rec.container_id, image)
                if image is not None
                else (None, None)
            )
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
                "image_sha256": img_sha,
            }
            h = row_hash(self._last_hash, fields)
            if self._db is None:
                raise AuditUnavailable(f"{self.cfg.folder}: the audit log is closed")
            self._insert(fields, h)
        except AuditUnavailable:  # its own checks above: their message as it is
            raise
        except Exception as e:  # disk, SQLite, a value it cannot store, or a bug: not recorded
            raise AuditUnavailable(
                f"{self.cfg.folder}: cannot record: {type(e).__name__}: {e}"
            ) from None
        self._last_seq, self._last_hash = seq, h
        self._write_head(seq, h)
        return seq

    def _insert(self, fields: Dict[str, Any], h: str) -> None:
        assert self._db is not None  # checked by the caller; narrows the type for mypy
        self._db.execute("BEGIN")
        try:
            self._db.execute(
                f"INSERT INTO containers ({', '.join(FIELDS)}, prev_hash, row_hash) "
                f"VALUES ({', '.join('?' * (len(FIELDS) + 2))})",
                [fields[k] for k in FIELDS] + [self._last_hash, h],
            )
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # never leave a transaction open for the next record
                self._db.execute("ROLLBACK")
            raise

    def _write_head(self, seq: int, h: str) -> None:
        """The anchor after every commit; a signed checkpoint every `checkpoint_every` rows.
        The row is committed already: a failure here is logged and alarmed, not a reject."""
        try:
            text = json.dumps(
                {"seq": seq, "hash": h, "file": self._path.name if self._path else ""}
            )
            atomic_write_bytes(self.cfg.folder / ANCHOR, text.encode())
            if self._key is not None and seq % max(1, self.cfg.checkpoint_every) == 0:
                sig = self._key.sign(checkpoint_payload(seq, h)).hex()
                line = json.dumps({"seq": seq, "hash": h, "sig": sig}) + "\n"
                append_whole(self.cfg.folder / CHECKPOINTS, line.encode())
        except Exception as e:  # after the commit: never raise, or the row would be written twice
            self.head_fault = f"{self.cfg.folder}: cannot write the anchor: {e}"
            log.error(self.head_fault)

    def take_head_fault(self) -> Optional[str]:
        """Why the last record's anchor or checkpoint was not written (the caller raises
        the alarm: the disk is failing), once; None when it was."""
        fault, self.head_fault = self.head_fault, None
        return fault

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        release(self._lock, self.unclean_end)  # the next writer may start

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
