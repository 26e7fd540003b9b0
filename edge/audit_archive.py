"""`fod audit archive`: move a trail's oldest files off the unit, both halves verifiable.

Rows are kept until moved: a unit's disk fills with them (about 6 KB a container) and at
`audit.min_free_bytes` the line stops. The archive takes the oldest files but the newest
`keep` (the runtime writes the newest, so it may run beside the line), after `verify` has
passed the whole trail:

1. each file is copied into DEST through SQLite's backup (a consistent copy, WAL
   included), with the evidence PNGs its rows name that are still on disk, the signed
   checkpoints of its rows, and DEST's own `anchor.json` at the last row moved;
2. `verify` must pass DEST - a new archive from the genesis (or from the rows an earlier
   archive took), or an earlier one continued - before anything here is removed;
3. `retired.json` here names the last row moved, its hash and the files, signed with the
   unit's audit key, so `verify` of this folder starts right after it (and says so); then
   the files are removed.

A stop anywhere leaves both verifiable: before step 3 the files are still here (DEST holds
copies a rerun writes again), after it the copies left here are skipped by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

from .audit import ANCHOR, CHECKPOINTS, AuditError, _last_row, audit_files, read_anchor
from .audit_retired import Retired, read_retired, write_retired
from .audit_verify import _file_rows, _trail_files, iter_checkpoints, verify
from .fsutil import atomic_output, atomic_write_json
from .lines import whole_end


@dataclass(frozen=True)
class ArchiveReport:
    files: List[str]  # moved to DEST, oldest first
    first_seq: int  # the rows moved
    last_seq: int
    images: int  # evidence PNGs copied with them


def archive(
    folder: Path,
    dest: Path,
    keep: int = 2,
    public_key: Optional[Path] = None,
    signing_key: Optional[Path] = None,
) -> ArchiveReport:
    """Move all but the newest `keep` (>= 1) files of the trail in `folder` to `dest` (see
    the module's docstring), the retirement signed with `signing_key` (the unit's
    `audit.signing_key`; required for a signed trail); AuditError where either trail does
    not verify."""
    if keep < 1:
        raise AuditError(f"--keep must be at least 1 (the file the runtime writes), got {keep}")
    if not folder.is_dir():
        raise AuditError(f"{folder}: no such audit folder")
    if dest.resolve() == folder.resolve():
        raise AuditError(f"{dest}: the archive must be another folder than the trail")
    key = _signing_key(folder, signing_key, public_key)
    with _lock(folder):
        before = read_retired(folder)
        for name in before.files:  # copies an archive stopped before it removed them
            _remove(folder / name)
        move = _trail_files(folder)[:-keep]
        if not move:
            return ArchiveReport([], 0, 0, 0)
        verify(folder, public_key)  # the whole trail sound before any of it moves
        last_seq, last_hash = _last_row(move[-1])
        pngs = [
            r["image"]
            for f in move
            for r in _file_rows(f, "image IS NOT NULL")
            if "_chain" not in r
        ]
        dest.mkdir(parents=True, exist_ok=True)
        fresh = _check_dest(dest, before, (last_seq, last_hash))
        for path in move:
            _copy_db(path, dest / path.name)
        copied = 0
        for rel in pngs:
            if (folder / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / rel, dest / rel)
                copied += 1
        if fresh and before.seq:  # a new archive: it starts after the rows retired before
            write_retired(dest, Retired(before.seq, before.hash), key)
        if (folder / CHECKPOINTS).exists():  # those of the rows DEST holds, a line at a time
            start = read_retired(dest).seq
            with atomic_output(dest / CHECKPOINTS) as tmp, open(tmp, "w", encoding="utf-8") as f:
                for cp in iter_checkpoints(folder):
                    if start < cp["seq"] <= last_seq:
                        f.write(json.dumps(cp) + "\n")
                f.flush()
                os.fsync(f.fileno())
        atomic_write_json(
            dest / ANCHOR, {"seq": last_seq, "hash": last_hash, "file": move[-1].name}
        )
        verify(dest, public_key)  # the archive sound before anything here is removed
        names = [*before.files, *(p.name for p in move)]
        write_retired(folder, Retired(last_seq, last_hash, tuple(names), str(dest.resolve())), key)
        for path in move:
            _remove(path)
    return ArchiveReport([p.name for p in move], before.seq + 1, last_seq, copied)


def _signing_key(folder: Path, path: Optional[Path], public_key: Optional[Path]) -> Any:
    """The private key that signs the retirement (None: unsigned), refused where a signed
    trail would get an unsigned one, or where it is not the half of `public_key`."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from .signing import load_private_key, load_public_key

    if path is None:
        if whole_end(folder / CHECKPOINTS) or read_retired(folder).sig:
            raise AuditError(
                f"{folder}: a signed trail (checkpoints.jsonl): give --signing-key, the "
                "unit's audit.signing_key, so that where it now starts is signed too"
            )
        return None
    key = load_private_key(path)
    if public_key is not None:
        raw = (Encoding.Raw, PublicFormat.Raw)
        if key.public_key().public_bytes(*raw) != load_public_key(public_key).public_bytes(*raw):
            raise AuditError(f"{path}: not the private half of {public_key}")
    return key


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """One archive of a folder at a time."""
    with open(folder / ".archive.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise AuditError(f"{folder}: another fod audit archive is running") from None
        yield


def _check_dest(dest: Path, before: Retired, after: Tuple[int, str]) -> bool:
    """Whether DEST is a new archive (no audit files); else it must be the archive of the
    rows retired before this one (or already of this one's too: a rerun after a stop)."""
    if not audit_files(dest):
        return True
    head = read_anchor(dest)
    if head not in ((before.seq, before.hash), after):
        ends = f"seq {head[0]}" if head else "no anchor"
        raise AuditError(
            f"{dest}: holds an archive that ends at {ends}, while this trail retired rows up "
            f"to seq {before.seq}: another trail's archive, or one a later archive continued"
        )
    return False


def _copy_db(src: Path, out: Path) -> None:
    """A consistent copy of one audit file (complete or absent), without a WAL of its own."""
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    copy = sqlite3.connect(str(tmp))
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # readable where nothing can be written
    except sqlite3.Error as e:
        raise AuditError(f"{src}: cannot copy: {e}") from None
    finally:
        copy.close()
        source.close()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)


def _remove(path: Path) -> None:
    for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        f.unlink(missing_ok=True)
