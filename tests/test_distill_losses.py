"""Distillation losses, each on a case worked by hand, and 0 where the method says the
student equals the teacher."""

from __future__ import annotations

import math

import pytest
import torch

from training.distill_losses import (
    channel_normalize,
    feature_gap,
    feature_view,
    fgd_attention,
    fgd_global_loss,
    fgd_loss,
    fgd_masks,
    ld_loss,
    levels,
    mimic_loss,
    pkd_loss,
    quality_focal_kd,
    residual_absorbed,
    residual_loss,
    vlr_weights,
)
from training.models.adapters import ResidualAdapter, ResidualAdapters


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)  # every random case here is the same on every run


# One channel, 2x2 map: t = [1, 2, 3, 4], s = [1, 3, 2, 4]. Deviations from the mean 2.5:
# t [-1.5, -0.5, 0.5, 1.5], s [-1.5, 0.5, -0.5, 1.5]; cov 1.0, var 1.25 each -> r = 0.8.
T = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
S = torch.tensor([1.0, 3.0, 2.0, 4.0]).reshape(1, 1, 2, 2)


def test_channel_normalize() -> None:
    n = channel_normalize(T)
    want = torch.tensor([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(1.25)
    torch.testing.assert_close(n.flatten(), want, atol=1e-5, rtol=0)


def test_mimic() -> None:
    assert mimic_loss(T, T).item() == 0.0
    assert mimic_loss(torch.zeros(1, 2, 3, 3), torch.ones(1, 2, 3, 3)).item() == 1.0


def test_pkd_is_one_minus_pearson() -> None:
    assert pkd_loss(T, T).item() == pytest.approx(0.0, abs=1e-6)
    assert pkd_loss(3 * T + 2, T).item() == pytest.approx(0.0, abs=1e-6)  # affine-invariant
    assert pkd_loss(-T, T).item() == pytest.approx(2.0, abs=1e-5)  # r = -1
    assert pkd_loss(S, T).item() == pytest.approx(1 - 0.8, abs=1e-5)


def test_residual_loss() -> None:
    # On normalised maps, R = 0: (sum (ns - nt)^2 = 4 x 2 (1 - r) = 1.6) x (1 + lam)
    # / (2 N H W = 8) = 0.4
    nS, nT = channel_normalize(S), channel_normalize(T)
    zero = torch.zeros_like(S)
    assert residual_loss(nS, zero, nT, lam=1.0).item() == pytest.approx(0.4, abs=1e-5)
    # R that explains the whole difference leaves only the lam term: 1.6 / 8 = 0.2
    assert residual_loss(nS, nT - nS, nT, lam=1.0).item() == pytest.approx(0.2, abs=1e-5)
    assert residual_loss(nT, zero, nT).item() == pytest.approx(0.0, abs=1e-6)
    # Any width: at R = 0 it is (1 + lam) x PKD, so PKD's weight carries over.
    s, t = torch.randn(2, 64, 6, 7), torch.randn(2, 64, 6, 7)
    got = residual_loss(channel_normalize(s), torch.zeros_like(s), channel_normalize(t)).item()
    assert got == pytest.approx(2 * pkd_loss(s, t).item(), rel=1e-4)


def test_feature_gap_and_residual_absorbed_by_hand() -> None:
    s = [torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 1, 1)]
    t = [torch.full((1, 2, 2, 2), 2.0), torch.full((1, 2, 1, 1), 4.0)]
    assert feature_gap(s, t).item() == pytest.approx((4 + 16) / 2)  # per level, then mean
    gap = [b - a for a, b in zip(s, t)]
    assert residual_absorbed(s, [torch.zeros_like(a) for a in s], t).item() == 0.0  # R = 0
    assert residual_absorbed(s, gap, t).item() == pytest.approx(1.0)  # R = T - S: all of it
    # Half of every gap taken: ||S + R - T||^2 is a quarter of ||S - T||^2 on each level.
    assert residual_absorbed(s, [g / 2 for g in gap], t).item() == pytest.approx(0.75)
    # Overshooting by 2x widens nothing and closes nothing; 3x widens the gap.
    assert residual_absorbed(s, [2 * g for g in gap], t).item() == pytest.approx(0.0)
    assert residual_absorbed(s, [3 * g for g in gap], t).item() == pytest.approx(-3.0)
    assert residual_absorbed(t, gap, t).item() == 0.0  # no gap: nothing to take over


def test_residual_loss_on_raw_maps() -> None:
    # Raw maps, R = 0, lam = 1: exactly the mimic loss (so mimic's weight 1 applies)
    s, t = torch.randn(2, 16, 5, 6), torch.randn(2, 16, 5, 6)
    zero = torch.zeros_like(s)
    assert residual_loss(s, zero, t, lam=1.0).item() == pytest.approx(
        mimic_loss(s, t).item(), rel=1e-5
    )
    # Raw maps keep the scale the normalised ones drop: 3T + 2 is no longer T.
    z = torch.zeros_like(T)
    assert residual_loss(3 * T + 2, z, T).item() > 1.0
    assert residual_loss(
        channel_normalize(3 * T + 2), z, channel_normalize(T)
    ).item() == pytest.approx(0.0, abs=1e-5)
    # By hand: S - T = [0, 1, -1, 0] -> sum 2; R = T - S leaves the lam term: 2 / 8
    assert residual_loss(S, T - S, T).item() == pytest.approx(0.25)
    # Only the student's side learns: the teacher's map is held fixed.
    s.requires_grad_(True)
    tt = t.clone().requires_grad_(True)
    residual_loss(s, zero, tt).backward()
    assert s.grad is not None and tt.grad is None


def test_feature_views() -> None:
    s, t = torch.randn(2, 8, 5, 6) * 3 + 1, torch.randn(2, 8, 5, 6) * 2 - 1
    torch.testing.assert_close(feature_view(s, "raw"), s)
    torch.testing.assert_close(feature_view(s, "own"), channel_normalize(s))
    # By the teacher's statistics: the teacher's own view is the same as "own", the
    # student's is in the teacher's units, and S - T only changes scale per channel.
    torch.testing.assert_close(feature_view(t, "teacher", t), channel_normalize(t))
    d = feature_view(s, "teacher", t) - feature_view(t, "teacher", t)
    std = t.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    torch.testing.assert_close(d, (s - t) / std, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        feature_view(s, "teacher")
    with pytest.raises(ValueError):
        feature_view(s, "whitened")


def test_own_statistics_let_the_student_escape_by_scale() -> None:
    """Why `--features` exists: on maps normalised by their own statistics the loss does
    not see the student's scale, so its gradient falls as 1 / the student's spread (and
    steps orthogonal to the map make that spread grow); by the teacher's statistics or raw
    the pull towards the teacher stays."""
    g = torch.Generator().manual_seed(0)
    s0, t = torch.randn(2, 8, 6, 6, generator=g), torch.randn(2, 8, 6, 6, generator=g)

    def grad(features: str, scale: float) -> float:
        s = (s0 * scale).requires_grad_(True)
        v = feature_view(s, features, t)
        residual_loss(v, torch.zeros_like(v), feature_view(t, features, t)).backward()
        return s.grad.norm().item()

    assert grad("own", 10.0) == pytest.approx(grad("own", 1.0) / 10, rel=1e-3)
    assert grad("teacher", 10.0) > 5 * grad("teacher", 1.0)
    assert grad("raw", 10.0) > 5 * grad("raw", 1.0)


def test_ld_by_hand() -> None:
    # q = softmax([0, 0]) = [.5, .5], p = softmax([0, ln 3]) = [.25, .75]:
    # KL(q || p) = .5 ln 2 + .5 ln(2/3) = .5 ln(4/3); mean over 2 bins; weight 2; T = 1.
    t = torch.tensor([[0.0, 0.0]])
    s = torch.tensor([[0.0, math.log(3.0)]])
    got = ld_loss(s, t, torch.tensor([2.0]), temperature=1.0).item()
    assert got == pytest.approx(2 * 0.5 * math.log(4 / 3) / 2, rel=1e-5)
    z = torch.randn(6, 17, generator=torch.Generator().manual_seed(0))
    # Equal inputs give 0 up to float32 rounding, which T^2 = 100 amplifies.
    assert ld_loss(z, z).item() == pytest.approx(0.0, abs=1e-4)
    assert ld_loss(torch.zeros(0, 17), torch.zeros(0, 17)).item() == 0.0


def test_vlr_weights_by_hand() -> None:
    ious = torch.tensor([[0.1, 0.5], [0.3, 0.05], [0.6, 0.2]])
    thr = torch.tensor([0.4, 0.6])
    # anchor 0: 0.1 in [0.1, 0.4) and 0.5 in [0.15, 0.6) -> 0.5; anchor 1: 0.3; anchor 2:
    # 0.6 reaches box 0's threshold (a positive, not the VLR), 0.2 in [0.15, 0.6) -> 0.2.
    torch.testing.assert_close(vlr_weights(ious, thr), torch.tensor([0.5, 0.3, 0.2]))
    assert vlr_weights(torch.zeros(4, 0), torch.zeros(0)).tolist() == [0.0] * 4


def test_fgd_masks_rows_are_y() -> None:
    # A tall box: x 0..8 (1 cell at stride 8), y 0..24 (3 cells) -> mask[0:3, 0:1] = 1/3.
    fg, bg = fgd_masks(torch.tensor([[0.0, 0.0, 8.0, 24.0]]), (6, 5), 8)
    assert fg[0:3, 0].tolist() == pytest.approx([1 / 3] * 3) and fg[0, 1] == 0 and fg[3, 0] == 0
    assert (fg > 0).sum() == 3 and bg.sum().item() == pytest.approx(1.0)
    assert bg[0, 0] == 0 and bg[5, 4].item() == pytest.approx(1 / 27)
    # Overlapping boxes keep the larger value (the smaller box).
    fg2, _ = fgd_masks(torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 8.0, 8.0]]), (4, 4), 8)
    assert fg2[0, 0].item() == 1.0 and fg2[1, 1].item() == 0.25


def test_fgd_loss_by_hand() -> None:
    # C = 1, H = 1, W = 2: teacher 1 everywhere, student 0. Uniform |F| gives spatial and
    # channel attention of 1 for both; squared error 1 per cell; fg [.5, 0], bg [0, 1].
    s, t = torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2)
    fg, bg = torch.tensor([[[0.5, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    sp, ch = fgd_attention(t)
    assert sp.flatten().tolist() == [1.0, 1.0] and ch.flatten().tolist() == [1.0]
    assert fgd_loss(s, t, fg, bg).item() == pytest.approx(1e-3 * 0.5 + 5e-4 * 1.0)
    f = torch.randn(2, 4, 3, 3)
    fgm = torch.rand(2, 3, 3)
    assert fgd_loss(f, f, fgm, fgm).item() == pytest.approx(0.0, abs=1e-9)
    assert fgd_global_loss(f, f).item() == 0.0
    # lambda * sum of squares / N: two images, one cell differing by 2 each.
    g = f.clone()
    g[:, 0, 0, 0] += 2.0
    assert fgd_global_loss(g, f).item() == pytest.approx(5e-6 * 2 * 4 / 2)


def test_gc_block_adds_one_context_vector_per_image() -> None:
    from training.models.adapters import GcBlock

    torch.manual_seed(0)
    gc = GcBlock(8)
    x = torch.randn(2, 8, 5, 7)
    y = gc(x)
    assert y.shape == x.shape
    d = y - x  # the same vector added at every position of an image
    assert torch.allclose(d, d[:, :, :1, :1].expand_as(d), atol=1e-6)
    assert not torch.allclose(d[0], d[1])  # ... its own per image


def test_quality_focal_kd_by_hand() -> None:
    # sigmoid(ln 3) = .75 against a student at .5: BCE = ln 2, times |.75 - .5| = .25.
    got = quality_focal_kd(torch.tensor([[0.0]]), torch.tensor([[math.log(3.0)]])).item()
    assert got == pytest.approx(0.25 * math.log(2.0), rel=1e-5)
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    assert quality_focal_kd(z, z).abs().max().item() == pytest.approx(0.0, abs=1e-6)


def test_levels_and_teacher_gets_no_gradient() -> None:
    s = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 4, 4, 4, requires_grad=True)]
    t = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 4, 4, 4, requires_grad=True)]
    loss = levels(pkd_loss, s, t)
    loss.backward()
    assert all(x.grad is not None for x in s) and all(x.grad is None for x in t)
    with pytest.raises(ValueError):
        levels(pkd_loss, s, t[:1])


def test_residual_adapter_starts_at_zero_and_learns() -> None:
    a = ResidualAdapter(8)
    x = torch.randn(2, 8, 5, 5)
    assert a(x).abs().max().item() == 0.0  # training starts from plain imitation
    nx = channel_normalize(x)
    residual_loss(nx, a(nx), channel_normalize(torch.randn(2, 8, 5, 5))).backward()
    assert a.expand.weight.grad is not None and a.expand.weight.grad.abs().sum() > 0
    assert len(ResidualAdapters(8, 5)) == 5
