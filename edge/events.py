"""Alarm events on record: `events.jsonl` in the audit folder, one JSON line an event,
each carrying the sha256 of the line before it (a chain of its own beside the rows') and,
with the audit's signing key, an Ed25519 signature of its hash; queued by any thread,
written and fsync'd by one that may wait for the disk.

The container rows say what happened to each container; an alarm is about the line - a
stage down, a stuck gate, a model blind to its reference frames with the containers it
accepted before that to be held for re-inspection. Quality assurance needs those on the
same record as the rows, not only in the journal. A write that fails is logged and
never raises into the runtime; its events wait for the next.
"""

from __future__ import annotations

import collections
import datetime as _dt
import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any, Deque, Dict, Iterator, List, Tuple

from .audit import GENESIS, AuditError
from .lines import append_whole, drop_cut_tail

log = logging.getLogger(__name__)
EVENTS = "events.jsonl"
_FIELDS = ("n", "wall_time", "kind", "detail", "audit_seq")


def event_payload(n: int, h: str) -> bytes:
    return f"pharma-fod audit event {n} {h}".encode()


def event_hash(prev: str, fields: Dict[str, Any]) -> str:
    """sha256 over the previous line's hash and this event's fields (canonical JSON)."""
    text = json.dumps({k: fields[k] for k in _FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev + text).encode("utf-8")).hexdigest()


def _lines(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number, text) of every whole line: a last one cut short by a death mid-append
    is left out (`verify` names it; the next writer removes it)."""
    with open(path, encoding="utf-8", newline="\n") as f:
        for n, line in enumerate(f, 1):
            if line.endswith("\n"):
                yield n, line


def read_events(folder: Path, public_key: Any = None) -> List[Dict[str, Any]]:
    """Walk `events.jsonl` from the genesis -> its events, in order; AuditError naming the
    file and line at the first line that is not JSON, out of order or edited, and with
    `public_key` (an Ed25519 public key object) signed by another key, or unsigned after
    the first signed one. Events before it may be unsigned (recorded before the unit had
    its key): the first signed event's hash chains them all, so its signature covers them;
    with none signed at all, the chain is refused."""
    path = folder / EVENTS
    if not path.exists():
        return []
    events: List[Dict[str, Any]] = []
    prev, signed = GENESIS, False
    for i, line in _lines(path):
        try:
            e = json.loads(line)
            ok = isinstance(e, dict) and e["n"] == len(events) + 1 and e["prev_hash"] == prev
            ok = ok and event_hash(prev, e) == e["hash"]
        except (ValueError, KeyError, TypeError):
            raise AuditError(f"{path}: line {i} is not an event") from None
        if not ok:
            raise AuditError(f"{path}: line {i} was edited, moved or follows a removed line")
        if public_key is not None and (signed or "sig" in e):
            _check_signature(public_key, e, f"{path}: line {i}")
            signed = True
        prev = e["hash"]
        events.append(e)
    if public_key is not None and events and not signed:
        raise AuditError(f"{path}: no event is signed, while a public key was given")
    return events


def verify_events(folder: Path, public_key: Any = None) -> Dict[str, int]:
    """`read_events` -> {kind: how many}."""
    return dict(collections.Counter(str(e["kind"]) for e in read_events(folder, public_key)))


def _check_signature(public_key: Any, e: Dict[str, Any], where: str) -> None:
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(bytes.fromhex(str(e["sig"])), event_payload(e["n"], e["hash"]))
    except KeyError:
        raise AuditError(
            f"{where}: unsigned after signed events (inserted, or the key was taken out of "
            "the config)"
        ) from None
    except (InvalidSignature, ValueError):
        raise AuditError(f"{where}: bad signature") from None


class EventLog:
    """Events for `folder`/events.jsonl, continuing the chain already there; `key`: the
    audit's Ed25519 private key, which signs each event.

    `post` only queues (it is called from timing-critical threads: the pulse thread raises
    the alarm on a stuck gate); `flush`, from a thread that may wait for the disk (the
    runtime's supervisor, each round, and its close), writes what is queued."""

    def __init__(self, folder: Path, key: Any = None) -> None:
        self.path, self.key = folder / EVENTS, key
        self._lock = threading.Lock()  # the queue
        self._write = threading.Lock()  # the chain and the file: one writer at a time
        self._queue: Deque[Tuple[str, str, Any, int]] = collections.deque(maxlen=1024)
        self._failing = False  # a write failed: logged once until one succeeds
        self._prev, self._n = GENESIS, 0
        if self.path.exists():
            try:
                drop_cut_tail(self.path)
                for _, line in _lines(self.path):
                    try:
                        e = json.loads(line)
                        self._prev, self._n = str(e["hash"]), int(e["n"])
                    except (ValueError, KeyError, TypeError):
                        continue  # `verify_events` names it; the chain goes on from the last
            except (OSError, UnicodeDecodeError) as e:
                raise AuditError(f"{self.path}: unreadable: {e}") from None

    def post(self, kind: str, detail: Any, audit_seq: int) -> None:
        """Queue one event (after container row `audit_seq`, stamped now); never blocks on
        the disk. Past 1024 waiting, the oldest is dropped. `detail`: a reason (alarms), or
        a JSON object (a run's `start`)."""
        now = _dt.datetime.now(_dt.timezone.utc).isoformat()
        with self._lock:
            self._queue.append((now, kind, detail, int(audit_seq)))

    def flush(self) -> bool:
        """Write the queued events, chained, in one fsync'd append -> whether none is left
        waiting (a failed write keeps them for the next flush and is logged once)."""
        with self._write:
            with self._lock:
                events = list(self._queue)
            if not events:
                return True
            prev, n, text = self._prev, self._n, ""
            for now, kind, detail, seq in events:
                n += 1
                fields = dict(n=n, wall_time=now, kind=kind, detail=detail, audit_seq=seq)
                h = event_hash(prev, fields)
                signed = {"sig": self.key.sign(event_payload(n, h)).hex()} if self.key else {}
                text += json.dumps({**fields, "prev_hash": prev, "hash": h, **signed}) + "\n"
                prev = h
            try:  # whole or absent: a retry of these events never writes them twice
                append_whole(self.path, text.encode("utf-8"))
            except OSError as e:  # the alarm pin and the journal still carry them
                if not self._failing:
                    log.error("%s: cannot record %d alarm event(s): %s", self.path, len(events), e)
                self._failing = True
                return False
            self._failing = False
            self._prev, self._n = prev, n
            written = {id(e) for e in events}  # alive in `events`: their ids stay theirs
            with self._lock:
                # The written ones only: a post while the queue was full pushed out some of
                # them already, and what came after them waits for the next flush.
                while self._queue and id(self._queue[0]) in written:
                    self._queue.popleft()
            return True
