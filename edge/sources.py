"""Camera sources behind one small interface: `read()` gives a frame or None.

Frames are RGB [H, W, 3] uint8, or grey [H, W] uint8 from a `mono` source: lamp
inspection cameras are monochrome, and a grey frame costs a third of the memory
traffic on its way into the model (the backend widens it to three planes).

Video files and PNG-frame folders (OpenCV), V4L2 devices and GStreamer pipelines
(`cv2.VideoCapture`, e.g. `nvarguscamerasrc` for CSI cameras on a Jetson).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Union

import cv2
import numpy as np

from .errors import FodError

FILE_PARAMS = (cv2.CAP_PROP_N_THREADS, 1)  # open parameters of a video file source


class SourceError(FodError):
    """A camera source could not be opened."""


class Frame(NamedTuple):
    image: np.ndarray  # uint8 [H, W] grey or [H, W, 3] RGB
    t: float  # monotonic time the frame was grabbed: frames from before a trigger are stale


class CaptureSource:
    """Anything cv2.VideoCapture opens; frames come back RGB, or grey when `mono`."""

    def __init__(
        self,
        target: Union[str, int],
        api: int = cv2.CAP_ANY,
        what: str = "",
        mono: bool = False,
        params: Sequence[int] = (),
    ) -> None:
        self.cap = cv2.VideoCapture(target, api, list(params))  # type: ignore[call-overload]
        if params and not self.cap.isOpened():  # a backend that refuses the open parameters
            self.cap = cv2.VideoCapture(target, api)  # type: ignore[call-overload]
        if not self.cap.isOpened():
            raise SourceError(f"{what or target}: cannot open camera source")
        self.mono = mono
        if mono:  # GRAY8 stays GRAY8 (FFmpeg and V4L2 backends) instead of becoming BGR
            self.cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)

    def read(self) -> Optional[Frame]:
        if not self.cap.grab():  # grab first: the timestamp is the frame's, not the decode's
            return None
        t = time.monotonic()
        ok, raw = self.cap.retrieve()
        if not ok or raw is None:
            return None
        frame = np.asarray(raw)
        if self.mono:
            # A backend that ignored the request still gives BGR: convert rather than fail.
            return Frame(frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), t)
        if frame.ndim == 2:
            return Frame(cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB), t)
        return Frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), t)

    def close(self) -> None:
        self.cap.release()


class FolderSource:
    """PNG frames of a folder in name order."""

    def __init__(self, folder: Path, mono: bool = False) -> None:
        self.files: List[Path] = sorted(folder.glob("*.png"))
        if not self.files:
            raise SourceError(f"{folder}: no PNG frames")
        self.i, self.mono = 0, mono

    def read(self) -> Optional[Frame]:
        if self.i >= len(self.files):
            return None
        path = str(self.files[self.i])
        self.i += 1
        t = time.monotonic()
        if self.mono:
            grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            return None if grey is None else Frame(grey, t)
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        return None if img is None else Frame(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), t)

    def close(self) -> None:
        self.i = len(self.files)


def open_source(spec: str, mono: bool = False) -> CaptureSource | FolderSource:
    """`file:<video or folder>`, `v4l2:<index>`, `gst:<pipeline>`, or a bare path."""
    kind, _, rest = spec.partition(":")
    if kind == "v4l2":
        return CaptureSource(int(rest), cv2.CAP_V4L2, spec, mono)
    if kind == "gst":
        return CaptureSource(rest, cv2.CAP_GSTREAMER, spec, mono)
    path = Path(rest if kind == "file" else spec)
    if path.is_dir():
        return FolderSource(path, mono)
    if not path.is_file():
        raise SourceError(f"{path}: no such video file or frame folder")
    # One decoding thread: FFmpeg's frame threads hold frames back and, opened and closed per
    # container, have aborted the process (pthread_frame.c async_lock); a file decodes fast.
    return CaptureSource(str(path), cv2.CAP_ANY, str(path), mono, FILE_PARAMS)
