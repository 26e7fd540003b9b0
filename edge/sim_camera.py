"""The simulated station's camera: the video of the container in front of it, frame by
frame, with the camera faults `fod simulate` injects (drop, stall, frozen, black, corrupt)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from .fsutil import iter_chunks
from .sources import Frame

if TYPE_CHECKING:
    from .faults import Injector


class SimCamera:
    """The station's camera: frames of the container in front of it, each stamped when
    taken. Like a real driver it hands out one buffered frame from before the trigger
    first (the runtime must drop it). A lock keeps `show` (the triggers' thread) from
    closing a video mid-`read` (OpenCV decodes without the GIL: a segfault in libavcodec)."""

    def __init__(
        self,
        open_reader: Callable[[str], Any],
        injector: Injector,
        stall_s: float,
        noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.open_reader, self.injector, self.stall_s = open_reader, injector, stall_s
        self.noise, self.rng = noise, np.random.default_rng(seed)
        self._src: Any = None
        self._last: Optional[np.ndarray] = None
        self._stale: Optional[Frame] = None
        self.cid: Optional[str] = None  # the container in front of the camera
        self._lock = threading.Lock()  # held while a reader reads and while one is swapped

    def open(self, video: Path) -> Any:
        """The next container's reader, opened ahead of its trigger (0.1-0.3 s, and
        seconds for the first video while the runtime starts) so that `show` is on time.
        The file is read once first: from a video not in the page cache, single frame reads
        at capture time took 0.1-0.8 s (late frames, `camera_drop`); the disk is read here,
        in chunks, so a long video warms the cache without being held in memory."""
        with contextlib.suppress(OSError):  # a missing file: the reader says so, below
            for _ in iter_chunks(video):
                pass
        return self.open_reader(f"file:{video}")

    def show(self, cid: str, reader: Any) -> None:
        """Container `cid` is now in front of the camera; `reader` (from `open`, called
        ahead: opening is slow) gives its frames."""
        with self._lock:
            old, self._src, self.cid = self._src, reader, cid
            if self._last is not None:
                self._stale = Frame(self._last, time.monotonic() - 0.05)
        if old is not None:
            old.close()  # nobody reads it now: read() takes the reader under the lock

    def read(self) -> Optional[Frame]:
        with self._lock:
            stale, self._stale, cid = self._stale, None, self.cid
        if stale is not None:
            return stale
        if self.injector.take("stall", cid):
            time.sleep(self.stall_s)  # a hung driver call, past the gate delay
        with self._lock:  # the frame and the container it shows, together
            got, cid = (self._src.read() if self._src is not None else None), self.cid
        if got is None or self.injector.take("camera_drop", cid):
            return None
        img = got.image
        if self.noise > 0:  # a re-inspection never sees identical pixels
            img = np.clip(img + self.rng.normal(0, self.noise, img.shape), 0, 255).astype(np.uint8)
        if self._last is not None and self.injector.take("frozen", cid):
            img = self._last.copy()  # the driver repeats its last buffer
        elif self.injector.take("black", cid):
            img = np.zeros_like(img)  # lamp off
        elif self.injector.take("corrupt", cid):
            img = img[: img.shape[0] // 2]  # a truncated transfer
        self._last = img
        return Frame(img, time.monotonic())

    def close(self) -> None:
        with self._lock:
            if self._src is not None:
                self._src.close()
