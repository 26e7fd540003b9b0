"""`--ema`: the moving average of the weights, by hand, and through `fod train` (saved as
the run's weights, the last step's beside them; a resumed run ends where the run never
stopped ends)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from fod.cli import main
from training.checkpoint import load_detector
from training.engine.ema import DetectorEMA, ema_decay

from .conftest import SMALL_MODEL


def test_the_decay_is_ramped_in() -> None:
    assert ema_decay(0.998, 0) == pytest.approx(0.1)
    assert ema_decay(0.998, 10) == pytest.approx(11 / 20)
    assert ema_decay(0.998, 10**6) == 0.998
    with pytest.raises(ValueError, match="expected a value in"):
        DetectorEMA(nn.Linear(1, 1), 1.0)


def test_the_average_of_three_steps_by_hand() -> None:
    """The first update copies the weights; then w <- d w + (1 - d) w_new with d ramped
    (0.1, then 2/11); BatchNorm's running mean is averaged, its batch counter copied."""
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    ema = DetectorEMA(net, 0.99)
    seen = []
    for w, mean, batches in [(1.0, 0.0, 1), (2.0, 10.0, 2), (4.0, 20.0, 3)]:
        with torch.no_grad():
            net[0].weight.fill_(w)
            net[1].running_mean.fill_(mean)
            net[1].num_batches_tracked.fill_(batches)
        ema.update(net)
        seen.append(ema.module[0].weight.item())
    d1, d2 = 0.1, 2 / 11
    w2 = d1 * 1.0 + (1 - d1) * 2.0
    assert seen == pytest.approx([1.0, w2, d2 * w2 + (1 - d2) * 4.0])
    m2 = (1 - d1) * 10.0
    assert ema.module[1].running_mean.item() == pytest.approx(d2 * m2 + (1 - d2) * 20.0)
    assert ema.module[1].num_batches_tracked.item() == 3 and ema.updates == 3
    assert net[0].weight.item() == 4.0  # the trained module is not touched


def test_fod_train_saves_the_average_and_resumes_it(small_set: Path, tmp_path: Path) -> None:
    """Two epochs of 3 batches with --ema: last.pt's weights (what eval, export and --init
    read) are the average, the last step's are kept for --resume; a run cut at iteration
    4 and resumed ends with both equal to the uninterrupted run's."""

    def run(name: str, *more: str) -> Path:
        out = tmp_path / name
        args = ["train", "--data", str(small_set), "--out", str(out), "--epochs", "2"]
        args += ["--batch", "4", "--warmup-iters", "2", "--ema", "0.9", *SMALL_MODEL]
        assert main([*args, *more]) == 0
        return out / "last.pt"

    whole = run("whole")
    model, _, _, ckpt = load_detector(whole)  # strict: the average is a plain detector
    raw = ckpt["train_state_dict"]
    assert ckpt["ema_updates"] == 6 and ckpt["ema_decay"] == 0.9
    assert json.loads((tmp_path / "whole" / "metrics.json").read_text())["ema"] == 0.9
    differ = [k for k, v in model.state_dict().items() if v.is_floating_point()]
    assert any(not torch.equal(model.state_dict()[k], raw[k]) for k in differ)
    cut = run("cut", "--max-iters", "4")
    assert load_detector(cut)[3]["ema_updates"] == 4
    resumed = run("cut", "--resume", str(cut))
    r_model, _, _, r_ckpt = load_detector(resumed)
    for k, v in model.state_dict().items():
        assert torch.allclose(r_model.state_dict()[k], v, atol=1e-6), k
        assert torch.equal(r_ckpt["train_state_dict"][k], raw[k]), k


def test_an_ema_decay_out_of_range_is_refused(small_set: Path, tmp_path: Path, capsys) -> None:
    args = ["train", "--data", str(small_set), "--out", str(tmp_path / "r"), "--ema", "1.5"]
    assert main([*args, *SMALL_MODEL]) == 2
    assert "--ema 1.5: expected a decay in (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
