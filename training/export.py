"""`fod export`: checkpoint -> ONNX with raw-pixel input and dense decoded outputs.

Input `images` uint8 RGB [N, H, W, 3], or grey [N, H, W] for mono cameras (`input`
"uint8"; cast, widened and normalised inside), or the first bundles' float32
[N, 3, H, W] RGB 0-255 (`input` "float"); outputs `boxes`
[N, A, 4] xyxy input pixels and `scores` [N, A, C] after sigmoid; batch dynamic;
NMS stays outside (edge/postprocess.py). The legacy TorchScript exporter is used: the
dynamo exporter needs onnxscript, and the traced graph is plain Conv/Softmax/MatMul
that TensorRT 8.5 to 11 parse.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from edge.errors import FodError
from edge.fsutil import atomic_output, sha256_file
from edge.model_info import ModelInfo

from .checkpoint import load_detector
from .postprocess import decode_dense


class ExportModel(nn.Module):
    """The detector plus its dense decode: what the ONNX graph computes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        cls, reg = self.model(images)
        boxes, scores, _ = decode_dense(
            cls, reg, self.model.cfg.head, (images.shape[2], images.shape[3])
        )
        return boxes, scores  # [N, A, 4], [N, A, C]


INPUTS = ("uint8", "float")


def export_onnx(
    weights: Path,
    out: Path,
    size: Optional[Tuple[int, int]],
    opset: int = 17,
    simplify: bool = True,
    input: str = "uint8",
    mono: bool = False,
) -> ModelInfo:
    """Write `out` atomically; returns the metadata stored in it. `size` None: the size the
    checkpoint was trained at. `input`: "uint8" (RGB [N, H, W, 3], or grey [N, H, W] with
    `mono`) or "float" (float32 [N, 3, H, W])."""
    import onnx

    from calibration.quantize import QDQ_MIN_OPSET

    from .onnx_input import uint8_input

    if input not in INPUTS:
        raise FodError(f"--input must be one of {INPUTS}, got {input!r}")
    if mono and input != "uint8":
        raise FodError("--mono needs --input uint8 (the float input is always RGB [N, 3, H, W])")

    model, cfg, names, ckpt = load_detector(weights)
    if size is None:
        trained = ckpt.get("train_config", {}).get("size")
        if not trained:
            raise FodError(f"{weights}: records no training size: pass --size")
        size = (int(trained[0]), int(trained[1]))
    if size[0] % 32 or size[1] % 32:
        raise FodError(f"--size {size[0]}x{size[1]}: both sides must be divisible by 32")
    if opset < QDQ_MIN_OPSET:
        raise FodError(
            f"--opset {opset}: fod calibrate's per-channel INT8 (Q/DQ, as TensorRT takes it) "
            f"needs opset {QDQ_MIN_OPSET} or later"
        )
    wrapper = ExportModel(model).eval()
    x = torch.rand(1, 3, size[1], size[0]) * 255
    with torch.no_grad():
        _, _, counts = decode_dense(*model(x), cfg.head, (size[1], size[0]))
    layout = "float32_nchw" if input == "float" else ("uint8_nhw" if mono else "uint8_nhwc")
    info = ModelInfo(names, size, counts, sha256_file(weights), cfg_arch(cfg), layout)
    with atomic_output(out) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # legacy exporter on purpose
            try:
                torch.onnx.export(
                    wrapper,
                    (x,),
                    str(tmp),
                    input_names=["images"],
                    output_names=["boxes", "scores"],
                    dynamic_axes={"images": {0: "N"}, "boxes": {0: "N"}, "scores": {0: "N"}},
                    opset_version=opset,
                    dynamo=False,
                )
            except (RuntimeError, ValueError) as e:
                if "opset" not in str(e).lower():
                    raise
                raise FodError(f"--opset {opset}: this torch cannot export it ({e})") from None
        proto = onnx.load(str(tmp))
        if simplify:
            import onnxsim

            with _quiet_fds():  # onnxsim's C++ prints a line per dynamic-shape op it skips
                proto, ok = onnxsim.simplify(proto)
            if not ok:
                raise FodError(f"{weights}: onnxsim could not validate the simplified graph")
        if input == "uint8":
            proto = uint8_input(proto, mono)
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, info.to_metadata())
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return info


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Silence native stdout/stderr (not only Python's) for the duration."""
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "wb") as null:
        try:
            for fd in (1, 2):
                os.dup2(null.fileno(), fd)
            yield
        finally:
            for fd, s in zip((1, 2), saved):
                os.dup2(s, fd)
                os.close(s)


def cfg_arch(cfg) -> str:
    return f"gfl-r{cfg.backbone.depth}"
