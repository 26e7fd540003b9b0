"""The process exit with a stage stuck in a native call: a real ONNX Runtime inference that
never returns (a Loop of 10^15 steps) on a real Stage thread, in a child process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper as h
    from edge.supervise import Stage, exit_process, stuck_stages

    def value(name, kind, shape):
        return h.make_tensor_value_info(name, kind, shape)

    body = h.make_graph(
        [h.make_node("Identity", ["c"], ["c_out"]), h.make_node("Add", ["v", "one"], ["v_out"])],
        "body",
        [value("i", TensorProto.INT64, []), value("c", TensorProto.BOOL, []),
         value("v", TensorProto.FLOAT, [1])],
        [value("c_out", TensorProto.BOOL, []), value("v_out", TensorProto.FLOAT, [1])],
        [h.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    graph = h.make_graph(
        [h.make_node("Loop", ["n", "go", "x"], ["y"], body=body)], "spin",
        [value("x", TensorProto.FLOAT, [1])], [value("y", TensorProto.FLOAT, [1])],
        [h.make_tensor("n", TensorProto.INT64, [], [10**15]),
         h.make_tensor("go", TensorProto.BOOL, [], [True])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    cpu = ["CPUExecutionProvider"]
    session = ort.InferenceSession(model.SerializeToString(), so, providers=cpu)

    calling = threading.Event()

    def infer():
        calling.set()
        session.run(None, {"x": np.zeros(1, np.float32)})

    stage = Stage("inference", infer, lambda s, e: False)
    stage.start()
    assert calling.wait(60)  # a loaded machine may start the thread late
    time.sleep(0.3)  # inside session.run by now
    stage.stop()
    assert not stage.join(0.2) and stuck_stages() == ["inference"]
    print("audited and closed", flush=True)
    if sys.argv[1] == "exit_process":
        exit_process(3)
    sys.exit(3)  # the plain exit: teardown under the running call
    """
)


def _child(how: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, how], capture_output=True, text=True, timeout=120
    )


def test_a_stuck_native_call_keeps_the_exit_code() -> None:
    plain = _child("sys.exit")
    # The fault is real: ONNX Runtime is torn down under the running call and aborts.
    assert plain.returncode != 3, plain.stderr
    kept = _child("exit_process")
    assert kept.returncode == 3, kept.stderr
    assert "audited and closed" in kept.stdout  # flushed before the exit
    assert "['inference'] still stuck in a call: exiting 3 without teardown" in kept.stderr


def test_without_a_stuck_stage_the_exit_is_the_normal_one() -> None:
    code = "from edge.supervise import exit_process\nimport atexit\n"
    code += "atexit.register(print, 'teardown ran')\nexit_process(4)\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 4 and "teardown ran" in r.stdout
