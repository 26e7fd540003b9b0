"""ATSS on hand-made layouts; box encode/decode; the distribution integral."""

from __future__ import annotations

import torch

from training.assigner import atss_assign
from training.box_ops import bbox2distance, distance2bbox, grid_points, integral


def _level(size: int = 4, stride: int = 8, side: float = 16.0):
    pts, _, counts = grid_points([(size, size)], [stride], torch.device("cpu"))
    anchors = torch.cat([pts - side / 2, pts + side / 2], dim=1)
    return pts, anchors, counts


def _index(pts: torch.Tensor, x: float, y: float) -> int:
    return int(((pts[:, 0] == x) & (pts[:, 1] == y)).nonzero()[0])


def test_grid_points_are_cell_centres() -> None:
    pts, strides, counts = grid_points([(2, 3), (1, 2)], [8, 16], torch.device("cpu"))
    assert counts == [6, 2]
    assert pts[:3].tolist() == [[4.0, 4.0], [12.0, 4.0], [20.0, 4.0]]
    assert pts[6:].tolist() == [[8.0, 8.0], [24.0, 8.0]]
    assert strides.tolist() == [8.0] * 6 + [16.0] * 2


def test_atss_four_centre_anchors() -> None:
    # Points at 4, 12, 20, 28; the box centred at (16, 16) has four nearest anchors with equal
    # IoU 144/368: mean + std = that IoU, so exactly those four are positive.
    pts, anchors, counts = _level()
    got = atss_assign(anchors, counts, torch.tensor([[8.0, 8.0, 24.0, 24.0]]), topk=4)
    want = {_index(pts, x, y) for x in (12.0, 20.0) for y in (12.0, 20.0)}
    assert set(torch.nonzero(got == 0).flatten().tolist()) == want
    assert (got[list(set(range(16)) - want)] == -1).all()


def test_atss_tie_goes_to_highest_iou() -> None:
    # The anchor at (12, 12) is positive for both boxes: IoU 0.391 with A, 0.5625 with B -> B.
    pts, anchors, counts = _level()
    gt = torch.tensor([[8.0, 8.0, 24.0, 24.0], [6.0, 6.0, 18.0, 18.0]])
    got = atss_assign(anchors, counts, gt, topk=4)
    assert got[_index(pts, 12.0, 12.0)] == 1
    for x, y in ((20.0, 12.0), (12.0, 20.0), (20.0, 20.0)):
        assert got[_index(pts, x, y)] == 0
    assert (got >= 0).sum() == 4


def test_atss_centre_must_be_inside() -> None:
    # A 2x2 speck between grid points has no anchor centre inside: no positive at all.
    # (This is why tiny particles want fine strides or upscaled input.)
    _, anchors, counts = _level()
    got = atss_assign(anchors, counts, torch.tensor([[13.0, 13.0, 15.0, 15.0]]), topk=9)
    assert (got == -1).all()


def test_atss_no_boxes() -> None:
    _, anchors, counts = _level()
    assert (atss_assign(anchors, counts, torch.zeros(0, 4)) == -1).all()


def test_decode_encode_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(100, 2, generator=g) * 100
    wh = torch.rand(100, 2, generator=g) * 30 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    points = xy + wh * torch.rand(100, 2, generator=g)  # inside each box
    d = bbox2distance(points, boxes)
    assert (d >= 0).all()
    torch.testing.assert_close(distance2bbox(points, d), boxes)
    clipped = distance2bbox(points, d, max_shape=(50, 60))
    assert clipped[:, [0, 2]].max() <= 60 and clipped[:, [1, 3]].max() <= 50
    assert bbox2distance(points, boxes, max_dis=16).max() <= 16 - 0.01 + 1e-6


def test_integral_is_expectation() -> None:
    logits = torch.full((1, 4 * 17), -1e4)
    for side, b in enumerate((3, 0, 16, 7)):
        logits[0, side * 17 + b] = 0.0
    torch.testing.assert_close(integral(logits, 16), torch.tensor([[3.0, 0.0, 16.0, 7.0]]))
    uniform = integral(torch.zeros(2, 4 * 17), 16)
    torch.testing.assert_close(uniform, torch.full((2, 4), 8.0))


def _demo_anchors():
    """The ATSS anchors of the demo head at 640x384: strides 8-128, 8 strides square."""
    from training.criterion import GFLCriterion
    from training.models.config import HeadConfig

    head = HeadConfig(num_classes=3)
    sizes = [(384 // s, 640 // s) for s in head.strides]
    pts, strides, counts = grid_points(sizes, head.strides, torch.device("cpu"))
    return GFLCriterion(head).anchors(pts, strides), counts


def test_nearest_gives_every_3px_speck_a_positive() -> None:
    # A 3x3 box swept over a stride-8 cell at 1/4 px steps: plain ATSS leaves most of them
    # without any positive (no centre inside); `nearest` gives each one exactly its nearest
    # anchor, and changes nothing for a box that already had positives.
    anchors, counts = _demo_anchors()
    plain_missing = 0
    for dx in torch.arange(0, 8, 0.25):
        for dy in torch.arange(0, 8, 0.25):
            x, y = 200 + float(dx), 120 + float(dy)
            box = torch.tensor([[x, y, x + 3, y + 3]])
            plain = atss_assign(anchors, counts, box)
            near = atss_assign(anchors, counts, box, nearest=True)
            assert (near == 0).any(), (x, y)
            if (plain == 0).any():
                assert torch.equal(plain, near)
            else:
                plain_missing += 1
                assert int((near == 0).sum()) == 1
    assert plain_missing > 32 * 32 // 2


def test_stretched_target_reaches_the_anchor_point() -> None:
    from training.criterion import GFLCriterion
    from training.models.config import HeadConfig

    head = HeadConfig(num_classes=3)
    crit = GFLCriterion(head)
    sizes = [(384 // s, 640 // s) for s in head.strides]
    pts, strides, counts = grid_points(sizes, head.strides, torch.device("cpu"))
    box = torch.tensor([[201.0, 121.0, 203.0, 123.0]])  # 2x2, no centre inside
    t = crit.targets(pts, strides, counts, [{"boxes": box, "labels": torch.tensor([1])}])
    pos = torch.nonzero(t.labels[0] == 1).flatten()
    assert len(pos) == 1
    p, b = pts[pos[0]], t.boxes[0, pos[0]]
    assert b[0] <= p[0] <= b[2] and b[1] <= p[1] <= b[3]  # the point is inside its target
    assert b[0] <= 201 and b[1] <= 121 and b[2] >= 203 and b[3] >= 123  # and so is the speck
    assert float((b[2:] - b[:2]).max()) <= 2 + 8  # stretched by at most a stride
