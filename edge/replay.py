"""Re-decide recorded containers under another decision config: what would it have done?

The audit keeps every frame's detections above the postprocess threshold, and the
decision is a pure function of them, so a proposed `[decision]` change can be tried on a
shift's recorded containers before it goes on the line. A container with a fault on
record (no model decision, or an amending row) stays as recorded: no config turns a
fault into an accept.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .audit_verify import iter_rows
from .bundle import open_bundle
from .config import LineConfig
from .decision import DecisionConfig, decide
from .errors import FodError
from .knapp import container_of, share
from .postprocess import frame_detections, label_beyond


@dataclass(frozen=True)
class Recorded:
    """One inspection as the audit has it (the last row of its id has the last word)."""

    container_id: str
    decision: str  # accept | reject
    reason: str
    fault: Optional[str]  # any row of the id with a fault: kept as recorded
    detections: List[List[List[float]]]  # per frame [[x0, y0, x1, y1, score, label], ...]


@dataclass(frozen=True)
class Replayed:
    container_id: str
    fault: Optional[str]
    before: str  # accept | reject, as recorded
    after: str  # under the replayed config (the recorded one when faulted)
    reason: str  # the replayed decision's reason (the recorded one when faulted)


def recorded_rows(folder: Path) -> Iterator[Recorded]:
    """Every row of an audit folder as its inspection, in seq order, read as taken (a
    day's trail parsed whole is gigabytes); AuditError if unreadable."""
    for row in iter_rows(folder):
        if "_chain" in row:  # a file's header, not a container
            continue
        try:
            dets = json.loads(row["detections"])
        except ValueError as e:
            raise FodError(
                f"{row['_file']}: seq {row['seq']}: detections unreadable: {e}"
            ) from None
        yield Recorded(row["container_id"], row["decision"], row["reason"], row["fault"], dets)


def _merged(seen: Optional[Recorded], row: Recorded) -> Recorded:
    """An inspection after one more of its rows: the last row has the last word, and a
    fault on any row stays (an amending row records no detections: the first row's stand)."""
    if seen is None:
        return row
    fault = row.fault or seen.fault
    dets = row.detections if row.fault is None else seen.detections
    return Recorded(row.container_id, row.decision, row.reason, fault, dets)


def recorded_containers(folder: Path) -> List[Recorded]:
    """Every inspection of an audit folder (its rows merged) in seq order; AuditError if
    unreadable."""
    by_id: Dict[str, Recorded] = {}
    for row in recorded_rows(folder):
        by_id[row.container_id] = _merged(by_id.get(row.container_id), row)
    if not by_id:
        raise FodError(f"{folder}: no audited containers")
    return list(by_id.values())


def line_decision(cfg: LineConfig) -> DecisionConfig:
    """The line's [decision] for its camera's frames, where the audit's detections are: a
    camera.height of 0 is the model's, read from the bundle the config names."""
    height = cfg.camera.height
    if not height and cfg.decision.reference_height:
        with open_bundle(Path(cfg.model.bundle)) as b:
            size = b.manifest.get("input_size")
        if not (isinstance(size, list) and len(size) == 2 and isinstance(size[1], int)):
            raise FodError(f"{cfg.model.bundle}: manifest input_size is not [w, h]: {size!r}")
        height = size[1]
    return cfg.decision.in_frame(height) if height else cfg.decision


def lowest_threshold(cfg: DecisionConfig) -> float:
    """The lowest score the decision looks at."""
    return min(cfg.score_threshold, cfg.track_threshold, *cfg.class_thresholds.values())


def replay(
    recorded: Iterable[Recorded], names: Sequence[str], cfg: DecisionConfig, floor: float
) -> List[Replayed]:
    """Decide each unfaulted inspection again, from its rows (`recorded_rows`; a
    container's rows merged as `recorded_containers` merges them). `floor`: the score
    above which detections were recorded (the run's postprocess.score_threshold). Below
    it nothing was kept, so a config that looks lower cannot be replayed."""
    if lowest_threshold(cfg) < floor:
        raise FodError(
            f"the decision looks at scores from {lowest_threshold(cfg)}, but the audit keeps "
            f"detections from {floor} (postprocess.score_threshold) only: cannot replay"
        )
    done: Dict[str, Tuple[Recorded, Replayed]] = {}  # by id, in the order first seen
    for row in recorded:
        beyond = label_beyond(row.detections, names)
        if beyond is not None:
            raise FodError(
                f"container {row.container_id}: class index {beyond} on record, but only "
                f"{len(names)} class names given ({', '.join(names)})"
            )
        seen = done.get(row.container_id)
        r = _merged(seen[0] if seen else None, row)
        if r.fault is not None:
            out = Replayed(r.container_id, r.fault, r.decision, r.decision, r.reason)
        else:
            d = decide(frame_detections(r.detections), names, cfg)
            after = "reject" if d.reject else "accept"
            out = Replayed(r.container_id, None, r.decision, after, d.reason)
        # Decided as its row is read, its detections dropped: the trail is never held.
        done[r.container_id] = (dataclasses.replace(r, detections=[]), out)
    return [out for _, out in done.values()]


def summarize(rows: Sequence[Replayed], truth: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Counts of changed decisions; with truth (container id before its first '-' -> label),
    over unfaulted containers the model's detection and false-reject rates before and
    after, and the counts behind them (a site quotes "52 of 54", not a rounded rate)."""
    model = [r for r in rows if r.fault is None]
    out: Dict[str, Any] = {
        "containers": len(rows),
        "faulted": len(rows) - len(model),
        "replayed": len(model),
        "accept_to_reject": sum(r.before == "accept" and r.after == "reject" for r in model),
        "reject_to_accept": sum(r.before == "reject" and r.after == "accept" for r in model),
    }
    if truth is None:
        return out
    labels = []
    for r in model:
        key = container_of(r.container_id)
        if key not in truth:
            raise FodError(f"container {r.container_id!r} has no truth label")
        labels.append(truth[key])
    for when in ("before", "after"):
        rej = [getattr(r, when) == "reject" for r in model]
        defective = [x for x, t in zip(rej, labels) if t == "reject"]
        good = [x for x, t in zip(rej, labels) if t == "accept"]
        out[f"detection_rate_{when}"] = share(defective)
        out[f"false_reject_rate_{when}"] = share(good)
        out[f"defective_rejected_{when}"] = sum(defective)
        out[f"good_rejected_{when}"] = sum(good)
    out["defective"] = labels.count("reject")
    out["good"] = labels.count("accept")
    return out
