"""benchmarks/build_demo.sh, its shell logic only: a stub `fod` stands in for the verbs
(each is tested on its own), so the stages, their order, the knobs and the recipe the
bundle records are checked in seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "build_demo.sh"
# The script's knobs: unset unless a test sets them (the session's environment may hold any).
KNOBS = ("EXTRA", "TEACHER", "ZERO_INIT", "AMP", "IMAGES", "EPOCHS", "WORKERS", "TRAIN_ONLY",
         "NOTE")  # fmt: skip

# The stub logs its argv (one JSON list per call) and makes what the script looks for.
STUB = """import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
out = Path(args[args.index("--out") + 1])
if args[0] in ("train", "distill"):
    out.mkdir(parents=True, exist_ok=True)  # a resumed schedule writes into its own folder
    (out / "best.pt").write_text("")
    (out / "last.pt").write_text("")
elif args[0] == "export":
    out.write_text("")
elif args[0] == "calibrate":
    out.mkdir()
    (out / "model.int8-cpu.onnx").write_text("")
else:  # synth, bundle make
    out.mkdir()
"""


def _run(tmp: Path, budget: str = "cpu", **env: str) -> subprocess.CompletedProcess:
    stub = tmp / "fod"
    if not stub.exists():
        stub.write_text(f"#!{sys.executable}\n{STUB}")
        stub.chmod(0o755)
    e = {**os.environ, "FOD": str(stub), "STUB_LOG": str(tmp / "calls"), **env}
    for k in KNOBS:
        if k not in env:
            e.pop(k, None)
    return subprocess.run(
        ["bash", str(SCRIPT), str(tmp / "w"), budget], env=e, capture_output=True, text=True
    )


def _calls(tmp: Path) -> List[List[str]]:
    log = tmp / "calls"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_cpu_build_stages_in_order_zero_init_on_the_first_schedule_only(tmp_path: Path) -> None:
    r = _run(tmp_path, ZERO_INIT="1")
    assert r.returncode == 0, r.stderr
    calls = _calls(tmp_path)
    assert [c[0] for c in calls] == ["synth"] * 3 + ["train"] * 3 + [
        "export", "calibrate", "bundle",
    ]  # fmt: skip
    first, second, third = calls[3:6]
    assert "--zero-init-residual" in first and "--init" not in first
    for c, prev, epochs in ((second, "run", "3"), (third, "run-2", "4")):
        assert "--zero-init-residual" not in c  # the CLI refuses it with --init
        assert c[c.index("--init") + 1] == str(tmp_path / "w" / prev / "best.pt")
        assert c[c.index("--epochs") + 1] == epochs
    export = calls[6]
    assert export[export.index("--weights") + 1] == str(tmp_path / "w" / "run-3" / "best.pt")
    # The manifest's recipe: every stage as a user types it, paths under WORK/.
    bundle = calls[8]
    recipe = [bundle[i + 1] for i, a in enumerate(bundle) if a == "--recipe"]
    assert len(recipe) == 8 and all(r.startswith("fod ") for r in recipe)
    assert not any(str(tmp_path) in r for r in recipe)
    assert "--zero-init-residual" in recipe[3] and "--out WORK/run" in recipe[3]


def test_default_and_zero_init_0_give_no_flag_and_a_bad_value_stops_first(tmp_path: Path) -> None:
    r = _run(tmp_path, EXTRA="")  # the default: the plain init the README's cpu build measures
    assert r.returncode == 0, r.stderr
    calls = _calls(tmp_path)
    assert not any("--zero-init-residual" in c for c in calls)
    assert [c[0] for c in calls].count("train") == 1  # EXTRA= : one schedule
    shutil.rmtree(tmp_path / "w")
    (tmp_path / "calls").unlink()
    r = _run(tmp_path, EXTRA="", ZERO_INIT="0")
    assert r.returncode == 0, r.stderr
    calls = _calls(tmp_path)
    assert not any("--zero-init-residual" in c for c in calls)
    assert [c[0] for c in calls].count("train") == 1  # EXTRA= : one schedule
    bad = tmp_path / "bad"
    bad.mkdir()
    for budget, knob, word in (("cpu", "yes", "ZERO_INIT"), ("tpu", "1", "budget")):
        r = _run(bad, budget, ZERO_INIT=knob)
        assert r.returncode == 2 and word in r.stderr
        assert _calls(bad) == [] and not (bad / "w").exists()
    r = _run(bad, "cpu", AMP="bf16")
    assert r.returncode == 2 and "AMP" in r.stderr and not (bad / "w").exists()


def test_amp_trains_every_schedule_in_mixed_precision(tmp_path: Path) -> None:
    r = _run(tmp_path, AMP="1")  # the cpu default: three schedules
    assert r.returncode == 0, r.stderr
    trains = [c for c in _calls(tmp_path) if c[0] == "train"]
    assert len(trains) == 3 and all("--amp" in c for c in trains)
    shutil.rmtree(tmp_path / "w")
    (tmp_path / "calls").unlink()
    assert _run(tmp_path).returncode == 0  # AMP unset: float32, as the shipped demo
    assert not any("--amp" in c for c in _calls(tmp_path))


def test_images_and_epochs_override_the_budget_and_bad_values_stop_first(tmp_path: Path):
    r = _run(tmp_path, IMAGES="4800", EPOCHS="4", EXTRA="2")
    assert r.returncode == 0, r.stderr
    calls = _calls(tmp_path)
    train_set = next(c for c in calls if c[0] == "synth" and c[2].endswith("/train"))
    assert train_set[train_set.index("--images") + 1] == "4800"
    first, second = (c for c in calls if c[0] == "train")
    assert first[first.index("--epochs") + 1] == "4"  # the first schedule's
    assert second[second.index("--epochs") + 1] == "2"  # EXTRA's
    bad = tmp_path / "bad"
    bad.mkdir()
    for knob, value in (("IMAGES", "0"), ("EPOCHS", "4.5"), ("IMAGES", "lots")):
        r = _run(bad, **{knob: value})
        assert r.returncode == 2 and f"{knob} must be a positive integer" in r.stderr
        assert _calls(bad) == [] and not (bad / "w").exists()


def test_teacher_distils_the_first_schedule_and_a_rerun_skips_every_stage(tmp_path: Path) -> None:
    r = _run(tmp_path, "gpu", TEACHER="/models/teacher.pt")
    assert r.returncode == 0, r.stderr
    calls = _calls(tmp_path)
    d = calls[3]
    assert d[:4] == ["distill", "--teacher", "/models/teacher.pt", "--method"]
    assert "--zero-init-residual" not in d  # a distilled student starts from the plain init
    assert "--crop" not in d  # gpu: full frames
    assert calls[4][0] == "export"  # gpu: no further schedules
    n = len(calls)
    r = _run(tmp_path, "gpu", TEACHER="/models/teacher.pt")
    assert r.returncode == 0 and len(_calls(tmp_path)) == n  # all outputs exist: nothing runs
    assert r.stdout.count("exists, skipped") == 7


def test_a_schedule_killed_part_way_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    r = _run(tmp_path, EXTRA="3 4")
    assert r.returncode == 0, r.stderr
    w = tmp_path / "w"
    (w / "run-2" / "best.pt").unlink()  # killed after an epoch: last.pt only
    (w / "run-3").rename(w / "gone")  # and the schedules after it never started
    for stage in ("demo.onnx", "cal-out", "bundle"):
        shutil.move(str(w / stage), str(tmp_path / stage))
    (tmp_path / "calls").unlink()
    r = _run(tmp_path, EXTRA="3 4")
    assert r.returncode == 0, r.stderr
    calls = _calls(tmp_path)
    assert [c[0] for c in calls] == ["train", "train", "export", "calibrate", "bundle"]
    resumed, fresh = calls[:2]
    assert "--init" not in resumed  # the CLI refuses --init with --resume
    assert resumed[resumed.index("--resume") + 1] == str(w / "run-2" / "last.pt")
    assert resumed[resumed.index("--out") + 1] == str(w / "run-2")
    assert fresh[fresh.index("--init") + 1] == str(w / "run-2" / "best.pt")
    assert "--resume" not in fresh
    # The recipe still says how the bundle is made: the uninterrupted commands.
    bundle = calls[-1]
    recipe = [bundle[i + 1] for i, a in enumerate(bundle) if a == "--recipe"]
    assert "--init WORK/run/best.pt" in recipe[4] and "--resume" not in " ".join(recipe)


def test_train_only_stops_after_the_schedules_and_the_rerun_bundles_them(tmp_path: Path):
    # A GPU machine without the ONNX tools trains; where they are, the same command
    # without TRAIN_ONLY skips the schedules and exports, calibrates and bundles.
    r = _run(tmp_path, "gpu", EXTRA="2", WORKERS="15", TRAIN_ONLY="1")
    assert r.returncode == 0, r.stderr
    calls = _calls(tmp_path)
    assert [c[0] for c in calls] == ["synth"] * 3 + ["train"] * 2
    assert all(c[c.index("--workers") + 1] == "15" for c in calls[3:])
    (tmp_path / "calls").unlink()
    r = _run(tmp_path, "gpu", EXTRA="2", NOTE="first schedule stopped at 2200")
    assert r.returncode == 0, r.stderr
    calls = _calls(tmp_path)
    assert [c[0] for c in calls] == ["export", "calibrate", "bundle"]
    assert calls[0][calls[0].index("--weights") + 1] == str(tmp_path / "w" / "run-2" / "best.pt")
    bundle = calls[2]
    recipe = [bundle[i + 1] for i, a in enumerate(bundle) if a == "--recipe"]
    assert recipe[-1] == "# first schedule stopped at 2200"  # after the 7 stages' commands
    assert len(recipe) == 8 and sum(x.startswith("fod train ") for x in recipe) == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    for knob, value in (("TRAIN_ONLY", "yes"), ("WORKERS", "0")):
        r = _run(bad, "gpu", **{knob: value})
        assert r.returncode == 2 and knob in r.stderr
        assert _calls(bad) == [] and not (bad / "w").exists()
