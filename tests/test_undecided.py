"""The table of undecided containers: each finalised once, the first outcome winning."""

from __future__ import annotations

import math

from edge.jobs import InFlight, Job, Outcome
from edge.ledger import Ledger
from edge.metrics import RuntimeMetrics
from edge.undecided import Undecided


def test_the_first_outcome_wins_and_a_later_one_is_counted_superseded() -> None:
    now = [10.0]
    ledger = Ledger(RuntimeMetrics(), None, lambda: now[0])  # type: ignore[arg-type]
    sent: list = []
    table = Undecided(ledger, sent.append, lambda: now[0])
    a, b = Job("a", 1.0, lambda: None), Job("b", 2.0, lambda: None, truth="reject")
    table.open(InFlight(a, 5.0, None))
    table.open(InFlight(b, 12.0, None))
    assert len(table) == 2 and ledger.pending == 2
    assert table.live("a", "inference").stage == "inference"  # type: ignore[union-attr]
    assert [c.job.container_id for c in table.due(now[0])] == ["a"]  # past its deadline
    assert {c.job.container_id for c in table.due(math.inf)} == {"a", "b"}
    assert table.fail(a, "stall", "no decision by the deadline")  # the supervisor, first
    late = Outcome("a", 1.0, False, "accept", None, None)  # the stage, waking up after it
    assert not table.finalize(late) and ledger.counts["superseded"] == 1
    assert table.live("a", "audit") is None and table.get("a") is None
    assert table.fail(b, "shutdown", "stopped", captured_t=3.0)
    assert len(table) == 0 and [o.container_id for o in sent] == ["a", "b"]
    first = sent[0]
    assert first.reject and first.fault == "stall" and first.decided_t == 10.0
    assert sent[1].truth == "reject" and sent[1].captured_t == 3.0
