"""`fod train --amp` on the CPU: bfloat16 autocast (native on AMX / AVX512-BF16 CPUs), no
loss scaler; float32 stays the CPU's default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fod.cli import main
from training.checkpoint import load_detector
from training.engine.loop import cpu_bf16_native, forward_detector
from training.models import build_detector
from training.models.config import arch_config

from .conftest import SMALL_MODEL
from .test_train import _fixed_batch


def test_cpu_autocast_is_bfloat16_only_when_asked(trained: Path) -> None:
    torch.manual_seed(0)
    model, _, _ = build_detector(arch_config("gfl-r18", 3, channels=32, stacked_convs=1))
    x = torch.rand(2, 3, 128, 160) * 255
    cpu = torch.device("cpu")
    cls, _ = forward_detector(model.eval(), x, True, cpu)
    assert cls[0].dtype == torch.bfloat16
    cls, _ = forward_detector(model, x, False, cpu)
    assert cls[0].dtype == torch.float32
    summary = json.loads((trained / "metrics.json").read_text())  # a CPU run without --amp
    assert summary["amp"] is False and summary["amp_dtype"] is None


def test_bf16_training_on_the_cpu_trains(small_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "bf16"
    args = ["train", "--data", str(small_set), "--out", str(out), "--epochs", "100"]
    args += ["--max-iters", "40", "--batch", "2", "--lr", "0.01", "--warmup-iters", "5"]
    # 160x128, batch 2: bfloat16 is emulated, about 13 s an iteration of 4 at 320x256, on
    # CPUs without it (the fixed batch's loss falls to 0.82 of its start here, 0.78 at batch 4)
    assert main([*args, *SMALL_MODEL, "--size", "160x128", "--device", "cpu", "--amp"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["amp"] is True and summary["amp_dtype"] == "bfloat16"
    # The saved weights are float32 and lower the loss of a fixed batch, judged in float32.
    x, gts = _fixed_batch(small_set, size=(160, 128))
    torch.manual_seed(0)  # the trainer's initial weights
    before, crit, _ = build_detector(arch_config("gfl-r18", 3, channels=32, stacked_convs=1))
    after, _, _, _ = load_detector(out / "last.pt")
    assert all(p.dtype == torch.float32 for p in after.parameters())
    with torch.no_grad():
        l0 = sum(crit(*before.eval()(x), gts).values()).item()
        l1 = sum(crit(*after(x), gts).values()).item()
    assert l1 < 0.9 * l0, (l0, l1)


@pytest.mark.parametrize(
    "flags, native",
    [("fpu avx2 avx512f amx_bf16 amx_int8", True), ("avx2 avx512_bf16", True), ("avx2 fma", False)],
)
def test_bf16_hardware_from_cpu_flags(flags: str, native: bool) -> None:
    assert cpu_bf16_native(f"flags\t\t: {flags}\n") is native
