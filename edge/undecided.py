"""The containers between their trigger and their outcome: each is finalised once.

Whoever comes first gives a container its outcome - the stage that decided it, the
supervisor at its deadline, a crash handler, the trigger handler's own failure, close -
and the outcome goes to the audit stage; a later one (a stage that woke up after the
deadline) is counted `superseded` and dropped. The table shares the ledger's lock.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from .jobs import InFlight, Job, Outcome
from .ledger import Ledger


class Undecided:
    def __init__(
        self, ledger: Ledger, enqueue: Callable[[Outcome], None], clock: Callable[[], float]
    ) -> None:
        self.ledger, self.enqueue, self.clock = ledger, enqueue, clock
        self.lock = ledger.lock
        self._table: Dict[str, InFlight] = {}

    def open(self, c: InFlight) -> None:
        """`c` on the books at its trigger: a row to come, its reject pulse (if armed)."""
        with self.lock:
            self.ledger.open(c.job.container_id, c.armed)
            self._table[c.job.container_id] = c

    def live(self, container_id: str, stage: str) -> Optional[InFlight]:
        """The container if it is still undecided, now held by `stage`."""
        with self.lock:
            c = self._table.get(container_id)
            if c is not None:
                c.stage = stage
            return c

    def get(self, container_id: str) -> Optional[InFlight]:
        with self.lock:
            return self._table.get(container_id)

    def due(self, now: float) -> List[InFlight]:
        """Those past their decision deadline at `now` (all of them: `math.inf`)."""
        with self.lock:
            return [c for c in self._table.values() if now > c.deadline]

    def __len__(self) -> int:
        return len(self._table)

    def finalize(self, out: Outcome) -> bool:
        """The container's outcome, if it is its first (-> True): to the audit stage."""
        with self.lock:
            if self._table.pop(out.container_id, None) is None:  # decided already
                self.ledger.counts["superseded"] += 1
                return False
        if out.decided_t == 0.0:
            out.decided_t = self.clock()
        self.enqueue(out)
        return True

    def fail(self, job: Job, fault: str, reason: str, captured_t: float = 0.0) -> bool:
        """`finalize` a reject of `job` for `fault`."""
        out = Outcome(job.container_id, job.trigger_t, True, reason, fault, job.truth, captured_t)
        return self.finalize(out)
