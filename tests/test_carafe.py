"""CARAFE against a naive loop, a constant map, gradcheck in float64, and a CARAFE FPN
exported to ONNX matching PyTorch in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from training.models.carafe import CARAFE


def naive_carafe(m: CARAFE, x: torch.Tensor) -> torch.Tensor:
    """Output pixel (Y, X) = sum over the k x k neighbourhood of source (Y // s, X // s),
    zero outside the map, weighted by the kernel predicted for (Y, X)."""
    n, c, h, w = x.shape
    s, k = m.scale, m.k
    wts = m.kernels(x)  # [N, k*k, sH, sW]
    out = torch.zeros(n, c, h * s, w * s, dtype=x.dtype)
    r = k // 2
    for Y in range(h * s):
        for X in range(w * s):
            y, xx = Y // s, X // s
            for i in range(k):
                for j in range(k):
                    sy, sx = y + i - r, xx + j - r
                    if 0 <= sy < h and 0 <= sx < w:
                        out[:, :, Y, X] += x[:, :, sy, sx] * wts[:, i * k + j, Y, X][:, None]
    return out


def test_matches_a_naive_loop() -> None:
    torch.manual_seed(0)
    m = CARAFE(4, compressed=8)
    torch.nn.init.normal_(m.encoder.weight, std=0.5)  # content-dependent, far from uniform
    x = torch.randn(2, 4, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(m(x), naive_carafe(m, x), atol=1e-5, rtol=1e-5)


def test_constant_map_stays_constant_inside() -> None:
    m = CARAFE(3, compressed=8)
    torch.nn.init.normal_(m.encoder.weight, std=0.5)
    x = torch.full((1, 3, 8, 8), 2.5)
    with torch.no_grad():
        y = m(x)
    # Kernels sum to 1, so away from the zero-padded border the output is the constant.
    torch.testing.assert_close(y[:, :, 4:-4, 4:-4], torch.full_like(y[:, :, 4:-4, 4:-4], 2.5))


def test_gradcheck_float64() -> None:
    torch.manual_seed(1)
    m = CARAFE(2, compressed=4).double()
    torch.nn.init.normal_(m.encoder.weight, std=0.3)
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-5)


def test_carafe_fpn_exports_to_onnx(tmp_path: Path) -> None:
    from training.models.config import FPNConfig
    from training.models.fpn import FPN

    torch.manual_seed(2)
    fpn = FPN([16, 32, 64], FPNConfig(channels=16, upsample="carafe")).eval()
    for mod in fpn.modules():
        if isinstance(mod, CARAFE):
            torch.nn.init.normal_(mod.encoder.weight, std=0.3)
    feats = (torch.randn(1, 16, 16, 20), torch.randn(1, 32, 8, 10), torch.randn(1, 64, 4, 5))
    path = tmp_path / "fpn.onnx"
    torch.onnx.export(
        fpn,
        (list(feats),),
        str(path),
        input_names=["c3", "c4", "c5"],
        opset_version=17,
        dynamo=False,
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: f.numpy() for n, f in zip(("c3", "c4", "c5"), feats)})
    with torch.no_grad():
        want = fpn(list(feats))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=1e-4)
