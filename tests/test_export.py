"""ONNX export parity with PyTorch, the numpy postprocess against torch's, eval through ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.errors import FodError
from edge.postprocess import PostprocessConfig, select_per_image
from edge.sources import CaptureSource, open_source
from fod.cli import main
from training.data.dataset import CocoDetection
from training.evaluation import predict, predict_onnx
from training.export import ExportModel
from training.postprocess import GFLPostprocess
from training.postprocess import PostprocessConfig as TorchPostCfg
from training.postprocess import select_per_image as torch_select

SIZE = (320, 256)
BOX_ATOL = 1e-3  # px: float32 graph vs eager, different kernels and op order
SCORE_ATOL = 5e-5  # float32 sigmoid: ORT and PyTorch kernels differ in the last bits


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_matches_pytorch(exported, batch: int) -> None:
    model, _, _, path = exported
    x = torch.rand(batch, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(batch)) * 255
    backend = OnnxRuntimeBackend(path)
    ob, os_ = backend.infer(x.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy())
    with torch.no_grad():  # the backend takes uint8 pixels: compare on the same rounded input
        boxes, scores = ExportModel(model)(x.round().clamp(0, 255))
    assert ob.shape == tuple(boxes.shape) and os_.shape == tuple(scores.shape)
    np.testing.assert_allclose(ob, boxes.numpy(), atol=BOX_ATOL, rtol=1e-4)
    np.testing.assert_allclose(os_, scores.numpy(), atol=SCORE_ATOL)
    assert 0.05 < float((os_ > 0.5).mean()) < 0.95  # the comparison covers live scores


def test_metadata(exported) -> None:
    _, _, ckpt, path = exported
    info = OnnxRuntimeBackend(path).info
    assert info.class_names == ["fiber", "particle", "glass_flake"]
    assert (
        info.input_size == SIZE
        and sum(info.level_counts) == 40 * 32 + 20 * 16 + 10 * 8 + 5 * 4 + 3 * 2
    )
    from edge.fsutil import sha256_file

    assert info.checkpoint_sha256 == sha256_file(ckpt)
    m = onnx.load(str(path))
    assert [i.name for i in m.graph.input] == ["images"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


def test_numpy_postprocess_matches_torch() -> None:
    g = torch.Generator().manual_seed(3)
    counts = [300, 80, 20]
    xy = torch.rand(400, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 4 + torch.rand(400, 2, generator=g) * 30], dim=1)
    scores = torch.rand(400, 3, generator=g) ** 3
    want = torch_select(boxes, scores, counts, TorchPostCfg(nms_pre=50))
    got = select_per_image(boxes.numpy(), scores.numpy(), counts, PostprocessConfig(nms_pre=50))
    assert len(got) == len(want["scores"]) > 10
    np.testing.assert_allclose(got.scores, want["scores"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(got.boxes, want["boxes"].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(got.labels, want["labels"].numpy())


def test_eval_onnx_equals_pytorch(exported, small_set: Path, capsys: pytest.CaptureFixture) -> None:
    model, post, ckpt, path = exported
    data = CocoDetection(small_set)
    pt = predict(model, post, data, SIZE, torch.device("cpu"))
    ox = predict_onnx(path, data)
    assert len(pt) == len(ox) > 0
    metrics = []
    for w in (ckpt, path):
        assert (
            main(
                ["eval", "--weights", str(w), "--data", str(small_set), "--json", "--device", "cpu"]
            )
            == 0
        )
        metrics.append(json.loads(capsys.readouterr().out))
    assert set(metrics[0]) == {"ap50", "ap", "ap_small", "ar", "ar_small"}
    for k in metrics[0]:
        assert metrics[1][k] == pytest.approx(metrics[0][k], abs=1e-3)


def test_a_set_without_boxes_is_refused_where_ap_is_measured(
    exported, small_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """COCO's AP is undefined on a set of good containers' images only: reported as 0 it
    read as a blind model, and `fod calibrate`'s FP32-vs-INT8 check as a drop of 0."""
    good = tmp_path / "good"
    (good / "images").mkdir(parents=True)
    data = json.loads((small_set / "annotations.json").read_text())
    labelled = {a["image_id"] for a in data["annotations"]}
    data["images"] = [i for i in data["images"] if i["id"] not in labelled]
    for i in data["images"]:
        (good / "images" / i["file_name"]).write_bytes(
            (small_set / "images" / i["file_name"]).read_bytes()
        )
    data["annotations"] = []
    (good / "annotations.json").write_text(json.dumps(data))
    assert data["images"]  # the small set holds negatives
    _, _, ckpt, onnx_path = exported
    out = tmp_path / "out"
    for argv, why in (
        (["eval", "--weights", str(onnx_path)], "AP and AR are undefined"),
        (["eval", "--weights", str(ckpt), "--device", "cpu"], "AP and AR are undefined"),
        (["calibrate", "--onnx", str(onnx_path), "--images", "2"], "INT8's accuracy cannot"),
        (["train", "--data", str(small_set), "--val", str(good)], "the validation AP is undefined"),
        (["compare", "--runs", str(ckpt), "--size", "320x256"], "AP and AR are undefined"),
    ):
        argv += [] if "--val" in argv else ["--data", str(good)]
        assert main([*argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert f"{good}: no labelled boxes in its {len(data['images'])} images: {why}" in err
        assert not out.exists()


def test_foreign_onnx_refused(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])
    g = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["input"], ["y"])], "g", [x], [y])
    p = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(g), str(p))
    with pytest.raises(FodError, match=r"foreign\.onnx: expected one input 'images'"):
        OnnxRuntimeBackend(p)


def test_missing_metadata_refused(exported, tmp_path: Path) -> None:
    m = onnx.load(str(exported[3]))
    del m.metadata_props[:]
    p = tmp_path / "nometa.onnx"
    onnx.save(m, str(p))
    with pytest.raises(FodError, match=r"nometa\.onnx: not a pharma-fod detector"):
        OnnxRuntimeBackend(p)


def test_export_bad_size(exported, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(
        [
            "export",
            "--weights",
            str(exported[2]),
            "--out",
            str(tmp_path / "x.onnx"),
            "--size",
            "300x256",
        ]
    )
    assert rc == 2 and "divisible by 32" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_export_takes_the_training_size(exported, trained: Path, tmp_path: Path, capsys) -> None:
    """Without --size, the size the checkpoint was trained at (before: 1280x800 whatever it
    learnt at); a checkpoint that records none needs --size."""
    out = tmp_path / "t.onnx"
    assert main(["export", "--weights", str(trained / "last.pt"), "--out", str(out)]) == 0
    assert OnnxRuntimeBackend(out).info.input_size == (320, 256)
    assert "input uint8_nhwc 320x256" in capsys.readouterr().out
    assert main(["export", "--weights", str(exported[2]), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "records no training size: pass --size" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_postprocess_uses_same_rule_in_torch(exported) -> None:
    # GFLPostprocess (torch, training) and edge postprocess agree on one real image's outputs
    model, post, _, path = exported
    x = (
        torch.rand(1, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(9))
        .mul(255)
        .round()
    )
    with torch.no_grad():
        want = post(*model(x), (SIZE[1], SIZE[0]))[0]
    b, s = OnnxRuntimeBackend(path).infer(x.permute(0, 2, 3, 1).to(torch.uint8).numpy())
    got = select_per_image(
        b[0], s[0], OnnxRuntimeBackend(path).info.level_counts, PostprocessConfig()
    )
    assert isinstance(post, GFLPostprocess)
    assert len(got) == len(want["scores"])
    np.testing.assert_allclose(got.scores, want["scores"].numpy(), atol=1e-5)


def _export(ckpt: Path, out: Path, *extra: str) -> Path:
    args = ["export", "--weights", str(ckpt), "--out", str(out), "--size", "320x256", *extra]
    assert main(args) == 0
    return out


def test_uint8_and_float_inputs_give_the_same_detections(exported, tmp_path: Path) -> None:
    """The uint8 graphs (RGB and grey) compute what the float graph computes on the same
    pixels: the cast, transpose and widening inside the graph are exact."""
    _, _, ckpt, u8_path = exported
    f32 = OnnxRuntimeBackend(_export(ckpt, tmp_path / "f.onnx", "--input", "float"))
    u8 = OnnxRuntimeBackend(u8_path)
    mono = OnnxRuntimeBackend(_export(ckpt, tmp_path / "g.onnx", "--mono"))
    assert (f32.info.input_layout, u8.info.input_layout, mono.info.input_layout) == (
        "float32_nchw",
        "uint8_nhwc",
        "uint8_nhw",
    )
    graph = onnx.load(str(u8_path)).graph.input[0].type.tensor_type
    assert graph.elem_type == onnx.TensorProto.UINT8 and len(graph.shape.dim) == 4
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (2, SIZE[1], SIZE[0], 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (2, SIZE[1], SIZE[0]), dtype=np.uint8)
    assert u8.prepare(rgb).dtype == np.uint8 and mono.prepare(grey) is not None
    for frames, backend in ((rgb, u8), (grey, u8), (grey, mono)):
        want_b, want_s = f32.infer(frames)
        got_b, got_s = backend.infer(frames)
        np.testing.assert_allclose(got_b, want_b, atol=1e-4)
        np.testing.assert_allclose(got_s, want_s, atol=1e-6)
        for i in range(len(frames)):
            a = select_per_image(want_b[i], want_s[i], f32.info.level_counts, PostprocessConfig())
            b = select_per_image(got_b[i], got_s[i], f32.info.level_counts, PostprocessConfig())
            assert len(a) == len(b) > 0
            np.testing.assert_array_equal(a.labels, b.labels)


def test_uint8_input_refuses_a_uint8_graph(exported) -> None:
    from training.onnx_input import uint8_input

    with pytest.raises(FodError, match="already a uint8 graph"):
        uint8_input(onnx.load(str(exported[3])), mono=False)


def test_grey_frames_match_their_rgb_copies(exported, small_set: Path) -> None:
    # A mono source hands over GRAY8 frames: the same pixels as the RGB path's channels.
    video = sorted((small_set / "sequences").glob("*.avi"))[0]
    rgb_src, grey_src = open_source(f"file:{video}"), open_source(f"file:{video}", mono=True)
    # One decoding thread per file (FFmpeg's frame threads delay frames and have aborted).
    assert rgb_src.cap.get(cv2.CAP_PROP_N_THREADS) == grey_src.cap.get(cv2.CAP_PROP_N_THREADS) == 1
    # A backend that refuses an open parameter does not open at all: the source reopens
    # without it rather than lose its camera.
    refused = CaptureSource(str(video), params=(cv2.CAP_PROP_FRAME_WIDTH, 100))
    assert refused.read() is not None
    refused.close()
    rgb, grey = rgb_src.read().image, grey_src.read().image
    rgb_src.close(), grey_src.close()
    assert rgb is not None and grey is not None
    assert (
        grey.ndim == 2 and np.array_equal(grey, rgb[:, :, 0]) and np.array_equal(grey, rgb[:, :, 2])
    )
    # The backend widens grey to three equal planes: bit-identical outputs.
    with OnnxRuntimeBackend(exported[3], threads=1) as be:
        w, h = be.info.input_size
        frames = np.random.default_rng(1).integers(0, 255, (2, h, w), dtype=np.uint8)
        b1, s1 = be.infer(frames)
        b3, s3 = be.infer(np.repeat(frames[..., None], 3, axis=3))
    assert np.array_equal(b1, b3) and np.array_equal(s1, s3)
