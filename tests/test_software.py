"""What a unit runs, named: the runtime's code by its hash, and the installed versions
against the fleet's validated ones (`fod check --constraints`)."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.errors import FodError
from edge.software import code_digest, drift, read_pins

from .test_recorder import _wait_for
from .test_runtime import _cfg


def test_code_digest_names_the_source_that_runs(tmp_path: Path) -> None:
    (tmp_path / "pins").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "pins/b.py").write_text("y = 2\n")
    first = code_digest(tmp_path)
    (tmp_path / "a.pyc").write_bytes(b"\0")  # not source
    (tmp_path / "notes.txt").write_text("n")
    assert code_digest(tmp_path) == first
    (tmp_path / "a.py").write_text("x = 2\n")  # an edit
    assert code_digest(tmp_path) != first
    (tmp_path / "a.py").write_text("x = 1\ny = 2\n")  # the same bytes, split otherwise
    (tmp_path / "pins/b.py").write_text("")
    assert code_digest(tmp_path) != first
    assert re.fullmatch(r"[0-9a-f]{64}", code_digest()) and code_digest() != first


def test_pins_are_read_by_canonical_name_and_a_range_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pins.txt"
    path.write_text("# fleet\n\nJetson.GPIO==2.1.7\nprometheus_client == 0.26.0  # why\n")
    assert read_pins(path) == {"jetson-gpio": "2.1.7", "prometheus-client": "0.26.0"}
    wheel = "file:///opt/wheels/onnxruntime_gpu-1.16.0-cp38-cp38-linux_aarch64.whl#sha256=ab"
    path.write_text(f"onnxruntime-gpu @ {wheel}\nnumpy==1.24.4  # validated\n")
    assert read_pins(path) == {"onnxruntime-gpu": f"@ {wheel}", "numpy": "1.24.4"}
    path.write_text("numpy==2.4.6\nonnxruntime>=1.16\n")
    with pytest.raises(
        FodError, match=r"pins.txt: line 2: not an exact pin .*'onnxruntime>=1\.16'"
    ):
        read_pins(path)
    with pytest.raises(FodError, match=r"absent.txt: cannot read the pinned versions"):
        read_pins(tmp_path / "absent.txt")


def test_drift_names_each_package_off_its_pin() -> None:
    gpiozero = metadata.version("gpiozero")
    assert drift({"numpy": np.__version__, "gpiozero": gpiozero}) == []
    assert drift({"numpy": "1.21.0", "gpiozero": gpiozero, "no-such-dist": "1.0"}) == [
        "no-such-dist not installed (pinned 1.0)",
        f"numpy {np.__version__} (pinned 1.21.0)",
    ]
    # Installed under another spelling of the name: found by its canonical one.
    assert drift({"prometheus-client": metadata.version("prometheus_client")}) == []


def test_drift_of_a_package_installed_from_a_file(tmp_path: Path, monkeypatch) -> None:
    """pip freeze writes 'name @ URL' for a wheel installed from a file (a Jetson's
    onnxruntime-gpu): the URL it came from (PEP 610 direct_url.json) is what counts."""
    info = tmp_path / "fake_ort-1.16.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-ort\nVersion: 1.16.0\n")
    url = "file:///opt/wheels/fake_ort-1.16.0-cp38-cp38-linux_aarch64.whl"
    (info / "direct_url.json").write_text(json.dumps({"url": url, "archive_info": {}}))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert drift({"fake-ort": f"@ {url}"}) == [] and drift({"fake-ort": "1.16.0"}) == []
    assert drift({"fake-ort": "@ file:///elsewhere.whl"}) == [
        f"fake-ort 1.16.0 from {url} (pinned @ file:///elsewhere.whl)"
    ]
    (info / "direct_url.json").unlink()  # installed from an index after all
    assert drift({"fake-ort": f"@ {url}"}) == [f"fake-ort 1.16.0 from an index (pinned @ {url})"]


def test_a_start_that_cannot_be_recorded_never_releases_or_says_ready(
    bundle: Path, tmp_path: Path, monkeypatch
) -> None:
    """The start record fails where it is taken (the runtime's source unreadable: the code
    digest raises): the start fails before any stage runs. At the pins the gate released
    nothing and the `ready` output never came on, so the PLC reads the alarm; the same line
    with its record taken does come up ready."""
    cfg = _cfg(bundle, tmp_path, gpio={"alarm_energise_to": "ready"})
    up = MockFactory()
    with line_runtime(cfg, up):
        assert _wait_for(lambda: up.pin(cfg.gpio.alarm_pin).state, 10), "never ready"

    def unreadable(*_: object) -> str:
        raise OSError(13, "Permission denied", "edge/app.py")

    monkeypatch.setattr("edge.app.code_digest", unreadable)
    down = MockFactory()
    with pytest.raises(OSError, match="Permission denied"), line_runtime(cfg, down):
        pass
    for pin in (cfg.gpio.ejector_pin, cfg.gpio.alarm_pin):
        assert not any(s.state for s in down.pin(pin).states), pin
