"""What a unit runs, named: the runtime's code by its hash, and the installed versions
against the fleet's validated ones (`fod check --constraints`)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from edge.errors import FodError
from edge.software import code_digest, drift, read_pins


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
