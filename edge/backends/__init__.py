"""Inference backends behind one interface: ONNX Runtime here, TensorRT on the Jetson."""

from __future__ import annotations

from typing import Tuple

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
