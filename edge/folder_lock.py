"""One writer per folder: an exclusive lock held for the writer's life.

Two runtimes writing one audit folder (an engineer's `fod run` by hand beside the
service, with its metrics off and mock pins) would both append after the same last row:
the hash chain forks, and the trail of record no longer verifies. `flock` on a file in the
folder refuses the second writer; the kernel drops the lock when its holder ends, however
it ends (a killed runtime leaves no stale lock behind).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class FolderBusy(OSError):
    """Another process holds the folder's lock."""


def lock_folder(folder: Path, name: str = ".writer.lock") -> IO[str]:
    """Take `folder`'s writer lock -> the open lock file (closing it releases the lock);
    raises FolderBusy naming the holder's pid where another process holds it."""
    f = open(folder / name, "a+")  # noqa: SIM115 - held open for the writer's life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise FolderBusy(f"{folder}: written by another process (pid {holder})") from None
    except BaseException:
        f.close()
        raise
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f
