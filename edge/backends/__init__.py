"""Inference backends behind one interface: ONNX Runtime here, TensorRT on the Jetson."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

try:  # Protocol is 3.8+; typing_extensions is not a dependency of the edge install
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore


class Backend(Protocol):
    """Runs the exported graph: images [N, H, W, 3] uint8 RGB at the model size."""

    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """images [N, H, W, 3] uint8 RGB or [N, H, W] uint8 grey at the model size
        -> boxes [N, A, 4] float32 xyxy model pixels, scores [N, A, C] float32."""
        ...

    def close(self) -> None: ...


class StagedBackend(Backend, Protocol):
    """A backend `fod bench` can time stage by stage: `infer` is `run(prepare())`, and
    `last_times` holds ms of the last run's h2d / compute / d2h (whichever it can tell apart)."""

    last_times: Dict[str, float]

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 frames -> the graph's own input (edge.preprocess.model_input)."""
        ...

    def run(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]: ...

    def describe(self) -> str:
        """What runs (backend, model or engine file, device), for the run's `start` event."""
        ...
