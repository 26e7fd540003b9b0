"""The trigger input on gpiozero's MockFactory: edges debounced in monotonic time and
timestamped at the edge (the pin factory's ticks), not when the callback ran."""

from __future__ import annotations

import time
from typing import List, Tuple

import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import frozen_heap
from edge.gpio import Debouncer, GpioConfig, LineIO
from edge.simulate import drive_at


@pytest.fixture(autouse=True)
def _frozen_heap():
    """As in tests/test_gpio.py: a full GC pass over the test process (torch imported) would
    otherwise fall between a test's clock reading and its edge."""
    with frozen_heap():
        yield


def test_trigger_edges_debounced_and_timestamped_at_the_edge() -> None:
    f = MockFactory()
    cfg = GpioConfig(trigger_pin="GPIO22", trigger_bounce_ms=5)
    edges = []
    with LineIO(cfg, f) as io:
        io.on_trigger(edges.append)
        pin = f.pin("GPIO22")
        t0 = time.monotonic()
        pin.drive_high()
        for _ in range(3):  # contact bounce within 1 ms
            pin.drive_low()
            pin.drive_high()
        pin.drive_low()
        time.sleep(0.02)
        pin.drive_high()  # the next container, 20 ms later
        pin.drive_low()
    assert len(edges) == 2 and io.debounce.bounces == 3
    assert -1e-4 <= edges[0] - t0 < 0.002 and edges[1] - edges[0] > 0.015


def test_a_bounce_delivered_late_is_still_a_bounce() -> None:
    """The simulator's chatter edges carry the time the contact bounced, not the time its
    thread got to drive them (edge.simulate.drive_at): delivered 30 ms late, past the 10 ms
    debounce (a preempted thread), three bounces within 0.3 ms of the edge are still
    bounces; driven plainly that late they would be a second trigger (a ghost container).
    Checks drive_at against the installed gpiozero's MockPin."""

    def run(late_chatter) -> Tuple[List[float], int, float]:
        f = MockFactory()
        edges: List[float] = []
        with LineIO(GpioConfig(trigger_pin="GPIO22", trigger_bounce_ms=10), f) as io:
            io.on_trigger(edges.append)
            pin = f.pin("GPIO22")
            t0 = time.monotonic()
            pin.drive_high()
            time.sleep(0.03)
            late_chatter(pin, t0)
            pin.drive_low()
            time.sleep(0.02)
            t1 = time.monotonic() - 0.005
            drive_at(pin, True, t1)  # the next container, delivered 5 ms after its edge
            pin.drive_low()
        return [e - t0 for e in edges], io.debounce.bounces, t1 - t0

    def stamped(pin, t0) -> None:
        for k in range(3):
            drive_at(pin, False, t0 + (2 * k + 1) * 50e-6)
            drive_at(pin, True, t0 + (2 * k + 2) * 50e-6)

    def plain(pin, t0) -> None:
        pin.drive_low()
        pin.drive_high()

    edges, bounces, t1 = run(stamped)
    assert bounces == 3 and len(edges) == 2
    assert -1e-4 <= edges[0] < 0.002 and abs(edges[1] - t1) < 0.001  # each at its own stamp
    edges, bounces, _ = run(plain)
    assert bounces == 0 and len(edges) == 3 and edges[1] > 0.025  # a ghost trigger


def test_debouncer_on_a_fake_clock() -> None:
    d = Debouncer(0.002)
    assert [d.accept(t) for t in (1.0, 1.0005, 1.0019, 1.003, 1.0031)] == [
        True,
        False,
        False,
        True,
        False,
    ]
    assert d.bounces == 3
