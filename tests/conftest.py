from __future__ import annotations

import os
import subprocess
import sys
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


def torchrun(*fod_args: str) -> subprocess.CompletedProcess:
    """`fod ...` under torchrun with two CPU processes (gloo), one thread each."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "fod", *fod_args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
