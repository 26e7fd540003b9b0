"""benchmarks/probe_look.py: a look written apart from `fod synth`, read as its sets are."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.simulate import load_sequences

from .conftest import load_script


@pytest.fixture(scope="module")
def probe_look():
    return load_script("probe_look")


def test_a_probe_set_is_deterministic_and_reads_as_a_synth_set(probe_look, tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert probe_look.main(["--out", str(a), "--containers", "4", "--seed", "3"]) == 0
    assert probe_look.main(["--out", str(b), "--containers", "4", "--seed", "3"]) == 0
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 5 and sorted(tmp_path.iterdir()) == [a, b]  # no staging left
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    containers = load_sequences(a)  # the simulator's own, checked reader
    rows = json.loads((a / "sequences.json").read_text())["containers"]
    assert [c.label for c in containers] == [r["label"] for r in rows]
    for r in rows:  # a reject holds a particle in every frame; a good one in none
        assert all(bool(f) == (r["label"] == "reject") for f in r["frames"])
    with pytest.raises(SystemExit, match="exists"):
        probe_look.main(["--out", str(a)])


def test_frames_sets_how_many_frames_a_container_has(probe_look, tmp_path: Path) -> None:
    out = tmp_path / "f12"
    assert probe_look.main(["--out", str(out), "--containers", "2", "--frames", "12"]) == 0
    rows = json.loads((out / "sequences.json").read_text())["containers"]
    assert [(r["num_frames"], len(r["frames"])) for r in rows] == [(12, 12)] * 2
    cap = cv2.VideoCapture(str(out / rows[0]["path"]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()
    with pytest.raises(SystemExit):
        probe_look.main(["--out", str(tmp_path / "one"), "--frames", "1"])


def test_a_particle_box_is_tight_around_what_it_changed(probe_look) -> None:
    """Drawn on a flat scene, a particle changes the pixels outside its box by less than
    a quarter of its contrast (the anti-aliased rim), and every edge row and column of the
    box holds a changed pixel."""
    rng = np.random.default_rng(5)
    particles = [p for _ in range(6) for p in probe_look._particles(rng, (150, 490, 80, 360))]
    assert {p.category for p in particles} == {1, 2, 3}
    for p in particles:
        img = np.full((probe_look.H, probe_look.W), 150.0)
        x, y, w, h = probe_look._tight_box(probe_look._draw_particle(img, p, 3))
        change = np.abs(img - 150.0)
        contrast = max(p.shape["dark"], p.shape.get("edge", 0.0))
        outside = np.ones_like(change, dtype=bool)
        outside[y : y + h, x : x + w] = False
        assert change[outside].max() <= 0.25 * contrast + 1e-6
        sub = change[y : y + h, x : x + w] > 0
        assert sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any()
