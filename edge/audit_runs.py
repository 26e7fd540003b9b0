"""`fod audit runs`: the trail cut at each run's `start` event, so quality assurance can say
which software, bundle and config decided which containers.

A run's rows are those after its start's `audit_seq` up to the next start's. Each row
carries the model's and the config's sha256 itself; a row whose hashes differ from its
run's start is counted `off_start` (a start lost with a process that died before writing
it leaves the rows after it under the run before: visible here, not hidden).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .audit_verify import iter_rows
from .events import read_events


@dataclass
class Run:
    start: Optional[Dict[str, Any]]  # the start event's detail; None: rows before any start
    started: Optional[str]  # its wall time (UTC)
    after_seq: int  # the last row before the run
    rows: int = 0
    rejects: int = 0
    first_seq: Optional[int] = None
    last_seq: Optional[int] = None
    off_start: int = 0  # rows whose model or config hash is not the start's


def runs(folder: Path) -> List[Run]:
    """Every run on record in `folder`, oldest first; AuditError where the rows or the
    events cannot be read or their chain is broken (as `fod audit verify` names it)."""
    out = [Run(None, None, 0)]
    for e in read_events(folder):
        if e["kind"] == "start" and isinstance(e["detail"], dict):
            out.append(Run(e["detail"], e["wall_time"], int(e["audit_seq"])))
    i = 0
    for row in iter_rows(folder):
        if "_chain" in row:
            continue
        seq = int(row["seq"])
        while i + 1 < len(out) and seq > out[i + 1].after_seq:
            i += 1
        r = out[i]
        r.rows += 1
        r.rejects += row["decision"] == "reject"
        r.first_seq = seq if r.first_seq is None else r.first_seq
        r.last_seq = seq
        if r.start is not None and (row["model_hash"], row["config_hash"]) != (
            r.start.get("model_sha256"),
            r.start.get("config_sha256"),
        ):
            r.off_start += 1
    return [r for r in out if r.start is not None or r.rows]


def table(rs: List[Run]) -> List[str]:
    """`fod audit runs`: a line a run, numbered by its start (rows before any: '-')."""
    n, out = 0, []
    for r in rs:
        n += r.start is not None
        out.append(describe(n, r))
    return out


def describe(n: int, r: Run) -> str:
    """One line of `fod audit runs`."""
    seqs = f"rows {r.first_seq}..{r.last_seq}" if r.rows else "no rows"
    head = f"{seqs} ({r.rows} containers, {r.rejects} rejected)"
    if r.start is None:
        return f"-  {head}: no start on record (written before starts were recorded)"
    s = r.start
    sw = s.get("software", {})
    rows = "row" if r.off_start == 1 else "rows"
    off = f"; {r.off_start} {rows} NOT decided by this start's model/config" if r.off_start else ""
    return (
        f"{n}  {r.started}  {head}  bundle {s.get('bundle')}, model "
        f"{str(s.get('model_sha256'))[:12]}, config {str(s.get('config_sha256'))[:12]}, "
        f"pharma-fod {sw.get('pharma-fod')} (edge code {str(s.get('edge_code_sha256'))[:12]}), "
        f"{s.get('backend')}, unit {s.get('unit')}{off}"
    )


def as_json(rs: List[Run]) -> str:
    return json.dumps([asdict(r) for r in rs])
