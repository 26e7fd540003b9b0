from __future__ import annotations

from pathlib import Path

import pytest

from training.data.synth import SynthConfig
from training.data.synth_writer import write_synthetic_set

SMALL = SynthConfig(width=320, height=256, frames=5)


@pytest.fixture(scope="session")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic set shared by tests that only read it."""
    out = tmp_path_factory.mktemp("synth") / "set"
    write_synthetic_set(out, images=12, sequences=4, cfg=SMALL, seed=7, progress=False)
    return out
