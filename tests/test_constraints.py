"""The test command installs pinned versions (.ci/constraints.txt) within pyproject's ranges,
and the README's test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from edge.errors import FodError
from edge.software import read_pins

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / ".ci/constraints.txt"
EXTRAS = ("train", "edge", "dev")  # what the test command installs


def _requirements() -> list:
    """pyproject's base requirements and the test command's extras, as they apply here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [(Requirement(r), "") for r in project["dependencies"]]
    reqs += [(Requirement(r), e) for e in EXTRAS for r in project["optional-dependencies"][e]]
    env = default_environment()
    return [r for r, e in reqs if r.marker is None or r.marker.evaluate({**env, "extra": e})]


def test_every_requirement_is_pinned_within_its_range() -> None:
    pins = read_pins(CONSTRAINTS)  # as `fod check --constraints` reads a fleet's pins
    reqs = _requirements()
    assert {r.name for r in reqs} >= {"torch", "onnxruntime", "gpiozero", "ruff", "pytest"}
    for r in reqs:
        version = pins.get(canonicalize_name(r.name))
        assert version is not None, f"{r.name} floats: not in {CONSTRAINTS.name}"
        assert not version.startswith("@"), f"{r.name}: pinned by URL, not a version"
        assert r.specifier.contains(version, prereleases=True), (str(r), version)


def _test_command() -> str:
    """The README's test command: the code block after the 'Tests (what `.ci/run` runs' line."""
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"^Tests \(what `\.ci/run` runs.*?```bash\n(.+?)\n```", readme, re.S | re.M)
    assert m, "README: no test command block"
    return m.group(1).strip()


def test_ci_runs_the_readmes_test_command_with_the_pins() -> None:
    command = _test_command()
    ci = [ln for ln in (ROOT / ".ci/run").read_text().splitlines() if ln.startswith("python3")]
    assert ci == [command]
    assert "pip install -q -c .ci/constraints.txt -e '.[train,edge,dev]'" in command
    # The stubs go in with --no-deps, beside the pins: the same release in both places.
    stubs = re.search(r"tensorrt-stubs==(\S+)", command)
    assert stubs and read_pins(CONSTRAINTS)["tensorrt-stubs"] == stubs.group(1)


def test_a_range_is_not_a_pin(tmp_path: Path) -> None:
    path = tmp_path / "constraints.txt"
    path.write_text("# a comment\n\nnumpy>=1.21\n")
    with pytest.raises(FodError, match=r"not an exact pin 'name==version': 'numpy>=1\.21'"):
        read_pins(path)
    path.write_text("NumPy==2.4.6  # why\n")
    assert read_pins(path) == {"numpy": "2.4.6"}
