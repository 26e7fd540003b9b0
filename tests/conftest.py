from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edge.bundle import open_bundle
from fod.cli import main
from fod.line import DEMO_BUNDLE
from training.checkpoint import save_checkpoint
from training.data.synth import SynthConfig
from training.data.synth_writer import write_synthetic_set
from training.models import build_detector
from training.models.config import arch_config

SMALL = SynthConfig(width=320, height=256, frames=5)
SMALL_MODEL = [
    "--fpn-channels", "32", "--stacked-convs", "1", "--size", "320x256", "--workers", "0"
]  # fmt: skip
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


# The models below are built once per session and only read: one copy on disk and one build,
# where a module-scoped copy in each of the 20+ modules that use them cost gigabytes of /tmp.


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """A small random-weight detector whose scores spread over (0, 1), exported to ONNX."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    cfg = arch_config("gfl-r18", 3, channels=32, stacked_convs=1)
    model, _, post = build_detector(cfg)
    with torch.no_grad():  # lively scores and boxes instead of the 0.01 prior
        model.head.gfl_cls.bias.uniform_(-2.0, 1.0)
        model.head.gfl_cls.weight.mul_(30)
        model.head.gfl_reg.weight.mul_(30)
    ckpt = root / "m.pt"
    save_checkpoint(ckpt, model, cfg, "gfl-r18", ["fiber", "particle", "glass_flake"])
    onnx_path = root / "m.onnx"
    argv = ["export", "--weights", str(ckpt), "--out", str(onnx_path), "--size", "320x256"]
    assert main(argv) == 0
    return model.eval(), post, ckpt, onnx_path


@pytest.fixture(scope="session")
def bundle(exported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`exported` as an unsigned bundle, the runtime tests' model."""
    out = tmp_path_factory.mktemp("bundle") / "b"
    assert main(["bundle", "make", "--onnx", str(exported[3]), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def calibrated(exported, small_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`exported` through `fod calibrate` on `small_set` (the output folder)."""
    out = tmp_path_factory.mktemp("cal") / "cal"
    argv = ["calibrate", "--onnx", str(exported[3]), "--data", str(small_set), "--out", str(out),
            "--images", "10", "--method", "minmax", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0  # 10 images: five chunks of 2, histograms fold chunk by chunk
    return out


@pytest.fixture(scope="session")
def trained(small_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GFL-R18 trained 30 iterations on `small_set` (the run folder)."""
    out = tmp_path_factory.mktemp("run") / "run"
    argv = ["train", "--data", str(small_set), "--out", str(out), "--epochs", "100",
            "--max-iters", "30", "--batch", "4", "--lr", "0.01", "--warmup-iters", "5"]  # fmt: skip
    assert main([*argv, *SMALL_MODEL]) == 0
    return out


@pytest.fixture(scope="session")
def ref_bundle(tmp_path_factory) -> Path:
    """The demo's INT8-CPU model bundled with 4 reference frames of fresh `random` images."""
    if not DEMO_BUNDLE.exists():
        pytest.skip("no models/demo in this tree")
    work = tmp_path_factory.mktemp("ref")
    argv = ["synth", "--out", str(work / "set"), "--images", "8", "--sequences", "0"]
    assert main([*argv, "--size", "640x384", "--seed", "77", "--look", "random"]) == 0
    with open_bundle(DEMO_BUNDLE) as b:
        model = b.file("int8_cpu")
        argv = ["bundle", "make", "--int8-cpu", str(model), "--out", str(work / "b")]
        assert main([*argv, "--reference", str(work / "set"), "--reference-images", "4"]) == 0
    return work / "b"


def torchrun(*fod_args: str) -> subprocess.CompletedProcess:
    """`fod ...` under torchrun with two CPU processes (gloo), one thread each."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "fod", *fod_args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
