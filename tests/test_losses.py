"""QFL, DFL, GIoU: hand-computed cases; the criterion on empty targets."""

from __future__ import annotations

import math

import pytest
import torch

from training.criterion import GFLCriterion
from training.losses import distribution_focal_loss, giou_loss, quality_focal_loss
from training.models.config import HeadConfig


def test_qfl_hand_computed() -> None:
    # class 0 negative: BCE(0, 0) * sigmoid(0)^2 = ln2 * 0.25
    # class 1 positive, target 0.5: BCE(1, 0.5) * |0.5 - sigmoid(1)|^2
    s1 = 1 / (1 + math.exp(-1))
    bce = -(0.5 * math.log(s1) + 0.5 * math.log(1 - s1))
    want = math.log(2) * 0.25 + bce * (0.5 - s1) ** 2
    got = quality_focal_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([1]), torch.tensor([0.5]))
    assert got.shape == (1,)
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert want == pytest.approx(0.216705, abs=1e-6)


def test_qfl_all_background_finite() -> None:
    logits = torch.randn(50, 3)
    loss = quality_focal_loss(logits, torch.full((50,), 3), torch.zeros(50), reduction="sum")
    assert torch.isfinite(loss) and loss > 0
    # background only: every class is a negative with target 0
    want = (torch.nn.functional.softplus(logits) * logits.sigmoid() ** 2).sum()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_dfl_hand_computed() -> None:
    # uniform over 3 bins: CE = ln 3 on both neighbours, weights 0.75 + 0.25
    got = distribution_focal_loss(torch.zeros(1, 3), torch.tensor([0.25]))
    assert got.item() == pytest.approx(math.log(3), rel=1e-6)
    # logits [2, 0, 0], target 0.5: 0.5 * CE(bin 0) + 0.5 * CE(bin 1)
    z = math.exp(2) + 2
    want = 0.5 * -math.log(math.exp(2) / z) + 0.5 * -math.log(1 / z)
    got = distribution_focal_loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0.5]))
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert want == pytest.approx(1.239545, abs=1e-6)


def test_giou_hand_computed_and_empty() -> None:
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    # disjoint: IoU 0, hull 3, union 2 -> GIoU -1/3, loss 4/3; identical: loss 0
    torch.testing.assert_close(giou_loss(a, b), torch.tensor([4 / 3, 0.0]))
    assert giou_loss(torch.zeros(0, 4), torch.zeros(0, 4), reduction="sum").item() == 0.0


def _head_outputs(n: int, c: int, reg_max: int, sizes, requires_grad: bool = True):
    torch.manual_seed(0)
    cls = [torch.randn(n, c, h, w, requires_grad=requires_grad) for h, w in sizes]
    reg = [torch.randn(n, 4 * (reg_max + 1), h, w, requires_grad=requires_grad) for h, w in sizes]
    return cls, reg


def test_criterion_empty_targets() -> None:
    head = HeadConfig(num_classes=3)
    crit = GFLCriterion(head)
    cls, reg = _head_outputs(2, 3, head.reg_max, [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)])
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    losses = crit(cls, reg, empty)
    assert losses["loss_giou"].item() == 0.0
    assert losses["loss_dfl"].item() == 0.0
    assert torch.isfinite(losses["loss_qfl"]) and losses["loss_qfl"] > 0
    sum(losses.values()).backward()  # the graph stays intact without boxes
    assert cls[0].grad is not None and reg[0].grad is not None


def test_criterion_with_boxes() -> None:
    head = HeadConfig(num_classes=3)
    crit = GFLCriterion(head)
    cls, reg = _head_outputs(1, 3, head.reg_max, [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)])
    gt = [{"boxes": torch.tensor([[10.0, 12.0, 30.0, 28.0]]), "labels": torch.tensor([2])}]
    losses = crit(cls, reg, gt)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    # only the positives' box logits receive a box-loss gradient
    assert reg[0].grad.abs().sum() > 0
