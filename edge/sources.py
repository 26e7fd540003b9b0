"""Camera sources behind one small interface: `read()` gives a frame or None.

Frames are RGB [H, W, 3] uint8, or grey [H, W] uint8 from a `mono` source: lamp
inspection cameras are monochrome, and a grey frame costs a third of the memory
traffic on its way into the model (the backend widens it to three planes).

Video files and PNG-frame folders (OpenCV), V4L2 devices and GStreamer pipelines
(`cv2.VideoCapture`, e.g. `nvarguscamerasrc` for CSI cameras on a Jetson).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Union

import cv2
import numpy as np

from .errors import FodError

FILE_PARAMS = (cv2.CAP_PROP_N_THREADS, 1)  # open parameters of a video file source
STAMP_SLACK_S = 0.002  # a driver stamp this far after the grab still counts as the clock's

log = logging.getLogger(__name__)


class SourceError(FodError):
    """A camera source could not be opened."""


class Frame(NamedTuple):
    image: np.ndarray  # uint8 [H, W] grey or [H, W, 3] RGB
    t: float  # monotonic time it was taken (V4L2: the driver's stamp, else the grab)


def driver_time(stamp_ms: float, grabbed: float) -> Optional[float]:
    """A frame's time from its driver's buffer timestamp (ms, as OpenCV reports a V4L2
    buffer's) -> seconds of the monotonic clock, or None where the stamp cannot be a time of
    that clock taken before the grab at `grabbed` (none yet: 0; not finite; later than the
    grab: wall-clock time or a clock of its own). An old stamp is an old frame, not a
    wrong clock: a frame that waited in the driver's queue."""
    if not math.isfinite(stamp_ms) or stamp_ms <= 0:
        return None
    t = stamp_ms / 1000.0
    return t if t <= grabbed + STAMP_SLACK_S else None


class CaptureSource:
    """Anything cv2.VideoCapture opens; frames come back RGB, or grey when `mono`.

    Each frame is stamped with when it was taken. A V4L2 driver (`driver_stamps`) keeps
    frames in a queue of buffers (OpenCV asks for 4) while nobody reads, so a frame grabbed
    after a container's trigger may have been exposed before it, showing the container
    before; its buffer's timestamp (the kernel's monotonic clock, the runtime's clock) says
    so, and the capture skips it. Other sources, and a driver whose stamps are not of that
    clock, are stamped at the grab (`stamps` says which; a warning says the latter)."""

    def __init__(
        self,
        target: Union[str, int],
        api: int = cv2.CAP_ANY,
        what: str = "",
        mono: bool = False,
        params: Sequence[int] = (),
        driver_stamps: bool = False,
    ) -> None:
        self.cap = cv2.VideoCapture(target, api, list(params))  # type: ignore[call-overload]
        if params and not self.cap.isOpened():  # a backend that refuses the open parameters
            self.cap = cv2.VideoCapture(target, api)  # type: ignore[call-overload]
        if not self.cap.isOpened():
            raise SourceError(f"{what or target}: cannot open camera source")
        self.mono, self.what = mono, what or str(target)
        self.driver_stamps = driver_stamps
        self.stamps = "driver" if driver_stamps else "grab"  # what stamped the last frame
        if mono:  # GRAY8 stays GRAY8 (FFmpeg and V4L2 backends) instead of becoming BGR
            self.cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)

    def read(self) -> Optional[Frame]:
        if not self.cap.grab():  # grab first: the timestamp is the frame's, not the decode's
            return None
        t = time.monotonic()
        if self.driver_stamps:
            taken = driver_time(float(self.cap.get(cv2.CAP_PROP_POS_MSEC)), t)
            if taken is not None:
                t, self.stamps = taken, "driver"
            elif self.stamps == "driver":  # warned once, when it changes
                self.stamps = "grab"
                log.warning(
                    "%s: the driver's frame timestamps are not of the monotonic clock: frames "
                    "are stamped when grabbed, and a frame that waited in the driver's queue "
                    "from before a trigger passes for the container's own",
                    self.what,
                )
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
    """PNG frames of a folder in name order, at their own depth: a 16-bit frame (a 12-bit
    camera's, saved in 16 bits) that OpenCV would read as value / 256, nearly black, is
    refused at the open (the first frame) or by the capture (any later one), never taken."""

    driver_stamps, stamps = False, "grab"  # stamped when read, as CaptureSource's files

    def __init__(self, folder: Path, mono: bool = False) -> None:
        self.files: List[Path] = sorted(folder.glob("*.png"))
        if not self.files:
            raise SourceError(f"{folder}: no PNG frames")
        self.i, self.mono = 0, mono
        first = cv2.imread(str(self.files[0]), cv2.IMREAD_UNCHANGED)
        if first is None:
            raise SourceError(f"{self.files[0]}: not a decodable PNG")
        if first.dtype != np.uint8:
            raise SourceError(
                f"{self.files[0]}: a {first.dtype} frame; the unit takes 8-bit frames, as its "
                "camera delivers them: write the frames as 8-bit PNGs"
            )

    def read(self) -> Optional[Frame]:
        if self.i >= len(self.files):
            return None
        path = str(self.files[self.i])
        self.i += 1
        t = time.monotonic()
        if self.mono:
            grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
            return None if grey is None else Frame(grey, t)
        img = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        return None if img is None else Frame(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), t)

    def close(self) -> None:
        self.i = len(self.files)


class VideoInfo(NamedTuple):
    frames: int  # by the file's index, or decoded and counted up to the frames needed
    width: int  # of its first frame
    height: int


def video_info(path: Path, need: int = 1) -> VideoInfo:
    """A video file as its source reads it (opened alike, grey): its frame count and the
    size of its first frame. Where the index counts fewer than `need` frames, or none (some
    containers only estimate it, from duration x fps), the frames are decoded and counted,
    up to `need`. A file no reader opens, or whose first frame does not decode, raises
    SourceError."""
    src = CaptureSource(str(path), cv2.CAP_ANY, str(path), mono=True, params=FILE_PARAMS)
    try:
        n = float(src.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        first = src.read()
        if first is None:
            raise SourceError(f"{path}: opens, but no frame decodes")
        count = int(n) if math.isfinite(n) and n >= 1 else 0
        if count < need:
            count = 1
            while count < need and src.read() is not None:
                count += 1
    finally:
        src.close()
    h, w = first.image.shape[:2]
    return VideoInfo(count, w, h)


def appsink_queues(pipeline: str) -> bool:
    """Whether a GStreamer pipeline's appsink may hold more than the newest frame: without
    `drop=true max-buffers=1` it queues frames while nobody reads, and a frame from before a
    trigger (stamped at the grab) would pass for the container's own."""
    sink = pipeline.rsplit("!", 1)[-1].split()
    if not sink or sink[0] != "appsink":
        return True  # not an appsink we can read: assume it queues
    props = dict(p.split("=", 1) for p in sink[1:] if "=" in p)
    drops = props.get("drop", "").lower() in ("true", "1", "yes")
    return not (drops and props.get("max-buffers") == "1")


def source_problem(spec: str) -> Optional[str]:
    """What is wrong with a camera source's spelling (None: nothing): a `v4l2:` device that
    is neither an index nor a device path, a `gst:` without a pipeline, an empty path."""
    kind, _, rest = spec.partition(":")
    if kind == "v4l2" and not (rest.isdigit() or rest.startswith("/dev/")):
        return f"{spec!r}: expected a device index (v4l2:0) or path (v4l2:/dev/video0)"
    if (kind in ("gst", "file") and not rest.strip()) or not spec.strip():
        return f"{spec!r}: names no {'pipeline' if kind == 'gst' else 'file or folder'}"
    return None


def open_source(spec: str, mono: bool = False) -> CaptureSource | FolderSource:
    """`file:<video or folder>`, `v4l2:<index or /dev/videoN>`, `gst:<pipeline>`, or a bare
    path."""
    problem = source_problem(spec)
    if problem is not None:
        raise SourceError(f"camera source {problem}")
    kind, _, rest = spec.partition(":")
    if kind == "v4l2":
        dev: Union[int, str] = int(rest) if rest.isdigit() else rest
        return CaptureSource(dev, cv2.CAP_V4L2, spec, mono, driver_stamps=True)
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
