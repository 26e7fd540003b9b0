"""`fod bench --backend torch`: a PyTorch detector behind the bench's backend interface,
for the paper's FPS figure on a workstation GPU (FP16; compiled by torch-tensorrt where
it is installed). On a machine without CUDA it runs FP32 on the CPU, and says so.

The model is a checkpoint, or an architecture name (gfl-r18, gfl-r50, gfl-r101, and
`-carafe` for the teacher's FPN) with random weights: speed does not depend on them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from edge.errors import FodError
from edge.model_info import ModelInfo
from edge.preprocess import model_input
from edge.timing import clock

from .checkpoint import load_detector
from .export import ExportModel, cfg_arch
from .models import build_detector
from .models.config import arch_config
from .postprocess import decode_dense

log = logging.getLogger(__name__)
ARCHS = ("gfl-r18", "gfl-r50", "gfl-r101")


def load_model(spec: str, num_classes: int = 3) -> Tuple[torch.nn.Module, str]:
    """(detector, label) from a checkpoint path or an architecture name."""
    name = spec.removesuffix("-carafe")
    if name in ARCHS:
        cfg = arch_config(name, num_classes, teacher=spec.endswith("-carafe"))
        model = build_detector(cfg)[0]
        return model, spec + " (random weights)"
    path = Path(spec)
    if not path.is_file():
        raise FodError(f"{spec}: neither a checkpoint nor one of {ARCHS} (+ '-carafe')")
    model = load_detector(path)[0]
    return model, f"{path.name} ({cfg_arch(model.cfg)})"


class TorchBackend:
    def __init__(self, spec: str, size: Tuple[int, int], device: str = "auto") -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        model, self.label = load_model(spec)
        cfg = model.cfg
        self.half = self.device.type == "cuda"
        self.wrapper = ExportModel(model).eval().to(self.device)
        if self.half:
            self.wrapper = self.wrapper.half()
        w, h = size
        with torch.no_grad():
            x = torch.zeros(1, 3, h, w, device=self.device)
            _, _, counts = decode_dense(*model(x.to(self._dtype)), cfg.head, (h, w))
        names = [f"class{i}" for i in range(cfg.head.num_classes)]
        arch = cfg_arch(cfg) + ("-carafe" if cfg.fpn.upsample == "carafe" else "")
        self.info = ModelInfo(names, size, counts, "-", arch, "uint8_nhwc")
        self.compiled = "eager"
        if self.half:
            self._try_torch_tensorrt(h, w)
        self.gpu = torch.cuda.get_device_name(self.device) if self.half else None
        self.precision = "fp16" if self.half else "fp32"
        self.last_times: Dict[str, float] = {}

    @property
    def _dtype(self) -> torch.dtype:
        return torch.half if self.half else torch.float32

    def _try_torch_tensorrt(self, h: int, w: int) -> None:
        try:
            import torch_tensorrt
        except ImportError:
            log.info("torch-tensorrt not installed: timing the eager FP16 model")
            return
        self.wrapper = torch_tensorrt.compile(
            self.wrapper,
            inputs=[torch_tensorrt.Input((1, 3, h, w), dtype=torch.half)],
            enabled_precisions={torch.half},
        )
        self.compiled = "torch-tensorrt"

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return model_input(images, "uint8_nhwc")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        t0 = clock()
        with torch.no_grad():
            t = torch.from_numpy(x).to(self.device, non_blocking=True)
            t = t.permute(0, 3, 1, 2).to(self._dtype)
            self._sync()
            t1 = clock()
            boxes, scores = self.wrapper(t)
            self._sync()
            t2 = clock()
            out = boxes.float().cpu().numpy(), scores.float().cpu().numpy()
        t3 = clock()
        self.last_times = {
            "h2d": (t1 - t0) * 1e3,
            "compute": (t2 - t1) * 1e3,
            "d2h": (t3 - t2) * 1e3,
        }
        return out

    def close(self) -> None:
        self.wrapper = None  # type: ignore[assignment]
