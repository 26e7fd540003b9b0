"""`fod rollout` on local folders standing for stations: a failed verify, engine, check or
health probe (the service down, or up with its alarm raised) leaves `current` where it was
and the previous bundle running; the runtime accepts the older bundle only with the
rollout's permit."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from edge.app import ROLLBACK_PERMIT, check_rollback
from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.bundle import create_bundle
from edge.errors import FodError
from fod.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models/demo/model.int8-cpu.onnx"
DEMO_REFERENCE = ROOT / "models/demo/reference.npz"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    k = tmp_path_factory.mktemp("keys")
    assert main(["keygen", "--out", str(k)]) == 0
    return k


def make_bundle(out: Path, version: str, keys: Path, model: Path = DEMO_MODEL, sign=True):
    meta = {"name": "line-a", "version": version, "classes": ["fiber", "particle", "glass_flake"]}
    return create_bundle(
        out, {"int8_cpu": model}, meta, sign_key=keys / "fod_signing.key" if sign else None
    )


def station(tmp: Path, keys: Path) -> Path:
    """A station folder: state root, a line config whose model is root/current, and a fake
    service (restart counts, the probe fails while a 'crash' bundle is current)."""
    root = tmp / "state"
    root.mkdir(parents=True)
    (tmp / "line.toml").write_text(
        f"""
[camera]
mono = true  # the demo model takes grey frames: a colour camera fails the rollout's check
[model]
bundle = "{root / "current"}"
public_key = "{keys / "fod_signing.pub"}"
[gpio]
pin_factory = "mock"
[audit]
folder = "{root / "audit"}"
[metrics]
port = 0
"""
    )
    return root


def rollout(tmp: Path, bundle: Path, *extra: str) -> dict:
    root = tmp / "state"
    restart = f"sh -c 'echo restart >> {tmp / 'restarts'}'"
    probe = f"sh -c '! grep -q crash {root / 'current' / 'manifest.json'}'"
    args = [
        "rollout",
        "--bundle",
        str(bundle),
        "--root",
        str(root),
        "--config",
        str(tmp / "line.toml"),
        "--settle",
        "0",
        "--restart-cmd",
        restart,
        "--probe-cmd",
        probe,
        "--json",
        *extra,
    ]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(args)
    res = json.loads(out.getvalue())
    res["rc"] = rc
    return res


def current_version(root: Path) -> str:
    return json.loads((root / "current" / "manifest.json").read_text())["version"]


def test_install_then_upgrade(tmp_path, keys) -> None:
    root = station(tmp_path, keys)
    r = rollout(tmp_path, make_bundle(tmp_path / "b1", "1.0.0", keys))
    assert (r["status"], r["rc"]) == ("done", 0) and current_version(root) == "1.0.0"
    assert [s["step"] for s in r["steps"]] == ["stage", "check", "switch", "restart", "probe"]
    r = rollout(tmp_path, make_bundle(tmp_path / "b2", "1.1.0", keys))
    assert r["status"] == "done" and current_version(root) == "1.1.0"
    prev = json.loads((root / "previous" / "manifest.json").read_text())["version"]
    assert prev == "1.0.0"
    again = rollout(tmp_path, tmp_path / "b2")
    assert again["status"] == "unchanged" and again["rc"] == 0
    journal = [json.loads(ln) for ln in (root / "rollouts.jsonl").read_text().splitlines()]
    assert len(journal) == 5 + 5 + 2 and all(e["ok"] for e in journal)
    assert (tmp_path / "restarts").read_text().count("restart") == 2


def _refused(tmp_path: Path, bundle: Path, step: str, *extra: str) -> dict:
    root = tmp_path / "state"
    before = (root / "current").resolve()
    r = rollout(tmp_path, bundle, *extra)
    assert (r["status"], r["rc"]) == ("refused", 1), r
    assert r["steps"][-1]["step"] == step and not r["steps"][-1]["ok"]
    assert (root / "current").resolve() == before and current_version(root) == "1.0.0"
    assert (tmp_path / "restarts").read_text().count("restart") == 1  # never restarted
    return r


def test_failed_verify_engine_or_check_leaves_current(tmp_path, keys) -> None:
    station(tmp_path, keys)
    assert rollout(tmp_path, make_bundle(tmp_path / "b1", "1.0.0", keys))["status"] == "done"
    tampered = make_bundle(tmp_path / "t", "1.1.0", keys)
    (tampered / "model.int8-cpu.onnx").write_bytes(DEMO_MODEL.read_bytes()[:-10])
    assert "sha256" in _refused(tmp_path, tampered, "stage")["steps"][-1]["detail"]
    unsigned = make_bundle(tmp_path / "u", "1.1.0", keys, sign=False)
    assert "unsigned" in _refused(tmp_path, unsigned, "stage")["steps"][-1]["detail"]
    garbage = tmp_path / "garbage" / "model.int8-cpu.onnx"
    garbage.parent.mkdir()
    garbage.write_bytes(b"not an onnx model")
    broken = make_bundle(tmp_path / "g", "1.1.0", keys, model=garbage)
    assert "not a readable ONNX model" in _refused(tmp_path, broken, "check")["steps"][-1]["detail"]
    # A unit that must build a TensorRT engine and cannot (no TensorRT here).
    ok = make_bundle(tmp_path / "e", "1.1.0", keys)
    assert "tensorrt" in _refused(tmp_path, ok, "engine", "--engine")["steps"][-1]["detail"]
    # A line whose camera gives colour frames cannot run the grey model: `fod run` would
    # refuse to start, so the check refuses before the switch.
    line = tmp_path / "line.toml"
    line.write_text(line.read_text().replace("mono = true", "mono = false"))
    assert "camera.mono" in _refused(tmp_path, ok, "check")["steps"][-1]["detail"]


def test_a_unit_off_the_fleets_pinned_versions_takes_no_bundle(tmp_path, keys) -> None:
    """`--constraints`: the unit's numpy moved off the fleet's validated version (upgraded
    by hand): refused at the check, before the switch; back on it, the same bundle goes in."""
    station(tmp_path, keys)
    assert rollout(tmp_path, make_bundle(tmp_path / "b1", "1.0.0", keys))["status"] == "done"
    pins = tmp_path / "fleet-constraints.txt"
    pins.write_text("numpy==1.21.0\n")
    ok = make_bundle(tmp_path / "b2", "1.1.0", keys)
    detail = _refused(tmp_path, ok, "check", "--constraints", str(pins))["steps"][-1]["detail"]
    assert (
        detail == f"check software: not as pinned by {pins}: numpy {np.__version__} (pinned 1.21.0)"
    )
    pins.write_text(f"numpy=={np.__version__}\n")
    assert rollout(tmp_path, ok, "--constraints", str(pins))["status"] == "done"
    assert current_version(tmp_path / "state") == "1.1.0"


def test_a_model_blind_to_its_reference_frames_is_refused(tmp_path, keys, monkeypatch) -> None:
    """A bundle with the demo's reference frames, on a unit whose engine is miscalibrated
    (every score a fifth of the model's: outputs no health check flags): refused at the
    check, the running bundle left current; on a sound engine the same bundle goes in."""
    root = station(tmp_path, keys)
    assert rollout(tmp_path, make_bundle(tmp_path / "b1", "1.0.0", keys))["status"] == "done"
    meta = {
        "name": "line-a",
        "version": "1.1.0",
        "classes": ["fiber", "particle", "glass_flake"],
        "reference": json.loads((ROOT / "models/demo/manifest.json").read_text())["reference"],
    }
    files = {"int8_cpu": DEMO_MODEL, "reference": DEMO_REFERENCE}
    seeing = create_bundle(tmp_path / "r", files, meta, sign_key=keys / "fod_signing.key")
    run = OnnxRuntimeBackend.run

    def dim(self, x):
        boxes, scores = run(self, x)
        return boxes, scores * np.float32(0.2)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", dim)
    detail = _refused(tmp_path, seeing, "check")["steps"][-1]["detail"]
    assert "blind to its reference frames: found 0 of 22" in detail
    monkeypatch.undo()
    assert rollout(tmp_path, seeing)["status"] == "done" and current_version(root) == "1.1.0"


def test_failed_health_probe_rolls_back_with_a_permit(tmp_path, keys) -> None:
    root = station(tmp_path, keys)
    assert rollout(tmp_path, make_bundle(tmp_path / "b1", "1.0.0", keys))["status"] == "done"
    r = rollout(tmp_path, make_bundle(tmp_path / "c", "2.0.0-crash", keys))
    assert (r["status"], r["rc"]) == ("rolled_back", 1)
    steps = [(s["step"], s["ok"]) for s in r["steps"]]
    assert steps == [
        ("stage", True),
        ("check", True),
        ("switch", True),
        ("restart", True),
        ("probe", False),
        ("rollback", True),
        ("rollback probe", True),
    ]
    assert current_version(root) == "1.0.0"
    assert (tmp_path / "restarts").read_text().count("restart") == 3
    permit = json.loads((root / "audit" / ROLLBACK_PERMIT).read_text())
    assert (permit["name"], permit["version"]) == ("line-a", "1.0.0")
    assert "failed after the switch" in permit["reason"]


class AlarmEndpoint:
    """The service's metrics as the runtime serves them (prometheus_client's own server):
    fod_alarm is 1 while a bundle whose version says "alarm" is current - one that starts,
    then rejects every container (too slow for the gate, bad outputs) and raises its alarm;
    the supervisor's heartbeat is a minute old while one whose version says "hung" is - its
    endpoint answers with the alarm down, its supervisor no longer goes round."""

    def __init__(self, root: Path) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.root = root
        registry = CollectorRegistry()
        registry.register(self)
        self.server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
        self.port = self.server.server_address[1]

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        version = current_version(self.root) if (self.root / "current").exists() else ""
        yield GaugeMetricFamily("fod_alarm", "alarm", value=float("alarm" in version))
        beat = time.time() - (60 if "hung" in version else 0)
        yield GaugeMetricFamily("fod_heartbeat_timestamp_seconds", "beat", value=beat)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _serve_metrics(tmp_path: Path, port: int) -> None:
    line = tmp_path / "line.toml"
    line.write_text(line.read_text().replace("port = 0", f"port = {port}"))


@pytest.fixture
def watched(tmp_path, keys):
    """A station whose line config reads the stand-in service's metrics, with 1.0.0 rolled
    out: yields the state folder."""
    root = station(tmp_path, keys)
    service = AlarmEndpoint(root)
    try:
        _serve_metrics(tmp_path, service.port)
        assert rollout(tmp_path, make_bundle(tmp_path / "b1", "1.0.0", keys))["status"] == "done"
        yield root
    finally:
        service.close()


def test_a_bundle_that_raises_the_alarm_is_rolled_back(tmp_path, keys, watched) -> None:
    r = rollout(tmp_path, make_bundle(tmp_path / "a", "2.0.0-alarm", keys))
    assert (r["status"], r["rc"]) == ("rolled_back", 1), r
    probe = [s for s in r["steps"] if s["step"] == "probe"]
    assert not probe[0]["ok"] and "fod_alarm 1" in probe[0]["detail"]
    assert r["steps"][-1] == {**r["steps"][-1], "step": "rollback probe", "ok": True}
    assert current_version(watched) == "1.0.0"
    # Opted out, the same bundle stays: the probe command alone says the service is up.
    r = rollout(tmp_path, tmp_path / "a", "--no-alarm-probe")
    assert r["status"] == "done" and current_version(watched) == "2.0.0-alarm"


def test_a_bundle_whose_supervisor_hangs_is_rolled_back(tmp_path, keys, watched) -> None:
    r = rollout(tmp_path, make_bundle(tmp_path / "h", "2.0.0-hung", keys))
    assert (r["status"], r["rc"]) == ("rolled_back", 1), r
    probe = next(s for s in r["steps"] if s["step"] == "probe")
    assert not probe["ok"] and "supervisor last went round 60 s ago" in probe["detail"]
    assert current_version(watched) == "1.0.0"
    r = rollout(tmp_path, tmp_path / "h", "--max-age", "90")  # a looser limit: it stays
    assert r["status"] == "done" and current_version(watched) == "2.0.0-hung"


def test_a_step_that_crashes_after_the_switch_is_rolled_back(tmp_path, keys) -> None:
    """Not only the errors a step expects: a bug in the probe after the switch (here a
    RuntimeError) still rolls back, journalled with its type."""
    from edge.rollout import Rollout, RolloutConfig

    root = station(tmp_path, keys)
    assert rollout(tmp_path, make_bundle(tmp_path / "b1", "1.0.0", keys))["status"] == "done"

    class Buggy(Rollout):
        def restart(self) -> None:
            pass

        def probe(self) -> None:
            if "bug" in current_version(root):
                raise RuntimeError("probe crashed")

    cfg = RolloutConfig(root, tmp_path / "line.toml", keys / "fod_signing.pub")
    res = Buggy(cfg).run(make_bundle(tmp_path / "x", "2.0.0-bug", keys))
    assert res.status == "rolled_back" and current_version(root) == "1.0.0"
    probe = next(s for s in res.steps if s["step"] == "probe")
    assert not probe["ok"] and probe["detail"] == "RuntimeError: probe crashed"

    # A probe that crashes on the way back too: failed (exit 3), journalled, no traceback.
    class AlwaysBuggy(Buggy):
        def probe(self) -> None:
            raise RuntimeError("probe crashed")

    res = AlwaysBuggy(cfg).run(tmp_path / "x")
    assert (res.status, res.exit_code) == ("failed", 3) and current_version(root) == "1.0.0"
    assert res.steps[-1]["step"] == "rollback" and "RuntimeError" in res.steps[-1]["detail"]


class NotHttp:
    """Something else on the metrics port: it answers each connection with a line of text."""

    def __init__(self) -> None:
        import socketserver
        import threading

        class Reply(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(b"hello\r\n")

        self.server = socketserver.TCPServer(("127.0.0.1", 0), Reply)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("there", ["nothing", "not http"])
def test_a_service_up_without_its_metrics_fails_the_probe(tmp_path, keys, there) -> None:
    station(tmp_path, keys)
    service = NotHttp()
    if there == "nothing":
        service.close()  # the port is free again: nothing answers there
    try:
        _serve_metrics(tmp_path, service.port)
        r = rollout(tmp_path, make_bundle(tmp_path / "b1", "1.0.0", keys))
    finally:
        if there != "nothing":
            service.close()
    assert (r["status"], r["rc"]) == ("failed", 3)  # a first install: nothing to go back to
    probe = next(s for s in r["steps"] if s["step"] == "probe")
    assert not probe["ok"] and "did not answer" in probe["detail"], probe


def test_runtime_takes_an_older_bundle_only_with_its_permit(tmp_path) -> None:
    folder = tmp_path / "audit"
    check_rollback({"name": "line-a", "version": "2.0.0"}, folder, False)
    old = {"name": "line-a", "version": "1.0.0"}
    with pytest.raises(FodError, match=r"older than 2\.0\.0"):
        check_rollback(old, folder, False)
    (folder / ROLLBACK_PERMIT).write_text(json.dumps({"name": "line-a", "version": "1.5.0"}))
    with pytest.raises(FodError, match=r"older than 2\.0\.0"):  # a permit for another version
        check_rollback(old, folder, False)
    (folder / ROLLBACK_PERMIT).write_text(
        json.dumps({"name": "line-a", "version": "1.0.0", "by": "fod rollout", "reason": "x"})
    )
    check_rollback(old, folder, False)  # permitted once ...
    assert not (folder / ROLLBACK_PERMIT).exists()  # ... and consumed
    assert json.loads((folder / "last-bundle.json").read_text())["version"] == "1.0.0"


def test_first_install_that_fails_its_probe_has_nothing_to_go_back_to(tmp_path, keys) -> None:
    root = station(tmp_path, keys)
    r = rollout(tmp_path, make_bundle(tmp_path / "c", "1.0.0-crash", keys))
    assert (r["status"], r["rc"]) == ("failed", 3)
    assert r["steps"][-1]["step"] == "rollback" and "no previous" in r["steps"][-1]["detail"]
    shutil.rmtree(root)
