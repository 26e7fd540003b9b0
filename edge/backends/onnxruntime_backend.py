"""ONNX Runtime backend: FP32 or Q/DQ INT8 ONNX, on CPU (or any provider given)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import FodError
from ..model_info import ModelInfo
from ..preprocess import nchw_float


class OnnxRuntimeBackend:
    def __init__(
        self,
        path: Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: Optional[int] = None,
        model_bytes: Optional[bytes] = None,
    ) -> None:
        """`model_bytes`: the bytes the caller hashed; ORT gets exactly these (no reopen by
        path between the hash check and the load). `path` then only names them in errors."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads is not None:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        try:
            model: Union[str, bytes] = model_bytes if model_bytes is not None else str(path)
            self.session = ort.InferenceSession(model, so, providers=list(providers))
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
            raise FodError(f"{path}: ONNX Runtime cannot load it: {e}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != "images" or len(inputs[0].shape) != 4:
            raise FodError(
                f"{path}: expected one input 'images' of rank 4, got {[i.name for i in inputs]}"
            )
        outs = [o.name for o in self.session.get_outputs()]
        if outs != ["boxes", "scores"]:
            raise FodError(f"{path}: expected outputs ['boxes', 'scores'], got {outs}")
        self.info = ModelInfo.from_metadata(
            self.session.get_modelmeta().custom_metadata_map, str(path)
        )
        self.path = path

    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """images [N, H, W, 3] uint8 RGB or [N, H, W] grey -> boxes [N, A, 4], scores [N, A, C]."""
        x = nchw_float(images)
        boxes, scores = self.session.run(["boxes", "scores"], {"images": x})
        return boxes, scores

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

    def __enter__(self) -> OnnxRuntimeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
