"""Review images: the decision's tracks over a container's evidence frame, so a reviewer
sees not only which specks were found but which path decided (`fod audit show`)."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from .decision import MOVING, RISING, STATIC, DecisionConfig, Judged, jumps

# BGR; the detections' boxes are red, so the paths take other colours.
COLOURS: Dict[str, Tuple[int, int, int]] = {
    MOVING: (255, 0, 255),  # magenta
    RISING: (255, 255, 0),  # cyan
    STATIC: (150, 150, 150),  # grey
}
JUMP = (0, 255, 255)  # yellow: a step the jump test cut the track at
LEGEND = "paths: magenta moving, cyan rising, grey static, yellow jump; thick: the strongest"


def draw_tracks(img: np.ndarray, judged: Sequence[Judged], cfg: DecisionConfig) -> np.ndarray:
    """Draw each judged track's path (polyline through its box centres, a dot per
    sighting) over a BGR image [H, W, 3], in place; the strongest track (judged[0]) thick
    and labelled with its path and evidence."""
    import cv2

    for i, j in enumerate(judged):
        c = np.stack(j.track.centres)  # [T, 2]
        if not np.isfinite(c).all():  # a hand-edited or foreign row: nothing to place
            continue
        cuts = set(jumps(c, np.asarray(j.track.frames), cfg).tolist())
        width = 2 if i == 0 else 1
        pts = [(int(x), int(y)) for x, y in np.rint(c)]  # cv2 takes int pixel tuples
        for k in range(1, len(pts)):
            colour = JUMP if k in cuts else COLOURS[j.kind]
            cv2.line(img, pts[k - 1], pts[k], colour, width, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 2, COLOURS[j.kind], -1)
        if i == 0:
            x, y = pts[-1]
            put_label(img, f"{j.kind} {j.evidence:.1f}", (x + 6, y + 4), COLOURS[j.kind])
    return img


def put_label(
    img: np.ndarray, text: str, org: Tuple[int, int], colour: Tuple[int, int, int]
) -> None:
    """Text on a dark strip: readable over the bright diffuser of a back-lit frame."""
    import cv2

    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    (w, h), base = cv2.getTextSize(text, font, scale, 1)
    x, y = org
    cv2.rectangle(img, (x - 2, y - h - 2), (x + w + 2, y + base), (0, 0, 0), -1)
    cv2.putText(img, text, (x, y), font, scale, colour, 1, cv2.LINE_AA)
