"""Knapp-style container-level study: every container inspected R times, its rejection
probability, the zones, reject-zone efficiency and false-reject rate.

Zones follow the Knapp convention: p >= 0.7 reject zone (must reject), 0.3 < p < 0.7
grey, p <= 0.3 accept zone. With known truth, the reject-zone efficiency is the share of
truly defective containers whose rejection probability lies in the reject zone, and
the false-reject rate the mean rejection probability of the good ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .audit_verify import iter_rows
from .errors import FodError
from .fsutil import atomic_write_bytes, write_png

REJECT_ZONE, ACCEPT_ZONE = 0.7, 0.3


@dataclass(frozen=True)
class KnappResult:
    per_container: Dict[str, Tuple[str, int, int]]  # id -> (truth, rejects, inspections)
    reject_zone_efficiency: float  # defective containers with p >= 0.7, share
    detection_probability: float  # mean p over defective containers
    false_reject_rate: float  # mean p over good containers
    zones: Dict[str, Dict[str, int]]  # truth -> zone -> count

    def to_dict(self) -> dict:
        return {
            "reject_zone_efficiency": self.reject_zone_efficiency,
            "detection_probability": self.detection_probability,
            "false_reject_rate": self.false_reject_rate,
            "zones": self.zones,
            "containers": {
                k: {"truth": t, "rejects": r, "inspections": n}
                for k, (t, r, n) in sorted(self.per_container.items())
            },
        }


def zone(p: float) -> str:
    return "reject" if p >= REJECT_ZONE else ("accept" if p <= ACCEPT_ZONE else "grey")


def knapp(decisions: List[Tuple[str, bool]], truth: Dict[str, str]) -> KnappResult:
    """`decisions`: (container id, rejected) per inspection; ids map to `truth` labels."""
    counts: Dict[str, List[int]] = {}
    for cid, rej in decisions:
        if cid not in truth:
            raise FodError(f"container {cid!r} has no truth label")
        c = counts.setdefault(cid, [0, 0])
        c[0] += int(rej)
        c[1] += 1
    if not counts:
        raise FodError("no inspections to study")
    per = {k: (truth[k], r, n) for k, (r, n) in counts.items()}
    bad = [r / n for t, r, n in per.values() if t == "reject"]
    good = [r / n for t, r, n in per.values() if t == "accept"]
    zones: Dict[str, Dict[str, int]] = {
        t: {"reject": 0, "grey": 0, "accept": 0} for t in ("reject", "accept")
    }
    for t, r, n in per.values():
        zones[t][zone(r / n)] += 1
    return KnappResult(
        per,
        float(np.mean([p >= REJECT_ZONE for p in bad])) if bad else float("nan"),
        float(np.mean(bad)) if bad else float("nan"),
        float(np.mean(good)) if good else float("nan"),
        zones,
    )


def container_of(inspection_id: str) -> str:
    """'c000001-17' (container c000001, its inspection 17) -> 'c000001', the truth's key."""
    return inspection_id.split("-")[0]


def share(hits: Sequence[bool]) -> Optional[float]:
    """The share of True among `hits`; None when there is nothing to count."""
    return sum(hits) / len(hits) if hits else None


def decisions_from_audit(folder: Path) -> List[Tuple[str, bool]]:
    """(container, rejected) per audited inspection; ids 'c000001-17' -> 'c000001'.
    AuditError, naming the file, where one cannot be read."""
    last: Dict[str, bool] = {}  # per inspection; an amending row (same id) has the last word
    for row in iter_rows(folder):
        if "_chain" not in row:
            last[row["container_id"]] = row["decision"] == "reject"
    out = [(container_of(cid), rej) for cid, rej in last.items()]
    if not out:
        raise FodError(f"{folder}: no audited containers")
    return out


LABELS = ("accept", "reject")


def read_sequences(path: Path) -> List[Tuple[str, Optional[str], str]]:
    """(container id, video path relative to the file's folder or None, label) per
    container of a `sequences.json`, checked: a label the study does not know would count
    the container on neither side and leave a rate empty instead of refusing the file."""
    try:
        containers = json.loads(path.read_text(encoding="utf-8"))["containers"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FodError(f"{path}: not a sequences file from `fod synth`: {e}") from None
    if not isinstance(containers, list) or not containers:
        raise FodError(f"{path}: 'containers' must be a non-empty list")
    out: List[Tuple[str, Optional[str], str]] = []
    seen = set()
    for i, c in enumerate(containers):
        where = f"{path}: containers[{i}]"
        if not isinstance(c, dict):
            raise FodError(f"{where} is not an object")
        cid, video, label = c.get("id"), c.get("path"), c.get("label")
        if isinstance(cid, bool) or not isinstance(cid, int) or cid < 0:
            raise FodError(f"{where}: 'id' must be a non-negative integer, got {cid!r}")
        if cid in seen:
            raise FodError(f"{where}: id {cid} appears twice")
        seen.add(cid)
        if label not in LABELS:
            raise FodError(f"{where}: 'label' must be one of {LABELS}, got {label!r}")
        if video is not None and (not isinstance(video, str) or not video):
            raise FodError(f"{where}: 'path' must name the container's video, got {video!r}")
        out.append((f"c{cid:06d}", video, label))
    return out


def sequences_frame_size(path: Path) -> Optional[Tuple[int, int]]:
    """(w, h) that every container of a `sequences.json` declares, None where none
    declares one; a set of mixed sizes is refused (one camera takes one size)."""
    containers = json.loads(path.read_text(encoding="utf-8"))["containers"]
    sizes = {(c.get("width"), c.get("height")) for c in containers} - {(None, None)}
    if not sizes:
        return None
    (w, h), *more = sizes
    if more or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
        raise FodError(
            f"{path}: containers must share one width x height, got {sorted(sizes, key=str)}"
        )
    return w, h


def truth_from_sequences(path: Path) -> Dict[str, str]:
    """Container id -> accept/reject; only ids and labels are needed (no videos)."""
    return {cid: label for cid, _, label in read_sequences(path)}


def write_report(res: KnappResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        out_dir / "knapp.json", (json.dumps(res.to_dict(), indent=1) + "\n").encode()
    )
    lines = [
        "# Knapp study",
        "",
        f"Reject-zone efficiency (defective containers with p >= {REJECT_ZONE}): "
        f"{res.reject_zone_efficiency:.3f}",
        f"Detection probability (mean p, defective): {res.detection_probability:.3f}",
        f"False-reject rate (mean p, good): {res.false_reject_rate:.3f}",
        "",
        "| truth | reject zone | grey | accept zone |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {t} | {z['reject']} | {z['grey']} | {z['accept']} |" for t, z in res.zones.items()
    ]
    lines += [
        "",
        "| container | truth | rejects / inspections | p | zone |",
        "|---|---|---|---|---|",
    ]
    for k, (t, r, n) in sorted(res.per_container.items()):
        lines.append(f"| {k} | {t} | {r}/{n} | {r / n:.2f} | {zone(r / n)} |")
    atomic_write_bytes(out_dir / "knapp.md", ("\n".join(lines) + "\n").encode())
    _plot(res, out_dir / "knapp.png")


def _plot(res: KnappResult, out: Path) -> None:
    """Bars of rejection probability per container (red: defective, green: good), zone lines."""
    items = sorted(res.per_container.items(), key=lambda kv: (kv[1][0] != "reject", kv[0]))
    w, h, left, top, bottom = max(400, 24 * len(items) + 80), 320, 50, 30, 40
    img = np.full((h, w, 3), 255, np.uint8)
    plot_h = h - top - bottom

    def y(p: float) -> int:
        return int(top + (1 - p) * plot_h)

    for p, label in ((REJECT_ZONE, "0.7"), (ACCEPT_ZONE, "0.3"), (1.0, "1"), (0.0, "0")):
        cv2.line(img, (left, y(p)), (w - 10, y(p)), (200, 200, 200), 1)
        cv2.putText(img, label, (8, y(p) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for i, (_, (t, r, n)) in enumerate(items):
        x = left + 10 + i * 24
        colour = (40, 40, 220) if t == "reject" else (40, 170, 40)
        cv2.rectangle(img, (x, y(r / n)), (x + 16, y(0.0)), colour, -1)
    cv2.putText(
        img,
        "rejection probability per container (red: defective, green: good)",
        (left, 18),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (0, 0, 0),
        1,
    )
    write_png(out, img)
