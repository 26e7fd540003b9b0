"""--save-every and --resume mid-epoch: a stopped run ends with the weights of the run never
stopped, in one process and under torchrun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fod.cli import main
from training.checkpoint import load_detector

from .conftest import SMALL_MODEL, torchrun


def test_a_run_stopped_mid_epoch_resumes_to_the_same_weights(
    small_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """Two epochs of 3 batches. Killed as its 6th iteration starts, a run saving every 2
    iterations resumes from iteration 4 (1 batch into epoch 2); cut by --max-iters 4, a
    run resumes from there too; both finish with the weights of the run never stopped
    (the epoch's order is seeded, the batches it had trained are left out)."""
    from training.engine.schedule import Schedule

    def run(name: str, *more: str, rc: int = 0) -> Path:
        out = tmp_path / name
        args = ["train", "--data", str(small_set), "--out", str(out), "--epochs", "2"]
        assert main([*args, "--batch", "4", "--warmup-iters", "2", *SMALL_MODEL, *more]) == rc
        return out / "last.pt"

    whole = load_detector(run("whole"))[0].state_dict()
    factor = Schedule.factor

    def killed_at_5(self, it):
        if it == 5:
            raise KeyboardInterrupt  # the process dies here
        return factor(self, it)

    monkeypatch.setattr(Schedule, "factor", killed_at_5)
    run("killed", "--save-every", "2", rc=130)  # fod's exit status for an interrupt
    monkeypatch.setattr(Schedule, "factor", factor)
    ckpt = load_detector(tmp_path / "killed" / "last.pt")[3]
    assert (ckpt["iter"], ckpt["epoch"], ckpt["step"]) == (4, 0, 1)
    cut = run("cut", "--max-iters", "4")
    assert {k: load_detector(cut)[3][k] for k in ("iter", "epoch", "step")} == {
        "iter": 4, "epoch": 0, "step": 1
    }  # fmt: skip
    # Another batch size would make its 1 batch other images: refused.
    args = ["train", "--data", str(small_set), "--out", str(tmp_path / "cut"), "--batch", "2"]
    assert main([*args, "--epochs", "2", *SMALL_MODEL, "--resume", str(cut)]) == 2
    reads: list = []  # every checkpoint file read, wherever in training it happens
    real = torch.load

    def counted(path, *a, **kw):
        reads.append(Path(path).name)
        return real(path, *a, **kw)

    shutil.copytree(tmp_path / "cut", tmp_path / "other")
    for name in ("killed", "cut"):
        last = tmp_path / name / "last.pt"
        reads.clear()
        monkeypatch.setattr(torch, "load", counted)
        caplog.clear()
        out = run(name, "--resume", str(last))
        monkeypatch.setattr(torch, "load", real)
        assert not [r for r in caplog.records if "--resume" in r.getMessage()]  # its own recipe
        assert reads == ["last.pt"]  # read once: architecture and state from the same read
        resumed = load_detector(out)
        assert resumed[3]["iter"] == 6 and resumed[3]["step"] == 0
        for k, v in resumed[0].state_dict().items():
            assert torch.equal(v, whole[k]), (name, k)
    # Resumed with another recipe: it runs, and says what differs from the run it continues.
    caplog.clear()
    run("other", "--resume", str(tmp_path / "other" / "last.pt"), "--lr", "0.02")
    said = [r.getMessage() for r in caplog.records if "--resume" in r.getMessage()]
    assert len(said) == 1 and "--lr 0.02 where the run had null" in said[0], said


def test_torchrun_resumes_mid_epoch_to_the_same_weights(small_set: Path, tmp_path: Path) -> None:
    """Two processes, epochs of 3 batches each: cut at iteration 4 (1 batch into epoch 2)
    and resumed, every rank ends with the weights of the run never stopped."""

    def run(name: str, *more: str) -> dict:
        out = tmp_path / name
        r = torchrun(
            "train", "--data", str(small_set), "--out", str(out), "--epochs", "2",
            "--batch", "2", "--warmup-iters", "2", "--device", "cpu", *SMALL_MODEL, *more,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads((out / "metrics.json").read_text())

    whole = run("whole")
    cut = run("cut", "--max-iters", "4")
    assert cut["iterations"] == 4
    resumed = run("cut", "--resume", str(tmp_path / "cut" / "last.pt"))
    assert resumed["iterations"] == 6 == whole["iterations"]
    assert resumed["rank_weight_digests"] == whole["rank_weight_digests"]


def test_resume_changes_compare_what_the_run_is(tmp_path: Path, monkeypatch) -> None:
    from training.engine.resume import resume_changes

    monkeypatch.chdir(tmp_path)
    saved = {"data": "set", "size": [320, 256], "lr": None, "out": "a", "max_iters": 4}
    now = {"data": str(tmp_path / "set"), "size": (320, 256), "lr": None, "out": "b"}
    assert resume_changes(saved, {**now, "max_iters": None}) == []  # same data, size; out free
    assert resume_changes(saved, {**now, "crop": [256, 256]}) == []  # a key the run lacked
    moved = resume_changes(saved, {**now, "data": "other", "size": (640, 384)})
    assert [m.split(" where")[0] for m in moved] == ['--data "other"', "--size [640, 384]"]


def test_resume_refuses_a_run_of_another_task_or_method(
    small_set: Path, trained: Path, tmp_path: Path, capsys
) -> None:
    """A distillation resumed with another --method or switch, by `fod train`, or a `fod
    train` run resumed by `fod distill`: refused by name (before, a ValueError traceback
    from the optimizer, or a distillation going on as plain training), nothing written."""
    out, run = tmp_path / "d", tmp_path / "t"
    shutil.copytree(trained, run)
    common = ["--data", str(small_set), "--epochs", "2", "--batch", "4", "--warmup-iters", "2"]
    distill = ["distill", *common, "--teacher", str(trained / "last.pt"), *SMALL_MODEL]
    assert main([*distill, "--out", str(out), "--max-iters", "2"]) == 0
    capsys.readouterr()
    cases = [
        ([*distill, "--method", "pkd"], out, "distilled with method 'ours', this one 'pkd'"),
        ([*distill, "--no-residual"], out, "distilled with residual True, this one False"),
        (["train", *common, *SMALL_MODEL], out, "a `fod distill` checkpoint: resume it with"),
        (distill, run, "a `fod train` checkpoint, not a distillation's"),
    ]
    for argv, folder, why in cases:
        last = folder / "last.pt"
        before = last.read_bytes()
        assert main([*argv, "--out", str(folder), "--resume", str(last)]) == 2, why
        err = capsys.readouterr().err
        assert f"error: {last}: " in err and why in err, err
        assert last.read_bytes() == before


def test_a_distillation_resumed_with_a_teacher_retrained_in_place_says_so(
    small_set: Path, trained: Path, tmp_path: Path, caplog
) -> None:
    """The checkpoint records the teacher file's sha256: a teacher retrained under the
    same path is named on --resume (a path alone said nothing), the same file is not."""
    teacher, out = tmp_path / "teacher.pt", tmp_path / "d"
    shutil.copyfile(trained / "last.pt", teacher)
    common = ["--data", str(small_set), "--epochs", "2", "--batch", "4", "--warmup-iters", "2"]
    distill = ["distill", *common, "--teacher", str(teacher), *SMALL_MODEL, "--out", str(out)]
    assert main([*distill, "--max-iters", "2"]) == 0
    resume = [*distill, "--resume", str(out / "last.pt")]
    caplog.clear()
    assert main([*resume, "--max-iters", "3"]) == 0
    assert "not the file the run distilled from" not in caplog.text
    ckpt = torch.load(teacher, weights_only=True)  # "retrained": other weights, same path
    name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][name] = ckpt["state_dict"][name] + 0.01
    torch.save(ckpt, teacher)
    caplog.clear()
    assert main([*resume, "--max-iters", "4"]) == 0
    assert f"--teacher {teacher} is not the file the run distilled from" in caplog.text


def test_a_teacher_is_compared_by_content_where_both_are_known() -> None:
    from training.engine.resume import distill_resume_changes

    saved = {"method": "ours", "residual": True, "teacher": "/a/t.pt", "teacher_sha256": "x"}
    moved = {**saved, "teacher": "/b/t.pt"}
    assert distill_resume_changes(saved, moved) == []  # the same file, copied elsewhere
    [change] = distill_resume_changes(saved, {**saved, "teacher_sha256": "y"})
    assert change.startswith("--teacher /a/t.pt is not the file the run distilled from")
    older = {k: v for k, v in saved.items() if k != "teacher_sha256"}  # before the record
    [change] = distill_resume_changes(older, moved)
    assert change.startswith('--teacher "/b/t.pt" where the run had "/a/t.pt"'), change
