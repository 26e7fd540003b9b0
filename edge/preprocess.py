"""Letterbox: fit an image into the model's input size, keeping its aspect ratio.

The device, the calibration set and ONNX evaluation all go through these
functions, so the pixels the model sees on the workstation are those it sees on
the line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import cv2
import numpy as np

PAD_VALUE = 114  # mid-grey padding, as the model was trained with


@dataclass(frozen=True)
class Letterbox:
    """How a source image maps into the model input: model = source * scale + pad."""

    scale: float
    pad_x: int
    pad_y: int
    src_w: int
    src_h: int
    dst_w: int
    dst_h: int


def letterbox_params(src_wh: Tuple[int, int], dst_wh: Tuple[int, int]) -> Letterbox:
    """Scale to fit `dst_wh` (up or down), centred, padding the rest."""
    src_w, src_h = src_wh
    dst_w, dst_h = dst_wh
    if min(src_w, src_h, dst_w, dst_h) <= 0:
        raise ValueError(f"letterbox sizes must be positive, got {src_wh} -> {dst_wh}")
    scale = min(dst_w / src_w, dst_h / src_h)
    new_w, new_h = round(src_w * scale), round(src_h * scale)
    return Letterbox(scale, (dst_w - new_w) // 2, (dst_h - new_h) // 2, src_w, src_h, dst_w, dst_h)


def letterbox(
    image: np.ndarray, dst_wh: Tuple[int, int], pad_value: int = PAD_VALUE
) -> Tuple[np.ndarray, Letterbox]:
    """Resize `image` (H, W[, C]) into `dst_wh` with borders; returns the image and its mapping."""
    h, w = image.shape[:2]
    lb = letterbox_params((w, h), dst_wh)
    if (w, h) == tuple(dst_wh):
        return image, lb  # already the model size (the usual case on the line): no copy
    new_w, new_h = round(w * lb.scale), round(h * lb.scale)
    if (new_w, new_h) != (w, h):
        interp = cv2.INTER_AREA if lb.scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interp)
    out = np.full((lb.dst_h, lb.dst_w, *image.shape[2:]), pad_value, dtype=image.dtype)
    out[lb.pad_y : lb.pad_y + new_h, lb.pad_x : lb.pad_x + new_w] = image
    return out, lb


def parse_grid(spec: str) -> Tuple[int, int]:
    """ "CxR" (columns x rows, each 1-8) -> (C, R); ValueError names what is wrong."""
    parts = spec.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and 1 <= int(p) <= 8 for p in parts):
        raise ValueError(f"tiles must be COLSxROWS, each 1-8 (e.g. 2x2), got {spec!r}")
    return int(parts[0]), int(parts[1])


def tile_windows(
    frame_wh: Tuple[int, int], grid: Tuple[int, int], overlap: int, aspect: float = 0.0
) -> List[Tuple[int, int, int, int]]:
    """Windows (x0, y0, x1, y1), row-major, that cut a frame into a grid of equal tiles
    overlapping by at least `overlap` px, so an object up to that size lies whole in at
    least one tile; a 1x1 grid is the whole frame. With `aspect` (the model input's w / h)
    the tiles grow, overlapping more, to that shape where the frame allows: a tile that
    fills the model input needs no padding, whose edge through a bright container would
    read as a fibre. ValueError where no such tiles exist."""
    (w, h), (cols, rows) = frame_wh, grid
    tw, th = (_tile(n, k, overlap) for n, k in ((w, cols), (h, rows)))
    if aspect > 0:
        tw, th = min(w, max(tw, math.ceil(th * aspect))), min(h, max(th, math.ceil(tw / aspect)))
    xs, ys = _starts(w, tw, cols), _starts(h, th, rows)
    return [(x, y, x + tw, y + th) for y in ys for x in xs]


def _tile(n: int, k: int, overlap: int) -> int:
    size = -(-(n + (k - 1) * overlap) // k)  # ceil: k tiles of `size` cover n with overlaps
    if k > 1 and not overlap < size <= n:
        raise ValueError(f"{k} tiles across {n} px with {overlap} px overlap: no such tiles")
    return size


def _starts(n: int, size: int, k: int) -> List[int]:
    """k starts spread evenly from 0 to n - size."""
    return [round(i * (n - size) / (k - 1)) for i in range(k)] if k > 1 else [0]


def nchw_float(images: np.ndarray) -> np.ndarray:
    """Model input float32 [N, 3, H, W] (0-255) from uint8 RGB [N, H, W, 3] or grey [N, H, W].

    The float input is 12 MB per 1280x800 frame; from grey it is one cast and two plane
    copies, from RGB a strided de-interleave, which is what dominates the CPU's share.
    """
    if images.ndim == 3:  # grey: R = G = B
        n, h, w = images.shape
        x = np.empty((n, 3, h, w), np.float32)
        np.copyto(x[:, 0], images, casting="unsafe")
        x[:, 1] = x[:, 0]
        x[:, 2] = x[:, 0]
        return x
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)


def boxes_to_model(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Source-pixel xyxy boxes (N, 4) -> model-input pixels."""
    out = boxes.astype(np.float32) * lb.scale
    out[:, [0, 2]] += lb.pad_x
    out[:, [1, 3]] += lb.pad_y
    return out


def boxes_to_source(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Model-input xyxy boxes (N, 4) -> source pixels, clipped to the source image."""
    out: np.ndarray = boxes.astype(np.float32).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - lb.pad_x) / lb.scale
    out[:, [1, 3]] = (out[:, [1, 3]] - lb.pad_y) / lb.scale
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, lb.src_w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, lb.src_h)
    return out


def model_input(images: np.ndarray, layout: str) -> np.ndarray:
    """What a graph with input `layout` (edge.model_info.INPUT_LAYOUTS) takes, from uint8
    frames at the model size: RGB [N, H, W, 3] or grey [N, H, W].

    uint8 layouts pass the frames as they are where they already match (no copy for a
    mono camera and a grey model); a grey model given RGB frames sees their luma (BT.601,
    OpenCV's), an RGB model given grey frames sees R = G = B.
    """
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(
            f"frames must be uint8 [N, H, W] or [N, H, W, 3], got {images.dtype} {images.shape}"
        )
    if layout == "float32_nchw":
        return nchw_float(images)
    grey = images.ndim == 3
    if layout == "uint8_nhw":
        if grey:
            return np.ascontiguousarray(images)
        return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in images])
    if layout == "uint8_nhwc":
        if grey:
            return np.stack([cv2.cvtColor(f, cv2.COLOR_GRAY2RGB) for f in images])
        return np.ascontiguousarray(images)
    raise ValueError(f"unknown input layout {layout!r}")
