"""`fod distill` on CPU: every method runs end to end; one step gives the student and its
adapters gradients and the teacher none; the teacher sees the clean view, the student the
same geometry with noise; the distilled student is a plain GFL-R18 that loads strictly
and exports; two torchrun processes end with identical weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.errors import FodError
from fod.cli import build_parser, main
from training.checkpoint import load_detector, save_checkpoint
from training.compare import describe
from training.data.dataset import CocoDetection
from training.distill import DistillConfig, DistillTask
from training.distill_losses import channel_normalize, mimic_loss, pkd_loss
from training.engine.trainer import TrainConfig
from training.models import build_detector
from training.models.config import arch_config

from .conftest import torchrun

SMALL = ["--fpn-channels", "32", "--stacked-convs", "2", "--size", "320x256", "--workers", "0"]


def distill_args(data: Path, teacher: Path, out: Path, iters: int, *extra: str) -> list:
    """`fod distill` on the small set for `iters` iterations of batch 2, small model."""
    return ["distill", "--data", str(data), "--teacher", str(teacher), "--out", str(out),
            "--epochs", "1", "--max-iters", str(iters), "--batch", "2", *extra, *SMALL]  # fmt: skip


@pytest.fixture(scope="module")
def teacher(small_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight CARAFE teacher (the mechanics do not need a trained one)."""
    torch.manual_seed(1)
    names = CocoDetection(small_set).class_names
    cfg = arch_config("gfl-r18", len(names), teacher=True, channels=32, stacked_convs=2)
    model, _, _ = build_detector(cfg)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, model, cfg, "gfl-r18", names)
    return path


def _task(small_set: Path, teacher: Path, tmp: Path, **kw) -> DistillTask:
    cfg = TrainConfig(
        data=small_set, out=tmp, size=(320, 256), fpn_channels=32, stacked_convs=2, workers=0
    )
    return DistillTask(cfg, DistillConfig(teacher=teacher, **kw), CocoDetection(small_set))


def test_paired_views_clean_teacher_noisy_student(small_set, teacher, tmp_path) -> None:
    task = _task(small_set, teacher, tmp_path)
    diffs = []
    for i in range(len(task.dataset)):
        t_img, s_img, _ = task.dataset[i]
        assert t_img.shape == s_img.shape and t_img.dtype == torch.uint8
        d = (t_img.float() - s_img.float()).abs()
        diffs.append(d.mean().item())
        # Same geometry: pixel noise averages out over 16x16 blocks, the scene does not.
        pool = torch.nn.functional.avg_pool2d
        bt, bs = pool(t_img.float()[None], 16).flatten(), pool(s_img.float()[None], 16).flatten()
        assert torch.corrcoef(torch.stack([bt, bs]))[0, 1] > 0.95
    assert min(diffs) == 0.0 and max(diffs) > 1.0  # p = 0.5: some views clean, some noisy
    clean = _task(small_set, teacher, tmp_path, noise=False)
    t_img, s_img, _ = clean.dataset[0]
    assert torch.equal(t_img, s_img)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])  # --amp on the CPU
@pytest.mark.parametrize("method", ["ours", "crosskd", "fgd"])
def test_one_step_gradients(small_set, teacher, tmp_path, method, amp) -> None:
    task = _task(small_set, teacher, tmp_path, method=method)
    batch = task.collate([task.dataset[i] for i in range(2)])
    task.module.train()
    losses = task.losses(task.module, batch, torch.device("cpu"), amp)
    want = {
        "ours": {"loss_residual", "loss_ld", "loss_ld_vlr"},
        "crosskd": {"loss_crosskd_cls", "loss_crosskd_box"},
        "fgd": {"loss_fgd", "loss_fgd_global"},
    }[method]
    assert want <= set(losses) and {"loss_qfl", "loss_giou", "loss_dfl"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in task.teacher.parameters())
    student = [p for p in task.detector.parameters() if p.requires_grad]
    assert sum(p.grad.abs().sum().item() for p in student if p.grad is not None) > 0
    if method == "ours":
        g = task.module.adapters[0].expand.weight.grad
        assert g is not None and g.abs().sum() > 0  # zero-initialised, but it learns
    if method == "fgd":  # the GcBlocks learn from the student's and the teacher's side
        for r in task.module.relation:
            assert r.mask.weight.grad is not None and r.mask.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("features", ["own", "teacher", "raw"])
def test_the_adapters_and_the_loss_see_the_compared_maps(
    small_set, teacher, tmp_path, features
) -> None:
    """The adapters see the student's maps as the loss compares them and, zero-initialised,
    the first step's residual loss is the plain imitation of them: 6 x 2 x PKD on maps
    normalised by their own statistics, 6 x the MSE of S - T in units of the teacher's
    per-channel std on maps normalised by the teacher's, 1 x mimic on raw maps."""
    task = _task(small_set, teacher, tmp_path, features=features)
    seen = []
    task.module.adapters[0].register_forward_hook(lambda _m, inp, _o: seen.append(inp[0]))
    feats = []
    task.detector.neck.register_forward_hook(lambda _m, _i, out: feats.append(out))
    t_feats = []
    task.teacher.neck.register_forward_hook(lambda _m, _i, out: t_feats.append(out))
    batch = task.collate([task.dataset[i] for i in range(2)])
    task.module.train()
    losses = task.losses(task.module, batch, torch.device("cpu"), False)
    pairs = [(s.float(), t.float()) for s, t in zip(feats[0], t_feats[0])]
    s0, t0 = pairs[0]
    std = t0.std(dim=(0, 2, 3), keepdim=True, unbiased=False)  # [1, C, 1, 1]
    view = {
        "own": channel_normalize(s0),
        "teacher": (s0 - t0.mean(dim=(0, 2, 3), keepdim=True)) / std,
        "raw": s0,
    }[features]
    torch.testing.assert_close(seen[0], view, rtol=1e-4, atol=1e-4)
    if features == "own":
        want = 6 * 2 * sum(pkd_loss(s, t) for s, t in pairs)
    elif features == "teacher":
        want = 6 * sum(
            ((s - t) / t.std(dim=(0, 2, 3), keepdim=True, unbiased=False)).pow(2).mean()
            for s, t in pairs
        )
    else:
        want = sum(mimic_loss(s, t) for s, t in pairs)
    assert losses["loss_residual"].item() == pytest.approx(want.item(), rel=1e-4)


def test_probes_of_a_step_of_ours(small_set, teacher, tmp_path) -> None:
    """At the zero-initialised start the adapters have taken none of the gap; without them
    only the gap is probed; the probes are detached diagnostics, never in the losses."""
    for kw, want in (
        ({}, {"feature_gap", "residual_absorbed"}),
        ({"residual": False}, {"feature_gap"}),
    ):
        task = _task(small_set, teacher, tmp_path, **kw)
        batch = task.collate([task.dataset[i] for i in range(2)])
        losses = task.losses(task.module, batch, torch.device("cpu"), False)
        assert set(task.probes) == want and not want & set(losses)
        assert (
            task.probes["feature_gap"].item() > 0 and not task.probes["feature_gap"].requires_grad
        )
        if "residual_absorbed" in want:
            assert task.probes["residual_absorbed"].item() == 0.0


def test_student_alone_costs_no_teacher_pass(small_set, teacher, tmp_path) -> None:
    """`none` is the student alone: its losses are the student's, the teacher never runs."""
    task = _task(small_set, teacher, tmp_path, method="none")

    def refuse(*_a, **_k):
        raise AssertionError("the teacher ran for --method none")

    task.teacher.features = refuse  # type: ignore[method-assign]
    batch = task.collate([task.dataset[i] for i in range(2)])
    task.module.train()
    losses = task.losses(task.module, batch, torch.device("cpu"), False)
    assert set(losses) == {"loss_qfl", "loss_giou", "loss_dfl"}
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("method", ["ours", "none", "mimic", "ld", "pkd", "fgd", "crosskd"])
def test_every_method_end_to_end(small_set, teacher, tmp_path, method, capsys) -> None:
    out = tmp_path / method
    args = distill_args(small_set, teacher, out, 2, "--method", method, "--json")
    assert main(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["iterations"] == 2 and all(np.isfinite(s["last_losses"]))
    # The distilled student is a plain GFL-R18 checkpoint: strict load into a fresh model.
    _, cfg, _, ckpt = load_detector(out / "last.pt")
    fresh, _, _ = build_detector(arch_config("gfl-r18", 3, channels=32, stacked_convs=2))
    fresh.load_state_dict(ckpt["state_dict"], strict=True)
    assert cfg.fpn.upsample == "nearest" and ckpt["distill_config"]["method"] == method
    assert ("adapters" in ckpt) == (method == "ours")
    # The diagnostics of the feature methods, where the run ended (metrics.json).
    probes = {"ours": {"feature_gap", "residual_absorbed"}, "mimic": {"feature_gap"}}
    assert set(s["probes"]) == probes.get(method, set())
    assert all(np.isfinite(v) for v in s["probes"].values())


def test_ablation_switches_and_export(small_set, teacher, tmp_path, capsys) -> None:
    out = tmp_path / "ablate"
    args = distill_args(small_set, teacher, out, 1, "--no-noise", "--no-residual", "--no-ld")
    assert main(args) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    d = ckpt["distill_config"]
    assert (d["noise"], d["residual"], d["ld"]) == (False, False, False) and "adapters" not in ckpt
    onnx_path = tmp_path / "student.onnx"
    assert (
        main(
            [
                "export",
                "--weights",
                str(out / "last.pt"),
                "--out",
                str(onnx_path),
                "--size",
                "320x256",
            ]
        )
        == 0
    )
    assert onnx_path.stat().st_size > 0


def test_resume_continues_the_student_and_its_adapters(small_set, teacher, tmp_path) -> None:
    out = tmp_path / "r"
    more = ("--method", "ours", "--epochs", "2", "--batch", "4")
    assert main(distill_args(small_set, teacher, out, 3, *more)) == 0  # one epoch of 3
    first = torch.load(out / "last.pt", weights_only=True)
    assert any(v.abs().sum() > 0 for v in first["adapters"].values())  # moved off their zeros
    # lr 0: what the resumed run saves is what it loaded, adapters included.
    resume = ("--resume", str(out / "last.pt"), "--lr", "0")
    assert main(distill_args(small_set, teacher, out, 6, *more, *resume)) == 0
    again = torch.load(out / "last.pt", weights_only=True)
    assert again["iter"] == 6 and again["train_config"]["resume"] == str(out / "last.pt")
    for name, v in first["adapters"].items():
        assert torch.equal(v, again["adapters"][name]), name
    w = [k for k in first["state_dict"] if k.endswith(".weight")]  # parameters, not BN stats
    assert all(torch.equal(first["state_dict"][k], again["state_dict"][k]) for k in w)


def test_distill_bad_input(small_set, teacher, tmp_path, capsys) -> None:
    other = tmp_path / "t64.pt"
    cfg = arch_config("gfl-r18", 3, teacher=True, channels=64, stacked_convs=2)
    save_checkpoint(
        other, build_detector(cfg)[0], cfg, "gfl-r18", ["fiber", "particle", "glass_flake"]
    )
    args = distill_args(small_set, other, tmp_path / "x", 1)
    assert main(args) == 2
    assert "64 channels" in capsys.readouterr().err
    # A switch the method has no part for is refused before anything is written.
    args = distill_args(small_set, teacher, tmp_path / "y", 1, "--method", "pkd", "--no-ld")
    assert main(args) == 2
    assert "--no-ld: no such part in --method pkd" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    # A NaN or negative weight is refused by the parser (before: NaN losses, or a loss the
    # student climbed).
    for w in ("nan", "-6"):
        with pytest.raises(SystemExit):
            main(distill_args(small_set, teacher, tmp_path / "z", 1, "--feature-weight", w))
        assert "--feature-weight: expected a finite number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


@pytest.mark.parametrize(
    "method, kw, refused",
    [
        ("ours", {"residual": False, "ld": False, "features": "raw", "vlr": False}, ""),
        ("ours", {"features": "teacher"}, ""),
        ("ours", {"feature_weight": 3.0}, ""),
        ("ld", {"vlr": False}, ""),
        ("pkd", {"feature_weight": 8.0}, ""),
        ("mimic", {"features": "own"}, "--features"),
        ("ld", {"ld": False}, "--no-ld"),
        ("crosskd", {"residual": False, "feature_weight": 1.0}, "--no-residual, --feature-weight"),
        ("pkd", {"vlr": False}, "--no-vlr"),
        ("none", {"feature_weight": 1.0}, "--feature-weight"),
    ],
)
def test_switches_apply_only_to_their_method(method, kw, refused) -> None:
    cfg = DistillConfig(teacher=Path("t.pt"), method=method, **kw)
    if not refused:
        cfg.validate()
        return
    with pytest.raises(FodError, match=f"^{refused}: no such part in --method {method}$"):
        cfg.validate()


def test_torchrun_two_processes_identical(small_set, teacher, tmp_path) -> None:
    out = tmp_path / "ddp"
    r = torchrun(
        "distill", "--data", str(small_set), "--teacher", str(teacher), "--out", str(out),
        "--epochs", "1", "--max-iters", "2", "--batch", "2", "--device", "cpu", *SMALL,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "metrics.json").read_text())
    assert s["world_size"] == 2 and s["iterations"] == 2
    d = s["rank_weight_digests"]
    assert len(d) == 2 and d[0] == d[1]  # student and adapters identical on both ranks


def test_describe_names_the_variant_and_the_ablation() -> None:
    cfg = arch_config("gfl-r18", 3)
    assert describe({}, cfg) == ("GFL-R18", "alone")
    # Checkpoints from before --features: `ours` on normalised maps unless normalize False.
    d = {"method": "ours", "noise": True, "residual": False, "ld": True}
    assert describe({"distill_config": d}, cfg)[1] == "ours own -residual"
    d = {**d, "normalize": False, "teacher_fpn": "nearest"}
    assert describe({"distill_config": d}, cfg)[1] == "ours -residual -carafe"
    d = {"method": "mimic", "noise": False, "normalize": True}
    assert describe({"distill_config": d}, cfg)[1] == "mimic -noise"
    d = {"method": "ours", "features": "teacher", "ld": False}
    assert describe({"distill_config": d}, cfg)[1] == "ours teacher -ld"
    assert describe({"distill_config": {**d, "features": "own"}}, cfg)[1] == "ours own -ld"
    assert describe({"distill_config": {**d, "features": "raw"}}, cfg)[1] == "ours -ld"
    d = {"method": "ours", "features": "raw", "feature_weight": 2.0, "noise": False}
    assert describe({"distill_config": d}, cfg)[1] == "ours w2 -noise"


def test_the_cli_defaults_are_the_configs() -> None:
    """`fod distill` parses without importing training; its defaults are DistillConfig's."""
    base = ["distill", "--data", "d", "--teacher", "t", "--out", "o"]
    a = build_parser().parse_args(base)
    d = DistillConfig(teacher=Path("t"))
    assert (a.method, a.features, a.feature_weight) == (d.method, d.features, d.feature_weight)
    assert (
        build_parser().parse_args([*base, "--features", "own", "--raw-features"]).features == "raw"
    )


def test_compare_and_heatmap(small_set, teacher, tmp_path, capsys) -> None:
    runs = []
    for name, extra in (
        ("ours", []),
        ("ours-no-noise", ["--no-noise"]),
        ("pkd", ["--method", "pkd"]),
    ):
        out = tmp_path / name
        args = distill_args(small_set, teacher, out, 1, *extra)
        assert main(args) == 0
        runs.append(out)
    capsys.readouterr()
    table = tmp_path / "table"
    args = [
        "compare",
        "--runs",
        str(teacher),
        *map(str, runs),
        "--data",
        str(small_set),
        "--out",
        str(table),
        "--size",
        "320x256",
        "--noisy",
        "--device",
        "cpu",
        "--json",
    ]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["teacher", "ours", "ours -noise", "pkd"]
    assert rows[0]["model"] == "GFL-R18 + CARAFE" and rows[1]["model"] == "GFL-R18"
    assert all(set(r["metrics"]) == {"ap50", "ap", "ap_small", "ar", "ar_small"} for r in rows)
    assert all(r["noisy"] is not None and r["gmacs"] > 0 for r in rows)
    assert rows[0]["params_m"] > rows[1]["params_m"]  # CARAFE adds parameters
    md = (table / "compare.md").read_text()
    assert "| AP50 | AP | AP_S | AR | AR_S | AP50 noisy |" in md and md.count("\n") == 6
    assert (table / "compare.csv").read_text().splitlines()[0].startswith("run,model,method,AP50")
    # runs evaluated in processes of their own: the same rows, in the order asked for
    assert main([*args[:-1], "--out", str(tmp_path / "jobs"), "--jobs", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == rows
    image = sorted((small_set / "images").glob("*"))[0]
    assert (
        main(
            [
                "heatmap",
                "--weights",
                str(teacher),
                str(runs[0]),
                "--image",
                str(image),
                "--out",
                str(tmp_path / "hm"),
            ]
        )
        == 0
    )
    import cv2

    png = cv2.imread(str(tmp_path / "hm" / "heatmap.png"))
    assert png is not None and png.shape[1] == 2 * 320 + 8 and png.shape[0] == 256 + 28


def test_feature_spread_of_a_run_against_itself_is_one(small_set, teacher, tmp_path) -> None:
    """benchmarks/feature_spread.py: every level of the teacher against itself is 1.0; a
    missing run is named with a non-zero exit."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "feature_spread.py"
    args = [sys.executable, str(script), "--teacher", str(teacher), "--data", str(small_set)]
    r = subprocess.run([*args, "--runs", str(teacher)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0][1:] == ["P3", "P4", "P5", "P6", "P7"] and rows[2][1:] == ["1.0"] * 5
    r = subprocess.run([*args, "--runs", str(tmp_path / "gone")], capture_output=True, text=True)
    assert r.returncode == 2 and "gone: no best.pt or last.pt" in r.stderr
