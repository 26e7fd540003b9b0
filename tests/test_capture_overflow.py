"""The capture queue is full at a trigger: the camera read of the container before hangs,
and the line keeps triggering. The container that finds the queue full is rejected on
record (`queue_overflow`) and at the gate; judged at the gate pin, each container's last
row agrees with what the gate did."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import frozen_heap, line_runtime
from edge.runtime import Job
from edge.simulate import pin_intervals
from edge.sources import Frame

from .gate_run import gated
from .test_runtime import _cfg, _rows


def _camera(trigger_t: float, seed: int, hold: threading.Event) -> Callable[[], Frame]:
    """A container's 3 frames, stamped just after its trigger (as a driver stamps them), each
    read first waiting for `hold`."""
    rng = np.random.default_rng(seed)
    frames = iter(range(3))

    def read() -> Frame:
        hold.wait(10)
        i = next(frames)
        return Frame(rng.integers(0, 255, (256, 320, 3), dtype=np.uint8), trigger_t + 0.01 * i)

    return read


@pytest.mark.parametrize("wiring", ["accept", "reject"])
def test_a_full_capture_queue_rejects_the_container_at_the_gate(
    bundle: Path, tmp_path: Path, wiring: str
) -> None:
    """Queue depth 2. c0's first frame read hangs for 0.8 s (a camera driver stuck): c1 and
    c2, triggered meanwhile, wait in the queue, and c3 finds it full. c3 is a
    `queue_overflow` reject and the gate rejects it (no accept pulse, or its reject pulse at
    its gate time); c0 is a reject for its slow frame (`camera_drop`); c1 and c2, decided
    once the read comes back, are accepted and released. Every container's last row says
    what the gate did to it."""
    cfg = _cfg(
        bundle,
        tmp_path,
        decision={"min_evidence": 99.0},
        gpio={"energise_to": wiring, "delay_ms": 3000.0, "pulse_ms": 100},
        timing={"queue_depth": 2},
    )
    f, free, stuck = MockFactory(), threading.Event(), threading.Event()
    free.set()
    delay = cfg.gpio.delay_ms / 1000
    edges: Dict[str, float] = {}
    with frozen_heap(), line_runtime(cfg, f) as rt:
        gate = f.pin(cfg.gpio.ejector_pin)
        gate.clear_states()
        t_clear = time.monotonic()
        for i, cid in enumerate(["c0", "c1", "c2", "c3"]):
            edges[cid] = time.monotonic()
            rt.submit(Job(cid, edges[cid], _camera(edges[cid], i, stuck if i == 0 else free)))
            time.sleep(0.15)  # apart by more than a pulse: no trigger conflict
        time.sleep(max(0.0, edges["c0"] + 0.8 - time.monotonic()))
        stuck.set()  # c0's read comes back, 0.6 s over its frame timeout
        assert rt.drain(15)
        assert rt.io.pulses.wait_idle(delay + 2)
        on = pin_intervals(gate, t_clear)
    rows = _rows(tmp_path)
    assert rows["c3"][:2] == ("reject", "queue_overflow"), rows
    assert rows["c0"][:2] == ("reject", "camera_drop"), rows
    assert rows["c1"][0] == rows["c2"][0] == "accept", rows
    physical = gated(edges, on, delay, cfg.gpio.pulse_ms / 1000, wiring)
    assert {c: p.passed for c, p in physical.items()} == {
        c: row[0] == "accept" for c, row in rows.items()
    }, (on, rows)
