"""Prometheus metrics of the runtime, served on 127.0.0.1 only (never on the line network)."""

from __future__ import annotations

import time
import urllib.request
from typing import Any, Dict, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .logsink import dropped_total

_STAGE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class RuntimeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "fod_stage_seconds",
            "Latency per stage",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.containers = Counter(
            "fod_containers_total",
            "Containers by decision (amended_to_reject / amended_to_pass: on record as accept /"
            " reject, the gate did the other)",
            ["decision"],
            registry=self.registry,
        )
        self.faults = Counter(
            "fod_faults_total", "Fail-safe rejects by fault", ["fault"], registry=self.registry
        )
        self.reference = Counter(
            "fod_reference_rounds_total",
            "Rounds of the reference frames through the model while the line ran, by result"
            " (passed, blind, error: ended by a model call that raised)",
            ["result"],
            registry=self.registry,
        )
        self.gate_retries = Counter(
            "fod_gate_write_retries_total",
            "Gate pulses whose output write failed and, written again in the pulse's window,"
            " succeeded (a GPIO line that fails now and then)",
            registry=self.registry,
        )
        self.queue = Gauge(
            "fod_queue_depth", "Items waiting per queue", ["queue"], registry=self.registry
        )
        self.alarm = Gauge(
            "fod_alarm", "1 while the alarm output is raised", registry=self.registry
        )
        # The endpoint answers from its own thread: this says the supervisor (deadlines,
        # stuck stages, the alarm) still goes round, not only that the process is alive.
        self.heartbeat = Gauge(
            "fod_heartbeat_timestamp_seconds",
            "Unix time of the supervisor's last round",
            registry=self.registry,
        )
        Gauge(
            "fod_log_lines_dropped",
            "Log lines lost since the process started: the log output (journald, a pipe) took"
            " nothing while they came",
            registry=self.registry,
        ).set_function(dropped_total)
        self._server: Optional[Any] = None

    def serve(self, port: int, address: str = "127.0.0.1") -> None:
        """Start the text endpoint on `address`:`port` (0 = off); loopback by default."""
        if port:
            server = start_http_server(port, addr=address, registry=self.registry)
            self._server = server[0] if isinstance(server, tuple) else server

    @property
    def address(self) -> Optional[tuple]:
        return self._server.server_address if self._server is not None else None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def scrape_url(port: int, address: str = "127.0.0.1") -> str:
    """The endpoint a process on this unit reaches: a wildcard bind answers on loopback."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"


def read_gauges(url: str, timeout_s: float = 5.0) -> Dict[str, float]:
    """The unlabelled gauges a running runtime serves (fod_alarm, ...), read from its text
    endpoint with prometheus_client's own parser. Raises OSError where nothing answers,
    http.client.HTTPException or ValueError where something else does."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout_s) as r:  # our own http:// URL
        text = r.read().decode("utf-8")
    return {
        s.name: s.value
        for fam in text_string_to_metric_families(text)
        if fam.type == "gauge"
        for s in fam.samples
        if not s.labels
    }


# Seconds a supervisor round may be old before `fod health` and `fod rollout`'s probe call
# the runtime hung (it goes round every fraction of a second).
HEARTBEAT_MAX_AGE_S = 30.0


def alarm_state(
    port: int,
    address: str = "127.0.0.1",
    timeout_s: float = 5.0,
    max_age_s: float = 0.0,
) -> str:
    """Why the runtime on this unit is not known healthy, '' when its endpoint answers with
    the alarm down: nothing answering, something other than HTTP or other than the
    runtime's endpoint, or fod_alarm not 0 (NaN included); with `max_age_s` (0: not
    checked), also a supervisor whose last round is older than that (hung while the
    endpoint answers)."""
    from http.client import HTTPException

    url = scrape_url(port, address)
    try:
        gauges = read_gauges(url, timeout_s)
    except (OSError, ValueError, HTTPException) as e:
        return f"{url} did not answer: {e!r}"
    alarm = gauges.get("fod_alarm")
    if alarm is None:
        return f"{url} serves no fod_alarm: not the runtime's endpoint"
    if alarm != 0:
        return f"the runtime raised its alarm ({url}: fod_alarm {alarm:g})"
    if max_age_s:
        beat = gauges.get("fod_heartbeat_timestamp_seconds", 0.0)
        if beat == 0:  # a fresh gauge: served, but its supervisor never went round
            return f"the runtime's supervisor has not gone round ({url})"
        age = time.time() - beat
        if not age <= max_age_s:  # NaN included
            return f"the runtime's supervisor last went round {age:.0f} s ago ({url})"
    return ""
