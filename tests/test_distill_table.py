"""benchmarks/distill_table.sh, its shell logic only: a stub `fod` stands in for the verbs
(each of them is tested on its own), so the order, the pool of side-by-side runs, RUNS
and TABLE_ONLY are checked in seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

pytestmark = pytest.mark.skipif(shutil.which("flock") is None, reason="the stub needs flock")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "distill_table.sh"

# The stub: logs each call, makes the outputs the script looks for, and keeps a count of
# the training runs in progress (under a lock) to show how many ran side by side.
STUB = r"""#!/usr/bin/env bash
set -euo pipefail
verb=$1; shift
out='' teacher='' init='' runs='' zi='' resume='' batch=0 amp='' seed=''
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) while [[ $# -gt 1 && $2 != --* ]]; do runs+=" $(basename "$2")"; shift; done ;;
    --out) out=$2; shift ;;
    --teacher) [[ $verb == distill ]] && { teacher=$2; shift; } ;;  # a flag to train
    --init) init=$(basename "$(dirname "$2")"); shift ;;
    --zero-init-residual) zi=1 ;;
    --amp) amp=1 ;;
    --seed) seed=$2; shift ;;
    --resume) resume=$2; shift ;;
    --save-every) echo "$2" > "$STUB_DIR/save_every"; shift ;;
    --images) echo "$2" > "$STUB_DIR/images"; shift ;;  # the last set made
    --epochs) echo "$2" > "$STUB_DIR/epochs"; shift ;;
    --batch) batch=$2; shift ;;
  esac
  shift
done
echo "$verb $(basename "$out") ${OMP_NUM_THREADS:--} ${init:--}$runs" >> "$STUB_LOG"
case $verb in
  synth) mkdir -p "$out/images"; : > "$out/images/0.png"; echo '{}' > "$out/annotations.json" ;;
  train|distill)
    for f in "$teacher" "${init:+$(dirname "$out")/$init/last.pt}"; do
      if [[ -n $f && ! -f $f ]]; then echo "no $f" >&2; exit 3; fi
    done
    [[ $(basename "$out") == "$STUB_FAIL" ]] && { echo "diverged" >&2; exit 1; }
    if [[ -n $resume ]]; then  # refused with --init, as by the CLI; must be the run's own
      [[ -n $init || $resume != "$out/last.pt" ]] && { echo "bad --resume" >&2; exit 2; }
      basename "$out" >> "$STUB_DIR/resumed"
    fi
    [[ -n $amp ]] && basename "$out" >> "$STUB_DIR/amp"
    [[ -n $seed ]] && echo "$(basename "$out")=$seed" >> "$STUB_DIR/seeds"
    if [[ -n $zi ]]; then  # refused with --init, as by the CLI
      [[ -n $init ]] && { echo "bring their own weights" >&2; exit 2; }
      basename "$out" >> "$STUB_DIR/zi"
    fi
    ( flock 9; n=$(( $(cat "$STUB_DIR/now" 2>/dev/null || echo 0) + 1 )); echo $n > "$STUB_DIR/now"
      [[ $n -gt $(cat "$STUB_DIR/max" 2>/dev/null || echo 0) ]] && echo $n > "$STUB_DIR/max" || true
    ) 9> "$STUB_DIR/lock"
    if [[ $(basename "$out") == "$STUB_SLOW" ]]; then sleep "${STUB_SLOW_S:-3}"; else sleep 0.4; fi
    ( flock 9; echo $(( $(cat "$STUB_DIR/now") - 1 )) > "$STUB_DIR/now" ) 9> "$STUB_DIR/lock"
    mkdir -p "$out"; : > "$out/last.pt"
    echo "{\"config\": {\"batch\": $batch}, \"step_images_per_s\": 40.0," \
      '"eval_seconds": 0.1}' > "$out/metrics.json" ;;
  compare|heatmap) mkdir -p "$out"; : > "$out/$verb.md" ;;
esac
"""

ALL = [
    "teacher", "teacher-nocarafe", "student", "none", "ours", "ld", "pkd", "crosskd", "fgd",
    "mimic", "pkd-no-noise", "ours-no-noise", "ours-no-residual", "ours-no-ld", "ours-w2",
    "ours-w2-no-residual", "mimic-w2", "ours-own", "ours-teacher", "ours-no-carafe",
]  # fmt: skip


KNOBS = (
    "IMAGES",
    "VAL_IMAGES",
    "ITERS",
    "JOBS",
    "THREADS",
    "SHOW",
    "RUNS",
    "PROBE",
    "AMP",
    "SEEDS",
)


def _run(tmp: Path, scale: str, *extra: str, script: Path = SCRIPT, **env: str):
    stub = tmp / "fod"
    if not stub.exists():
        stub.write_text(STUB)
        stub.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k not in KNOBS and k != "OMP_NUM_THREADS"}
    e = {**base, "FOD": str(stub), "STUB_LOG": str(tmp / "calls"), "STUB_DIR": str(tmp),
         "STUB_FAIL": "-", "STUB_SLOW": "-", **env}  # fmt: skip
    args = ["bash", str(script), str(tmp / "out"), *extra[:1], scale, *extra[1:]]
    return subprocess.run(args, env=e, capture_output=True, text=True)


def _calls(tmp: Path) -> List[List[str]]:
    return [line.split() for line in (tmp / "calls").read_text().splitlines()]


def _trained(tmp: Path) -> Dict[str, List[str]]:
    """run name -> [its torch threads (OMP_NUM_THREADS), the run it starts from], '-': none."""
    return {c[1]: c[2:] for c in _calls(tmp) if c[0] in ("train", "distill")}


def test_cpu_scale_runs_two_side_by_side_teachers_first(tmp_path: Path) -> None:
    r = _run(tmp_path, "cpu", STUB_SLOW="teacher-nocarafe-c1")
    assert r.returncode == 0, r.stdout + r.stderr
    trained = _trained(tmp_path)
    cycles = ["teacher-c1", "teacher-nocarafe-c1", "student-long"]
    assert sorted(trained) == sorted(ALL + cycles)  # none failed for want of its teacher
    assert {t[0] for t in trained.values()} == {"1"}  # one torch thread each: two on two cores
    assert (tmp_path / "max").read_text().strip() == "2"  # the pool: two at once, never more
    # Two schedules of each teacher, the second from the first's weights; the student's
    # second schedule starts from the student alone.
    assert trained["teacher"][1] == "teacher-c1" and trained["teacher-c1"][1] == "-"
    assert trained["teacher-nocarafe"][1] == "teacher-nocarafe-c1"
    assert trained["student-long"][1] == "student" and trained["student"][1] == "-"
    calls = _calls(tmp_path)
    started = {c[1]: i for i, c in enumerate(calls) if c[0] in ("train", "distill")}
    # Each distillation after its own teacher (the stub fails a run whose teacher is
    # missing, so every run above finishing shows that), and the CARAFE teacher's
    # distillations do not wait for the (here slow) teacher without CARAFE.
    first_distill = min(i for i, c in enumerate(calls) if c[0] == "distill")
    assert started["teacher"] < first_distill < started["teacher-nocarafe"]
    assert started["teacher-nocarafe"] < started["ours-no-carafe"]
    compare = [c for c in _calls(tmp_path) if c[0] == "compare"]
    assert len(compare) == 1 and "table:" in r.stdout
    assert compare[0][2] == "-"  # the table is made with every core (no thread limit)
    # Every run trained is in the table (bar the teacher-without-CARAFE's first schedule),
    # the teachers' schedules beside the student's, then the script's order.
    assert compare[0][4:] == ["teacher", "teacher-c1", "student-long", *ALL[1:]]
    # Every `fod train` from scratch starts from zero-initialised residual blocks; no run from
    # --init, and no distillation (its student starts from the plain init).
    zi = (tmp_path / "zi").read_text().split()
    calls = _calls(tmp_path)
    scratch = {c[1] for c in calls if c[0] == "train" and c[3] == "-"}
    assert sorted(zi) == sorted(scratch) == ["student", "teacher-c1", "teacher-nocarafe-c1"]


def test_a_run_stopped_part_way_is_resumed_not_restarted(tmp_path: Path) -> None:
    """A time limit stopped the table: runs with a last.pt and no metrics.json continue
    from it (the second teacher schedule without the --init it started from, and no
    zero-init), the rest start afresh."""
    runs = tmp_path / "out" / "runs"
    for name in ("teacher", "student-long"):  # second schedules, started from --init
        (runs / name).mkdir(parents=True)
        (runs / name / "last.pt").write_text("")
    (runs / "teacher-c1").mkdir()
    (runs / "teacher-c1" / "last.pt").write_text("")  # a first schedule, from scratch
    r = _run(tmp_path, "cpu", RUNS="teacher-c1 teacher student student-long", TABLE="0")
    assert r.returncode == 0, r.stdout + r.stderr
    resumed = sorted((tmp_path / "resumed").read_text().split())
    assert resumed == ["student-long", "teacher", "teacher-c1"]
    trained = _trained(tmp_path)
    assert trained["teacher"][1] == "-" and trained["student-long"][1] == "-"  # no --init
    assert (tmp_path / "zi").read_text().split() == ["student"]  # fresh, from scratch
    assert (tmp_path / "save_every").read_text().split() == ["40"]  # a tenth of 400 iterations


def test_zero_init_off(tmp_path: Path) -> None:
    r = _run(tmp_path, "smoke", ZERO_INIT="0", RUNS="teacher student ours", TABLE="0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(_trained(tmp_path)) == ["ours", "student", "teacher"]
    assert not (tmp_path / "zi").exists()


def test_amp_trains_every_run_in_mixed_precision_and_a_bad_value_is_refused(
    tmp_path: Path,
) -> None:
    r = _run(tmp_path, "smoke", AMP="1", RUNS="teacher student ours", TABLE="0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted((tmp_path / "amp").read_text().split()) == ["ours", "student", "teacher"]
    (tmp_path / "amp").unlink()
    r = _run(tmp_path, "smoke", RUNS="none", TABLE="0")  # default: float32, no --amp
    assert r.returncode == 0 and not (tmp_path / "amp").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    r = _run(bad, "smoke", AMP="on")  # refused before anything is made
    assert r.returncode == 2 and "AMP must be 0 or 1, got on" in r.stderr
    assert not (bad / "out").exists() and not (bad / "calls").exists()


def test_seeds_repeat_the_student_and_each_distillation_under_their_row(
    tmp_path: Path,
) -> None:
    runs = "teacher teacher-nocarafe student ours pkd ours-no-carafe"
    r = _run(tmp_path, "smoke", SEEDS="0 3", RUNS=runs)
    assert r.returncode == 0, r.stdout + r.stderr
    trained = ["ours", "ours-no-carafe", "ours-no-carafe-s3", "ours-s3", "pkd", "pkd-s3"]
    trained += ["student", "student-s3", "teacher", "teacher-nocarafe"]
    assert sorted(_trained(tmp_path)) == trained  # each teacher once: the fixed input
    seeds = (tmp_path / "seeds").read_text().split()
    seeded = ["ours-no-carafe-s3=3", "ours-s3=3", "pkd-s3=3", "student-s3=3"]
    assert sorted(seeds) == seeded  # seed 0: the default
    table = ["teacher", "teacher-nocarafe", "student", "student-s3", "ours", "ours-s3", "pkd"]
    table += ["pkd-s3", "ours-no-carafe", "ours-no-carafe-s3"]
    assert next(c for c in _calls(tmp_path) if c[0] == "compare")[4:] == table
    bad = tmp_path / "bad"
    bad.mkdir()
    r = _run(bad, "smoke", SEEDS="0,1")
    assert r.returncode == 2 and "SEEDS must be seeds (integers)" in r.stderr
    assert not (bad / "out").exists()


def test_seeds_at_two_schedules_the_first_seed_keeps_the_chain(tmp_path: Path) -> None:
    r = _run(tmp_path, "cpu", SEEDS="0 1", RUNS="student student-long", TABLE="0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _trained(tmp_path) == {
        "student": ["1", "-"], "student-long": ["1", "student"], "student-s1": ["1", "-"],
    }  # fmt: skip
    assert sorted((tmp_path / "seeds").read_text().split()) == ["student-long=2", "student-s1=1"]


def test_runs_subset_and_table_only(tmp_path: Path) -> None:
    r = _run(tmp_path, "smoke", RUNS="teacher student ours")
    assert r.returncode == 0, r.stdout  # the table of the runs asked for
    assert sorted(_trained(tmp_path)) == ["ours", "student", "teacher"]
    assert next(c for c in _calls(tmp_path) if c[0] == "compare")[4:] == RUNS_3
    (tmp_path / "calls").unlink()
    r = _run(tmp_path, "smoke", TABLE_ONLY="1")
    assert r.returncode == 1  # every other run is named, not silently missing
    assert "not in the table): teacher-nocarafe none" in r.stdout
    assert [c[0] for c in _calls(tmp_path)] == ["compare", "heatmap"]  # nothing trained
    (tmp_path / "calls").unlink()
    r = _run(tmp_path, "smoke", RUNS="none", TABLE="0")
    assert r.returncode == 0 and [c[:2] for c in _calls(tmp_path)] == [["distill", "none"]]


RUNS_3 = ["teacher", "student", "ours"]


def test_a_failed_method_is_named_and_the_table_still_made(tmp_path: Path) -> None:
    r = _run(tmp_path, "smoke", STUB_FAIL="mimic", RUNS=" ".join(ALL))
    assert r.returncode == 1
    assert "mimic: FAILED" in r.stdout and "not in the table): mimic" in r.stdout
    assert (tmp_path / "out" / "table" / "compare.md").exists()


def test_unknown_scale_or_zero_init_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    r = _run(tmp_path, "tpu")
    assert r.returncode == 2 and "scale must be smoke, cpu, gpu or h200" in r.stderr
    r = _run(tmp_path, "smoke", ZERO_INIT="yes")  # not read as "off"
    assert r.returncode == 2 and "ZERO_INIT must be 0 or 1, got yes" in r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "calls").exists()


def test_knobs_replace_the_scale_sizes_and_bad_ones_are_refused(tmp_path: Path) -> None:
    r = _run(tmp_path, "h200", SHOW="1", ITERS="7", IMAGES="33", JOBS="2")
    assert r.returncode == 0
    assert r.stdout.split() == [
        "SIZE=640x384", "TRAIN=33", "VAL=300", "ITERS=7", "BATCH=16", "JOBS=2", "DEVICE=cuda",
        "TCYCLES=2",
    ]  # fmt: skip
    assert not (tmp_path / "out").exists()  # SHOW makes nothing
    r = _run(tmp_path, "smoke", ITERS="0")
    assert r.returncode == 2 and "ITERS must be a positive integer, got '0'" in r.stderr
    r = _run(tmp_path, "smoke", RUNS="teacher", ITERS="40", IMAGES="20", TABLE="0")
    assert r.returncode == 0
    assert (tmp_path / "images").read_text().split() == ["30"]  # val last; train made first
    assert (tmp_path / "epochs").read_text().split() == ["8"]  # 40 steps of 4 over 20 images


TIMED = ROOT / "benchmarks" / "timed_table.sh"
THREE = "teacher student ours"


def _tar_names(path: Path) -> List[str]:
    return subprocess.run(["tar", "-tzf", str(path)], capture_output=True, text=True).stdout.split()


@pytest.mark.parametrize(
    "scale, runs, batch, cycles",
    [("smoke", THREE, 4, 1), ("cpu", "teacher-c1 teacher student student-long ours", 8, 2)],
)
def test_timed_table_probes_then_sizes_the_runs_to_whole_epochs(
    tmp_path: Path, scale: str, runs: str, batch: int, cycles: int
) -> None:
    r = _run(tmp_path, scale, "120", script=TIMED, RUNS=runs, PROBE="2",
             PROBE_IMAGES="8", PROBE_VAL="5")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    sizing = (tmp_path / "out" / "sizing.txt").read_text()
    step_ms = 1000 * batch // 40  # the stub's 40 images/s
    assert "probe: sets" in sizing and f"teacher: 40.0 images/s, {step_ms} ms/step" in sizing
    # the runs from scratch train `cycles` schedules before the distillations start
    assert f"per step {cycles} x {step_ms} + {step_ms} ms" in sizing
    line = next(x for x in sizing.splitlines() if "training stops at" in x)
    iters, images = (int(x.split("=")[1].rstrip(";")) for x in line.split()[3:5])
    epochs = -(-iters * batch // images)  # distill_table.sh's own count
    assert iters >= 2 and epochs * images >= iters * batch > (epochs - 1) * images
    assert images * epochs - iters * batch < epochs  # whole epochs: under a batch over ITERS
    calls = _calls(tmp_path)
    assert [c[1] for c in calls if c[0] == "synth"] == ["train", "val", "train", "val"]
    names = _tar_names(tmp_path / "out" / "results.tar.gz")
    assert {"./table/compare.md", "./sizing.txt", "./probe/runs/ours/metrics.json"} <= set(names)
    assert not any(n.endswith(".pt") for n in names)


def test_timed_table_stops_a_run_that_overruns_and_tabulates_the_rest(tmp_path: Path) -> None:
    slow = f"61.{os.getpid()}"  # this test's own: not another run's stub
    r = _run(tmp_path, "smoke", "40", script=TIMED, RUNS=THREE, PROBE="0", ITERS="5",
             TABLE_S="2", STUB_SLOW="ours", STUB_SLOW_S=slow)  # fmt: skip
    assert r.returncode == 1  # a run is missing from the table, and named
    out = tmp_path / "out"
    assert "training: exit 124" in (out / "sizing.txt").read_text()
    assert "not in the table): ours" in (out / "table.log").read_text()
    compared = next(c for c in _calls(tmp_path) if c[0] == "compare")[4:]
    assert compared == ["teacher", "student"]
    # the stopped run's whole process group went with it: no stub still sleeping
    assert subprocess.run(["pgrep", "-f", f"sleep {slow}"]).returncode == 1
    assert "./table/compare.md" in _tar_names(out / "results.tar.gz")
