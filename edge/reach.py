"""Which moving particles a line's decision can reject: probe paths through the decision.

`config.blind_spots` reads the weights. The geometry can shut a line just as blind: a path
must travel `moving_distance` to be a particle's, each step must stay within
`match_distance` to link, and `reference_height` scales every distance; with
`moving_distance` past the frame every particle is a "static: mark", with `match_distance`
under half a pixel no sighting links, with one camera frame nothing shows a path. So a
particle sinking straight down the frame at a ladder of speeds, seen sure in every frame it
is in, is decided by `decide` itself; a line that rejects none of them could only pass
containers (`fod run` refuses it, `fod check` fails it).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from .decision import DecisionConfig, decide
from .errors import FodError
from .postprocess import Detections

# px a frame: 1/4 px (a slow particle) up to the frame's height (in one frame, out the next)
SPEED_STEPS = 2 ** (np.arange(-4, 25) / 2)  # 0.25, 0.35, 0.5, ... 4096


def sinking(
    frames: int, speed: float, size: Tuple[int, int], box: Tuple[float, float]
) -> List[Detections]:
    """A particle of `box` (w, h) px sinking `speed` px a frame down the middle of a frame
    `size` (w, h) from its top: its box, score 1, in each of `frames` frames it is still in."""
    (w, h), (bw, bh) = size, box
    out = []
    for t in range(frames):
        y = bh / 2 + speed * t  # its centre
        if y + bh / 2 > h:
            boxes = np.zeros((0, 4), np.float32)
        else:
            boxes = np.array([[w / 2 - bw / 2, y - bh / 2, w / 2 + bw / 2, y + bh / 2]])
        n = len(boxes)
        out.append(Detections(boxes.astype(np.float32), np.ones(n, np.float32), np.zeros(n, int)))
    return out


def reach(cfg: DecisionConfig, frames: int, size: Tuple[int, int]) -> Optional[Tuple[float, float]]:
    """The slowest and the fastest speed of the ladder (px a frame, in frames `size` (w, h);
    `cfg` for that frame: DecisionConfig.in_frame) at which a sinking particle rejects
    the container, or None where none does."""
    # 4 px, or lying across the frame as long as min_size asks (a fibre; frames_for_model
    # refuses a min_size past the frame's longer side)
    box = (min(max(cfg.min_size, 4.0), float(size[0])), min(4.0, float(size[1])))
    hits = [
        float(v)
        for v in SPEED_STEPS
        if v <= size[1]
        if decide(sinking(frames, float(v), size, box), ["particle"], cfg).reject
    ]
    return (hits[0], hits[-1]) if hits else None


class BlindDecision(FodError):
    """The line's decision could reject no moving particle in its frames."""


def blind_geometry(cfg: DecisionConfig, frames: int, size: Tuple[int, int]) -> Optional[str]:
    """Why no moving particle could reject in frames `size` (w, h), or None where one can."""
    if reach(cfg, frames, size) is not None:
        return None
    return (
        f"no moving particle could reject a container: one sinking "
        f"{SPEED_STEPS[0]:g}-{size[1]} px a frame through {frames} camera.frames of "
        f"{size[0]}x{size[1]} is never judged a moving particle with evidence "
        f"{cfg.min_evidence:g} (in these frames decision.moving_distance is "
        f"{cfg.moving_distance:g} px, match_distance {cfg.match_distance:g} px, min_size "
        f"{cfg.min_size:g} px)"
    )
