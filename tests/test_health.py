"""`fod health`: the running runtime's alarm read from its own metrics endpoint (the
runtime's RuntimeMetrics exporter, served for real on loopback), as a container health
check or a monitoring probe asks it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge.metrics import RuntimeMetrics
from fod.cli import main

from .conftest import free_port

EXAMPLE = Path(__file__).resolve().parents[1] / "edge" / "line.example.toml"


def _config(tmp_path: Path, port: int) -> Path:
    text = EXAMPLE.read_text()
    assert "port = 9108" in text
    path = tmp_path / "line.toml"
    path.write_text(text.replace("port = 9108", f"port = {port}", 1))
    return path


def _health(cfg: Path, *more: str) -> int:
    return main(["health", "--config", str(cfg), "--timeout", "2", *more])


@pytest.fixture
def runtime():
    m = RuntimeMetrics()
    m.heartbeat.set_to_current_time()  # as the supervisor sets it each round
    m.serve(free_port())
    yield m
    m.close()


def test_healthy_only_while_the_alarm_is_down(tmp_path, runtime, capsys) -> None:
    cfg = _config(tmp_path, runtime.address[1])
    assert _health(cfg) == 0
    assert "healthy: http://127.0.0.1:" in capsys.readouterr().out
    for raised in (1.0, float("nan")):  # a NaN on the gauge is not "down"
        runtime.alarm.set(raised)
        assert _health(cfg) == 1
        assert "raised its alarm" in capsys.readouterr().err
    runtime.alarm.set(0)
    assert _health(cfg) == 0


def test_a_supervisor_that_stopped_going_round_is_unhealthy(tmp_path, runtime, capsys) -> None:
    cfg = _config(tmp_path, runtime.address[1])
    runtime.heartbeat.set(time.time() - 60)  # the endpoint still answers, its alarm down
    assert _health(cfg) == 1
    assert "supervisor last went round 60 s ago" in capsys.readouterr().err
    assert _health(cfg, "--max-age", "90") == 0  # a looser limit
    assert _health(cfg, "--max-age", "0") == 0  # not checked
    runtime.heartbeat.set(float("nan"))
    assert _health(cfg) == 1


@pytest.mark.parametrize(
    "flag, value",
    [("--max-age", "-5"), ("--max-age", "nan"), ("--max-age", "inf"), ("--timeout", "0")],
)
def test_a_limit_that_cannot_be_one_is_refused(tmp_path, flag, value, capsys) -> None:
    """Before, a negative or NaN --max-age called every runtime stale, an infinite one never
    checked, and --timeout 0 said the runtime 'did not answer' (a ValueError)."""
    with pytest.raises(SystemExit) as e:
        _health(_config(tmp_path, 9108), flag, value)
    assert e.value.code == 2
    assert f"argument {flag}: expected a finite number" in capsys.readouterr().err


def test_a_supervisor_that_never_went_round_is_unhealthy(tmp_path, capsys) -> None:
    fresh = RuntimeMetrics()  # serving, but no round yet: the gauge's own 0
    fresh.serve(free_port())
    try:
        assert _health(_config(tmp_path, fresh.address[1])) == 1
        assert "supervisor has not gone round" in capsys.readouterr().err
    finally:
        fresh.close()


def test_the_cli_default_max_age_is_the_runtime_side_one() -> None:
    import fod.args
    from edge import metrics
    from edge.rollout import RolloutConfig
    from fod.cli import build_parser

    limit = metrics.HEARTBEAT_MAX_AGE_S
    assert fod.args.HEARTBEAT_MAX_AGE_S == limit == 30.0
    assert RolloutConfig(Path("r"), Path("c"), None).heartbeat_max_age_s == limit
    parser = build_parser()
    for verb in (["health", "--config", "x"], ["rollout", "--bundle", "b"]):
        assert parser.parse_args(verb).max_age == limit


def test_a_runtime_that_is_gone_is_unhealthy(tmp_path, runtime, capsys) -> None:
    cfg = _config(tmp_path, runtime.address[1])
    runtime.close()  # the process died: nothing answers on its port
    assert _health(cfg) == 1
    assert "did not answer" in capsys.readouterr().err


def test_something_else_on_the_port_is_unhealthy(tmp_path, capsys) -> None:
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    other = CollectorRegistry()  # an exporter, but not the runtime's: no fod_alarm
    Gauge("node_load1", "load", registry=other).set(0.5)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=other)
    try:
        assert _health(_config(tmp_path, server.server_address[1])) == 1
        assert "serves no fod_alarm" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_off_is_refused_naming_the_file(tmp_path, capsys) -> None:
    cfg = _config(tmp_path, 0)
    assert _health(cfg) == 2
    assert f"{cfg}: [metrics] port = 0" in capsys.readouterr().err
