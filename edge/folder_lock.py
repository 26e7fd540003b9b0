"""One writer per folder: an exclusive lock held for the writer's life.

Two runtimes writing one audit folder (an engineer's `fod run` by hand beside the
service, with its metrics off and mock pins) would both append after the same last row.
`flock` on a file in the folder refuses the second writer; the kernel drops the lock when
its holder ends, however it ends (a killed runtime leaves no stale lock behind). The file
says who holds it, and is emptied by a writer that closes: one that finds it still naming
a holder knows that writer ended without closing (killed, crashed), so whatever it held
undecided never got a row.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
from pathlib import Path
from typing import IO, Optional, Tuple

LOCK_FILE = ".writer.lock"


class FolderBusy(OSError):
    """Another process holds the folder's lock."""


def lock_folder(folder: Path) -> Tuple[IO[str], Optional[str]]:
    """Take `folder`'s writer lock -> (the open lock file: `release` it, the writer before
    where it ended without releasing: "pid N since T", else None). Raises FolderBusy
    naming the holder where another process holds it."""
    f = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the writer's life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise FolderBusy(f"{folder}: written by another process ({holder})") from None
    except BaseException:
        f.close()
        raise
    f.seek(0)
    before = f.read().strip() or None
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    _rewrite(f, f"pid {os.getpid()} since {now}\n")
    return f, before


def release(f: IO[str], keep: Optional[str] = None) -> None:
    """Mark the writer as having closed, and let the next one in; `keep`: the record of a
    writer before that ended without closing, not yet reported, kept for the next one."""
    if f.closed:
        return
    try:
        _rewrite(f, f"{keep}\n" if keep else "")
    finally:
        f.close()


def _rewrite(f: IO[str], text: str) -> None:
    f.seek(0)
    f.truncate()
    f.write(text)
    f.flush()
    os.fsync(f.fileno())  # a power cut must not leave a holder that closed
