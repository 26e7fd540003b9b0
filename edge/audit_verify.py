"""Reading the audit trail: verify the chain, export rows for a QA system, show a record.

`verify` walks every file from the genesis: the oldest file must start at seq 1 from
the genesis hash (a missing oldest file is a cut), or, where `fod audit archive` moved the
oldest files away (`retired.json`: the last row it moved), right after that row; every
row must continue the chain, every evidence PNG still on disk must match the sha256 in
its row, the last row must reach the anchor, and each signed checkpoint must sit on the
chain (with the public key: and carry a valid signature); the alarm events beside the rows
(`events.jsonl`) must form their own unbroken chain.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from .audit import (
    CHECKPOINTS,
    FIELDS,
    GENESIS,
    AuditError,
    audit_files,
    checkpoint_payload,
    read_anchor,
    row_hash,
)
from .audit_retired import Retired, check_retired, read_retired
from .decision import DecisionConfig, explain
from .events import EVENTS, verify_events
from .lines import cut_tail
from .postprocess import frame_detections, label_beyond
from .review import LEGEND, draw_tracks, put_label


@dataclass(frozen=True)
class VerifyReport:
    files: int
    rows: int
    first_seq: int
    last_seq: int
    images: int  # evidence PNGs checked against their row's hash
    checkpoints: int  # checkpoints found on the chain
    signed: bool  # checkpoint signatures checked with a public key
    events: Dict[str, int] = field(default_factory=dict)  # kind -> count (events.jsonl)
    retired: Optional[Retired] = None  # where rows before first_seq went (fod audit archive)
    cut: Tuple[Path, ...] = ()  # line files ending in a line cut short by a death mid-append


ROW_SQL = f"SELECT {', '.join(FIELDS)}, prev_hash, row_hash FROM containers"
BATCH = 64  # rows fetched at a time (about 0.7 MB of the demo line's): a file may hold 256 MiB


def iter_rows(folder: Path) -> Iterator[Dict[str, Any]]:
    """Every row of every file in seq order, with its chain fields; AuditError if unreadable.

    Each file's chain link comes first (`_file`, `_chain`), then its rows. Rows are read as
    they are taken, a batch at a time: a trail of weeks is gigabytes, more than the unit
    running the line has to spare."""
    for path in _trail_files(folder):
        yield from _file_rows(path)


def _trail_files(folder: Path) -> List[Path]:
    """The trail's files, oldest first (without those it retired); AuditError where there
    are none."""
    retired = set(read_retired(folder).files)  # a copy left where the archive stopped
    files = [f for f in audit_files(folder) if f.name not in retired]
    if not files:
        raise AuditError(f"{folder}: no audit-*.db files")
    return files


def _file_rows(path: Path, cond: str = "1", args: Sequence[Any] = ()) -> Iterator[Dict[str, Any]]:
    """One file's chain link, then its rows (those `cond` selects) in seq order.

    Each batch is a query of its own, after the last seq read (rows are only appended): a
    read left open while its rows are used (a slow reader of `fod audit export`) would hold
    the runtime's rotation of that file, whose WAL checkpoint waits for readers (up to 5 s,
    inside a container's record)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise AuditError(f"{path}: unreadable: {e}") from None
    try:
        try:
            chain = dict(db.execute("SELECT key, value FROM chain"))
        except sqlite3.Error as e:
            raise AuditError(f"{path}: unreadable: {e}") from None
        if "prev_hash" not in chain or "first_seq" not in chain:
            raise AuditError(f"{path}: no chain link (not an audit file, or damaged)")
        yield {"_file": path, "_chain": chain}
        sql = f"{ROW_SQL} WHERE ({cond}) AND seq > ? ORDER BY seq LIMIT {BATCH}"
        last = -1  # seqs start at 1
        while True:
            try:
                batch = db.execute(sql, (*args, last)).fetchall()
            except sqlite3.Error as e:
                raise AuditError(f"{path}: unreadable: {e}") from None
            for r in batch:
                row = dict(zip(FIELDS, r[: len(FIELDS)]))
                row["prev_hash"], row["row_hash"] = r[-2], r[-1]
                row["_file"] = path
                yield row
            if len(batch) < BATCH:
                return
            last = batch[-1][0]  # FIELDS[0]: seq
    finally:
        db.close()


def _check_image(folder: Path, row: Dict[str, Any]) -> bool:
    """True if the row's PNG was checked; AuditError if it differs. A PNG deleted by the
    disk budget is expected (its hash stays in the chain)."""
    if not row["image"]:
        return False
    path = folder / row["image"]
    if not path.is_file():
        return False
    if hashlib.sha256(path.read_bytes()).hexdigest() != row["image_sha256"]:
        raise AuditError(f"{path}: evidence image of seq {row['seq']} was replaced or edited")
    return True


def iter_checkpoints(folder: Path) -> Iterator[Dict[str, Any]]:
    """The signed checkpoints of `folder`, a line at a time (one every `checkpoint_every`
    rows, kept for the life of the folder: millions on a fast line), in seq order;
    AuditError naming the line that is unreadable or out of order. A last line cut short
    (the unit died writing it) is left out: `verify` names it."""
    path = folder / CHECKPOINTS
    if not path.exists():
        return
    last = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith("\n"):
                return
            try:
                cp = json.loads(line)
                cp = {"seq": int(cp["seq"]), "hash": str(cp["hash"]), "sig": str(cp["sig"])}
            except (ValueError, KeyError, TypeError) as e:
                raise AuditError(f"{path}: line {n} unreadable: {e}") from None
            if cp["seq"] <= last:
                raise AuditError(f"{path}: line {n}: seq {cp['seq']} after seq {last}")
            last = cp["seq"]
            yield cp


class _Checkpoints:
    """Checks the checkpoints after `start` as the row walk passes their seqs, holding none
    but the next; the first problem is kept and said after the walk (`verify`'s order)."""

    def __init__(self, folder: Path, start: int, pub: Any) -> None:
        self.folder, self.pub, self.checked, self.problem = folder, pub, 0, ""
        self.any = False  # a first pass over every line: an unreadable one is said first
        for _ in iter_checkpoints(folder):
            self.any = True
        self._cps = (cp for cp in iter_checkpoints(folder) if cp["seq"] > start)
        self._next = next(self._cps, None)

    def passed(self, seq: int, h: str) -> None:
        """The walk is at row `seq`, its hash `h`."""
        while self._next is not None and self._next["seq"] <= seq:
            cp, self._next = self._next, next(self._cps, None)
            self._check(cp, h if cp["seq"] == seq else None)

    def end(self) -> None:
        """The walk is over: what is left lies beyond the trail's last row."""
        while self._next is not None:
            cp, self._next = self._next, next(self._cps, None)
            self._check(cp, None)

    def _check(self, cp: Dict[str, Any], h: Optional[str]) -> None:
        self.checked += 1
        if self.problem:
            return
        where = f"{self.folder / CHECKPOINTS}: checkpoint at seq {cp['seq']}"
        if h != cp["hash"]:
            self.problem = (
                f"{where} is not on the chain (rows were edited and the chain recomputed, or cut)"
            )
        elif self.pub is not None:
            from cryptography.exceptions import InvalidSignature

            try:
                self.pub.verify(bytes.fromhex(cp["sig"]), checkpoint_payload(cp["seq"], h))
            except (InvalidSignature, ValueError):
                self.problem = f"{where}: bad signature"


def verify(folder: Path, public_key: Optional[Path] = None) -> VerifyReport:
    """Walk every file and row; raise AuditError at the first gap, edit, cut or bad signature."""
    start = read_retired(folder)
    expect_hash, expect_seq = start.hash, start.seq + 1
    rows = files = images = 0
    pub = None
    if public_key is not None:
        from .signing import load_public_key

        pub = load_public_key(public_key)
        if start.seq:  # where the walk may start: signed by the unit that retired the rows
            check_retired(folder, start, pub)
    anchor = read_anchor(folder)
    # Checkpoints of retired rows are checked with the archive that holds them.
    cps = _Checkpoints(folder, start.seq, pub)
    anchor_hash = start.hash if anchor is not None and anchor[0] == start.seq else None
    for row in iter_rows(folder):
        path = row["_file"]
        if "_chain" in row:
            files += 1
            chain = row["_chain"]
            first = int(chain["first_seq"])
            if chain["prev_hash"] != expect_hash or first != expect_seq:
                if files == 1:
                    what = f"the retired rows (seq 1..{start.seq})" if start.seq else "the genesis"
                    raise AuditError(f"{path}: does not continue {what} (a file was removed)")
                why = "a file was removed"  # or its rows cut and the next started after them
                if first > expect_seq:
                    why = f"rows seq {expect_seq}..{first - 1} missing: cut from its end, or {why}"
                raise AuditError(
                    f"{path}: does not continue the chain of the file before it ({why})"
                )
            continue
        seq = int(row["seq"])
        if seq != expect_seq:
            raise AuditError(f"{path}: row seq {expect_seq} missing (next row is {seq}): a gap")
        if row["prev_hash"] != expect_hash or row_hash(expect_hash, row) != row["row_hash"]:
            raise AuditError(f"{path}: row seq {seq} was edited (its hash does not match)")
        images += _check_image(folder, row)
        expect_hash, expect_seq = row["row_hash"], seq + 1
        cps.passed(seq, expect_hash)
        if anchor is not None and seq == anchor[0]:
            anchor_hash = expect_hash
        rows += 1
    cps.end()
    last = expect_seq - 1
    if anchor is None and last > 0:
        raise AuditError(f"{folder}: anchor.json missing: the head cannot be checked")
    if anchor is not None:
        if anchor[0] > last:
            raise AuditError(
                f"{folder}: the trail ends at seq {last} but its anchor is at seq {anchor[0]}: "
                "rows or files were cut from the end"
            )
        if (GENESIS if anchor[0] == 0 else anchor_hash) != anchor[1]:
            raise AuditError(f"{folder}: the anchor (seq {anchor[0]}) is not on the chain")
    if cps.problem:
        raise AuditError(cps.problem)
    if pub is not None and not cps.any and last > 0:  # rows since an archive may have none
        raise AuditError(f"{folder}: a public key was given but there are no signed checkpoints")
    events = verify_events(folder, pub)
    cut = tuple(folder / name for name in (CHECKPOINTS, EVENTS) if cut_tail(folder / name))
    return VerifyReport(
        files,
        rows,
        start.seq + 1 if rows else 0,
        last,
        images,
        cps.checked,
        pub is not None,
        events,
        start if start.seq else None,
        cut,
    )


def export_rows(folder: Path, fmt: str, out: TextIO) -> int:
    """Write every row with its chain fields to `out` as JSON lines or CSV (for a QA
    system), row by row as read; returns the number of rows."""
    cols = [*FIELDS, "prev_hash", "row_hash"]
    w = csv.DictWriter(out, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    header, n = fmt == "csv", 0
    for r in iter_rows(folder):
        if header:  # once the first file opened: a folder with none writes nothing to stdout
            w.writeheader()
            header = False
        if "_chain" in r:
            continue
        if fmt == "jsonl":
            out.write(json.dumps({k: r[k] for k in cols}, ensure_ascii=False) + "\n")
        else:
            w.writerow(r)
        n += 1
    return n


def find_row(folder: Path, seq: int) -> Dict[str, Any]:
    """Row `seq` with its chain fields, looked up by its key in each file."""
    for path in _trail_files(folder):
        for r in _file_rows(path, "seq = ?", (seq,)):
            if "_chain" not in r:
                return r
    raise AuditError(f"{folder}: no row with seq {seq}")


def draw_record(
    folder: Path,
    seq: int,
    class_names: Sequence[str] = (),
    min_score: float = 0.5,
    decision: Optional[DecisionConfig] = None,
) -> np.ndarray:
    """The evidence frame of row `seq` (its hash checked) with the recorded detections of
    every frame at or above `min_score` (the decision's default threshold) drawn over it,
    BGR, so a reviewer sees which speck caused the reject; with `decision`, also the tracks
    it links those detections into, each drawn as its path (edge/review.py)."""
    import cv2

    row = find_row(folder, seq)
    if not row["image"]:
        raise AuditError(
            f"{folder}: row seq {seq} has no evidence image (not a reject by decision)"
        )
    path = folder / row["image"]
    if not path.is_file():
        raise AuditError(
            f"{path}: evidence image of seq {seq} is not in the audit folder (deleted by the "
            "disk budget, or archived)"
        )
    _check_image(folder, row)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise AuditError(f"{path}: not a readable PNG")
    dets = json.loads(row["detections"])
    for f, frame in enumerate(dets):
        shade = int(80 + 175 * (f + 1) / max(1, len(dets)))  # later frames brighter
        for x0, y0, x1, y1, score, label in frame:
            if not np.isfinite([x0, y0, x1, y1, score]).all() or score < min_score:
                continue  # a non-finite row is never a decision's; nothing to place
            p0, p1 = (int(x0) - 2, int(y0) - 2), (int(x1) + 2, int(y1) + 2)
            cv2.rectangle(img, p0, p1, (0, 0, shade), 1)
            name = class_names[int(label)] if int(label) < len(class_names) else str(int(label))
            cv2.putText(
                img,
                f"{name} {score:.2f}",
                (p0[0], max(10, p0[1] - 3)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35,
                (0, 0, shade),
                1,
            )
    lines = [f"seq {seq} {row['container_id']}: {row['decision']} - {row['reason']}"]
    if decision is not None:
        beyond = label_beyond(dets, class_names)
        if beyond is not None:
            raise AuditError(
                f"{folder}: row seq {seq} holds class index {beyond}, but only "
                f"{len(class_names)} class names given: cannot link its tracks"
            )
        d, judged = explain(frame_detections(dets), class_names, decision)
        draw_tracks(img, judged, decision)
        lines.append(LEGEND)
        again = "reject" if d.reject else "accept"
        if row["fault"] is None and again != row["decision"]:
            # Another config than the line ran: say so rather than draw a silent mismatch.
            lines.append(f"this config decides {again}: {d.reason}")
    for i, text in enumerate(lines):
        put_label(img, text[:110], (4, 14 + 14 * i), (0, 200, 255))
    return img
