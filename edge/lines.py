"""Append-only line files (`events.jsonl`, `checkpoints.jsonl`, `rollouts.jsonl`): each
line is whole or absent.

A write that fails part-way (a full disk, a failed fsync) is cut back off by the writer,
so a retry never leaves half a line, or the same line twice, in the middle of a file. A
process that dies mid-append (a power cut) can only leave its last line cut short; the
next writer drops that tail (it was never whole) and readers stop before it."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def append_whole(path: Path, data: bytes) -> None:
    """Append `data` (whole lines) to `path` and fsync; on any failure the file is cut back
    to its size before the call and the error raised. One writer per file. A cut tail left
    where cutting back failed too is removed first: `data` starts a line of its own."""
    drop_cut_tail(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:  # a raw write may take part of it
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def whole_end(path: Path) -> int:
    """The offset just past the last newline of `path` (0 for a missing or empty file):
    what lies beyond it is a line cut short."""
    try:
        with open(path, "rb") as f:
            pos = f.seek(0, os.SEEK_END)
            while pos > 0:
                step = min(pos, 1 << 16)
                f.seek(pos - step)
                i = f.read(step).rfind(b"\n")
                if i >= 0:
                    return pos - step + i + 1
                pos -= step
    except FileNotFoundError:
        pass
    return 0


def cut_tail(path: Path) -> int:
    """Bytes after the last newline of `path`: a last line cut short by a death mid-append."""
    try:
        return path.stat().st_size - whole_end(path)
    except FileNotFoundError:
        return 0


def drop_cut_tail(path: Path) -> int:
    """Remove a last line cut short (the writer before died writing it) -> bytes removed.
    A writer calls it before its first append, so its lines start on a line of their own."""
    cut = cut_tail(path)
    if cut:
        with open(path, "r+b") as f:
            f.truncate(f.seek(0, os.SEEK_END) - cut)  # the tail already found: not scanned again
            f.flush()
            os.fsync(f.fileno())
        log.warning(
            "%s: removed a last line cut short (%d bytes): the writer before died writing it",
            path,
            cut,
        )
    return cut
