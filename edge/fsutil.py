"""Atomic file and folder writes: a reader never sees a half-written artifact."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Union

if TYPE_CHECKING:
    import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
FILE_MODE = 0o644  # mkstemp makes 0600: artifacts are read by other users (the line service)
DIR_MODE = 0o755


@contextlib.contextmanager
def atomic_output(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside `path` for a writer (torch.save, onnx.save, ...); on success
    it becomes `path` (mode 0644) by rename, on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def iter_chunks(path: PathLike, size: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes in chunks of at most `size`: a large file is never held whole."""
    with Path(path).open("rb") as f:
        yield from iter(lambda: f.read(size), b"")


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    for chunk in iter_chunks(path):
        h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder, fsync and a rename."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_png(path: PathLike, image: np.ndarray) -> None:
    """Encode `image` (grey or BGR uint8) as PNG and write it atomically."""
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def atomic_write_json(path: PathLike, obj: Any, indent: int = 1) -> None:
    """Serialise `obj` as UTF-8 JSON and write it atomically (keys kept in order)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


@contextlib.contextmanager
def staged_dir(final: PathLike) -> Iterator[Path]:
    """Yield a temp folder beside `final`; rename it to `final` only if the block succeeds.

    `final` must not exist or be an empty folder: an existing data set is never
    overwritten. On any error the temp folder is removed and `final` is untouched.
    """
    from .errors import FodError

    final = Path(final)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise FodError(f"{final}: output exists and is not an empty folder; refusing to overwrite")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        if final.exists():
            final.rmdir()
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
