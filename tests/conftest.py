from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from training.data.synth import SynthConfig
from training.data.synth_writer import write_synthetic_set

SMALL = SynthConfig(width=320, height=256, frames=5)
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def free_port() -> int:
    """A loopback TCP port nothing listens on (free when asked; the caller binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_script(name: str):
    """benchmarks/NAME.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


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
