"""Model shapes, CARAFE, the paper's params/GMACs, postprocess, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from edge.errors import FodError
from fod.cli import main
from training.checkpoint import load_detector, save_checkpoint
from training.models import build_detector
from training.models.carafe import CARAFE
from training.models.config import arch_config
from training.postprocess import GFLPostprocess, PostprocessConfig

PAPER = {
    "gfl-r18": (19.1e6, 154.9),
    "gfl-r50": (32.0e6, 204.5),
}  # Table 3: trainable params, GFLOPs


@pytest.mark.parametrize("arch", sorted(PAPER))
def test_info_reproduces_paper_table3(arch: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "--arch", arch, "--num-classes", "3", "--size", "1280x800", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    params, gflops = PAPER[arch]
    assert got["params_trainable"] == pytest.approx(params, rel=0.005)
    assert got["gmacs"] == pytest.approx(gflops, rel=0.03)
    assert got["params_total"] > got["params_trainable"]  # stem + layer1 frozen


def test_forward_shapes_student_and_teacher() -> None:
    for teacher in (False, True):
        model, _, _ = build_detector(
            arch_config("gfl-r18", 3, teacher=teacher, channels=32, stacked_convs=1)
        )
        cls, reg = model.eval()(torch.rand(2, 3, 128, 160) * 255)
        assert [tuple(c.shape) for c in cls] == [
            (2, 3, 16, 20),
            (2, 3, 8, 10),
            (2, 3, 4, 5),
            (2, 3, 2, 3),
            (2, 3, 1, 2),
        ]
        assert all(r.shape[1] == 4 * 17 for r in reg)


def test_frozen_stages_and_bn_eval() -> None:
    model, _, _ = build_detector(arch_config("gfl-r18", 3, channels=32, stacked_convs=1))
    model.train()
    assert not any(p.requires_grad for p in model.backbone.stem.parameters())
    assert not any(p.requires_grad for p in model.backbone.layer1.parameters())
    assert all(p.requires_grad for p in model.backbone.layer2.parameters())
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)


def test_from_scratch_trains_every_stage_with_batch_statistics() -> None:
    # Without ImageNet weights a frozen stem is random noise and frozen BN normalises nothing.
    cfg = arch_config("gfl-r18", 3, pretrained=False, channels=32, stacked_convs=1)
    model, _, _ = build_detector(cfg)
    model.train()
    assert all(p.requires_grad for p in model.backbone.parameters())
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.training for m in bns)
    model.eval()
    assert not any(m.training for m in bns)


@pytest.mark.parametrize("arch, blocks", [("gfl-r18", 8), ("gfl-r50", 16)])
def test_zero_init_residual_makes_every_block_its_shortcut(arch: str, blocks: int) -> None:
    cfg = arch_config(
        arch, 3, pretrained=False, zero_init_residual=True, channels=32, stacked_convs=1
    )
    model, _, _ = build_detector(cfg)
    backbone = model.backbone
    layers = (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
    assert sum(len(layer) for layer in layers) == blocks
    backbone.eval()
    x = backbone.stem(torch.randn(2, 3, 64, 64))
    for layer in layers:
        for block in layer:
            shortcut = x if block.downsample is None else block.downsample(x)
            y = block(x)
            assert torch.allclose(y, F.relu(shortcut), atol=1e-6)  # relu(shortcut + 0)
            x = y


def test_carafe_uniform_kernels_are_a_box_filter() -> None:
    # With a zero encoder the kernels are uniform 1/25: each output pixel is the 5x5 mean
    # (zero padded) around its source pixel.
    up = CARAFE(8)
    torch.nn.init.zeros_(up.encoder.weight)
    x = torch.randn(1, 8, 6, 7)
    mean = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=True)
    torch.testing.assert_close(up(x), F.interpolate(mean, scale_factor=2, mode="nearest"))
    assert up.kernels(x).sum(dim=1).allclose(torch.ones(1, 12, 14))


def test_postprocess_single_peak() -> None:
    head = arch_config("gfl-r18", 2).head
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    cls = [torch.full((1, 2, h, w), -10.0) for h, w in sizes]
    reg = [torch.full((1, 4 * 17, h, w), -1e4) for h, w in sizes]
    cls[0][0, 1, 2, 3] = 3.0  # point (28, 20) at stride 8, class 1
    for side, bins in enumerate((1, 2, 1, 2)):  # distances 8, 16, 8, 16 px
        reg[0][0, side * 17 + bins, 2, 3] = 0.0
    dets = GFLPostprocess(head, PostprocessConfig())(cls, reg, (64, 64))
    assert len(dets) == 1 and dets[0]["labels"].tolist() == [1]
    torch.testing.assert_close(dets[0]["boxes"], torch.tensor([[20.0, 4.0, 36.0, 36.0]]))
    assert dets[0]["scores"].item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())


def test_checkpoint_round_trip_and_mismatch(tmp_path: Path) -> None:
    cfg = arch_config("gfl-r18", 3, channels=32, stacked_convs=1)
    model, _, _ = build_detector(cfg)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, cfg, "gfl-r18", ["a", "b", "c"])
    loaded, cfg2, names, _ = load_detector(path, arch="gfl-r18", num_classes=3)
    assert cfg2 == cfg and names == ["a", "b", "c"]
    x = torch.rand(1, 3, 256, 256) * 255
    torch.testing.assert_close(loaded(x)[0][0], model.eval()(x)[0][0])
    with pytest.raises(FodError, match="3 classes, the data has 4"):
        load_detector(path, num_classes=4)
    with pytest.raises(FodError, match="is gfl-r18, expected gfl-r50"):
        load_detector(path, arch="gfl-r50")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FodError, match=r"bad\.pt"):
        load_detector(tmp_path / "bad.pt")
    torch.save({"format": "x", "hook": _Pickled()}, tmp_path / "code.pt")  # needs its class
    with pytest.raises(FodError, match=r"code\.pt: not a checkpoint of tensors"):
        load_detector(tmp_path / "code.pt")


class _Pickled:
    """An object torch.load(weights_only=True) must refuse to unpickle."""
