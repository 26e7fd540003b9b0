"""Give an exported detector a uint8 pixel input: the cast, the channel order and the grey
widening move into the graph, so the device's CPU writes no float tensor.

A float32 [N, 3, H, W] RGB 0-255 graph becomes one that takes `images` uint8 RGB
[N, H, W, 3] or, for mono cameras, grey [N, H, W]. The cast comes first: TensorRT
accepts UINT8 only as network I/O feeding a cast (8.5.1+). The rewrite is exact: the
float graph's consumers see the same values, so detections do not change. It works on
FP32 and Q/DQ graphs alike (onnx only, no torch).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calibration.quantize import model_opset
from edge.errors import FodError

NCHW = "images_nchw"  # the float tensor the original graph's first nodes now read


def uint8_input(model: onnx.ModelProto, mono: bool) -> onnx.ModelProto:
    """A copy of `model` whose input `images` is uint8 [N, H, W] (mono) or [N, H, W, 3]."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inputs = [i for i in g.input if i.name == "images"]
    if not inputs:
        raise FodError("the graph has no input 'images'")
    old = inputs[0]
    t = old.type.tensor_type
    if t.elem_type != TensorProto.FLOAT or len(t.shape.dim) != 4 or t.shape.dim[1].dim_value != 3:
        raise FodError("input 'images' is not float32 [N, 3, H, W]: already a uint8 graph?")
    n, _, h, w = t.shape.dim
    dims = [n.dim_param or n.dim_value, h.dim_value, w.dim_value] + ([] if mono else [3])
    for node in g.node:  # every reader of the float input now reads the rebuilt tensor
        node.input[:] = [NCHW if x == "images" else x for x in node.input]
    new = helper.make_tensor_value_info("images", TensorProto.UINT8, dims)
    g.input.remove(old)
    g.input.insert(0, new)
    nodes = [helper.make_node("Cast", ["images"], ["images_f32"], to=TensorProto.FLOAT)]
    if mono:  # [N, H, W] -> [N, 1, H, W] -> [N, 3, H, W] (R = G = B, as training saw grey)
        shape = numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "images_expand_shape")
        g.initializer.append(shape)
        if model_opset(out) >= 13:  # Unsqueeze's axes became an input in opset 13
            axes = numpy_helper.from_array(np.array([1], np.int64), "images_unsqueeze_axes")
            g.initializer.append(axes)
            unsq = helper.make_node("Unsqueeze", ["images_f32", axes.name], ["images_n1hw"])
        else:
            unsq = helper.make_node("Unsqueeze", ["images_f32"], ["images_n1hw"], axes=[1])
        nodes += [unsq, helper.make_node("Expand", ["images_n1hw", shape.name], [NCHW])]
    else:  # [N, H, W, 3] -> [N, 3, H, W]
        nodes.append(helper.make_node("Transpose", ["images_f32"], [NCHW], perm=[0, 3, 1, 2]))
    for i, node in enumerate(nodes):
        node.name = f"input_{node.op_type.lower()}"
        g.node.insert(i, node)
    meta = {p.key: p.value for p in out.metadata_props}
    meta["input"] = "uint8_nhw" if mono else "uint8_nhwc"
    del out.metadata_props[:]
    helper.set_model_props(out, meta)
    onnx.checker.check_model(out)
    return out
