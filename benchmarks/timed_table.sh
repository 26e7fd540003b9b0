#!/usr/bin/env bash
# The distillation table (distill_table.sh) inside a fixed wall-clock budget, on a machine
# whose speed nobody has measured yet (a GPU lent for one call):
#
#   benchmarks/timed_table.sh WORK DEADLINE_S [SCALE] [PACK]
#
# 1. what the machine is (GPU, torch), the scale's sizes (distill_table.sh SHOW=1);
# 2. a probe of the runs as they will run: PROBE iterations of every run in RUNS on
#    PROBE_IMAGES images (the teachers and the student side by side, then the
#    distillations side by side), validated on PROBE_VAL images, then their table;
# 3. ITERS from the time left: the probe's start-up, the sets, ITERS steps at each
#    phase's slowest step rate (step_images_per_s: validation left out), the final
#    validations and the table (scaled from PROBE_VAL to the real val set), times MARGIN;
#    the training set near the scale's size, so that ITERS steps are whole epochs;
# 4. distill_table.sh SCALE with those, stopped at the time the table needs, then the
#    table of the runs that finished (TABLE_ONLY=1);
# 5. the table, heatmaps, each run's metrics.json and log, and the sizing (sizing.txt)
#    packed into PACK (default WORK/results.tar.gz), also when a step fails.
# PROBE=0 skips the probe: ITERS and IMAGES as an earlier probe sized them (default: the
# scale's own), TABLE_S the seconds kept for the table (default 60). On one H200:
#   PROBE=0 TABLE_S=75 benchmarks/timed_table.sh WORK 580 h200
# RUNS defaults to the issue's table (teachers, student, every method, the ablation).
# Without the venv (a lent machine): `python3 -m fod` from this checkout, after installing
# any wheels in .whl/ (pycocotools) into /tmp/site.
set -uo pipefail
W=${1:?usage: timed_table.sh WORK DEADLINE_S [SCALE] [PACK]}
DEADLINE=${2:?usage: timed_table.sh WORK DEADLINE_S [SCALE] [PACK]}
SCALE=${3:-h200}
PACK=${4:-$W/results.tar.gz}
PROBE=${PROBE:-30} PROBE_IMAGES=${PROBE_IMAGES:-480} PROBE_VAL=${PROBE_VAL:-100}
MARGIN=${MARGIN:-0.85} PACK_S=20  # seconds kept for packing
export RUNS=${RUNS:-teacher-c1 teacher teacher-nocarafe-c1 teacher-nocarafe student \
student-long none ours ld pkd crosskd fgd mimic ours-no-noise ours-no-residual ours-no-ld \
ours-w2 ours-no-carafe}
[[ $DEADLINE =~ ^[1-9][0-9]*$ ]] ||
  { echo "timed_table.sh: DEADLINE_S must be seconds" >&2; exit 2; }
mkdir -p "$W" && W=$(cd "$W" && pwd) || exit 1
cd "$(dirname "$0")/.." || exit 1
TABLE_SH=$PWD/benchmarks/distill_table.sh
export PYTHONUNBUFFERED=1
say() { printf '== %s s: %s\n' "$SECONDS" "$*" | tee -a "$W/sizing.txt"; }
# shellcheck disable=SC2329  # called by the trap
pack() {  # everything small worth reading, one file (the device brings back few)
  (cd "$W" && find . -maxdepth 4 \( -name '*.md' -o -name '*.csv' -o -name '*.png' \
    -o -name 'metrics.json' -o -name '*.log' -o -name '*.txt' \) \
    -not -path '*/images/*' -not -path '*/eval/*' -print0 |
    tar -czf "$PACK.tmp" --null -T -) && mv "$PACK.tmp" "$PACK" && say "packed $PACK"
}
trap pack EXIT
# The machine's own run (`time`, `kill`) ends where the deadline says: a run and its data
# loaders in a process group of their own, ended as a whole.
within() {  # within SECONDS CMD...: CMD's status, 124 when it was stopped
  local secs=$1 pid guard rc end=$((SECONDS + $1))
  shift
  setsid "$@" &
  pid=$!
  (sleep "$secs" && kill -TERM -- "-$pid" 2> /dev/null && sleep 10 &&
    kill -KILL -- "-$pid") 2> /dev/null &
  guard=$!
  wait "$pid"
  rc=$?
  pkill -P "$guard" 2> /dev/null
  kill "$guard" 2> /dev/null
  wait "$guard" 2> /dev/null  # reaped quietly: no "Terminated" in the log
  if [[ $SECONDS -ge $end ]]; then rc=124; fi
  return $rc
}

PY=python3
if [[ -z ${FOD:-} && -x .venv/bin/fod ]]; then
  FOD=$PWD/.venv/bin/fod PY=$PWD/.venv/bin/python
elif [[ -z ${FOD:-} ]]; then
  if compgen -G '.whl/*.whl' > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  fi
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
  printf '#!/bin/sh\nexec python3 -m fod "$@"\n' > "$W/fod"
  chmod +x "$W/fod"
  FOD=$W/fod
fi
export FOD
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  nproc
  "$PY" -c 'import sys, torch, torchvision, cv2, numpy, pycocotools
print(sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__,
      "cuda", torch.cuda.is_available(), "cv2", cv2.__version__, "numpy", numpy.__version__)'
} 2>&1 | tee "$W/env.txt"
say "deadline $DEADLINE s, scale $SCALE, runs: $RUNS"

read -r SIZES < <(SHOW=1 "$TABLE_SH" "$W" "$SCALE") || exit 1
eval "$SIZES"  # SIZE TRAIN VAL ITERS BATCH JOBS DEVICE TCYCLES: the scale's (and knobs')
say "scale $SCALE: $SIZES"
plan() {  # the probe, then ITERS, IMAGES and table_s from the time left
  local probe=(ITERS="$PROBE" IMAGES="$PROBE_IMAGES" VAL_IMAGES="$PROBE_VAL") t
  local probe_sets probe_train probe_table probe_rc
  t=$SECONDS  # the probe's sets first (the probe times the runs alone), timed for the real ones
  env "${probe[@]}" RUNS=__sets_only__ TABLE=0 "$TABLE_SH" "$W/probe" "$SCALE" \
    > "$W/sets.log" 2>&1 || { say "the sets failed: $(tail -n 3 "$W/sets.log")"; exit 1; }
  probe_sets=$((SECONDS - t))
  t=$SECONDS
  env "${probe[@]}" TABLE=0 "$TABLE_SH" "$W/probe" "$SCALE" > "$W/probe.log" 2>&1
  probe_train=$((SECONDS - t))
  t=$SECONDS
  env "${probe[@]}" TABLE_ONLY=1 "$TABLE_SH" "$W/probe" "$SCALE" > "$W/probe-table.log" 2>&1
  probe_rc=$? probe_table=$((SECONDS - t))
  say "probe: sets $probe_sets s, training $probe_train s, table $probe_table s (exit $probe_rc)"
  [[ $probe_rc == 0 ]] ||
    { say "the probe failed: $(grep -h FAILED "$W/probe.log" | head -n 3)"; exit 1; }

  # ITERS from the time left. The probe's wall = start-up + PROBE steps of each phase + its
  # validations; the real run makes its sets, repeats the start-up, takes ITERS steps, and
  # validates and tabulates VAL / PROBE_VAL as many images. The training set is sized so
  # that ITERS steps are whole epochs (the lr schedule spans whole epochs): near TRAIN
  # images. Last line: ITERS IMAGES and the seconds kept for the table.
  read -r ITERS IMAGES table_s < <(python3 - "$W/probe/runs" "$PROBE" "$PROBE_IMAGES" \
    "$PROBE_VAL" "$TRAIN" "$VAL" "$BATCH" "$TCYCLES" "$probe_sets" "$probe_train" \
    "$probe_table" "$((DEADLINE - SECONDS - PACK_S))" "$MARGIN" << 'EOF' | tee -a "$W/sizing.txt" | tail -n 1
import json, math, sys
from pathlib import Path
runs = sys.argv[1]
probe, probe_images, probe_val, train, val, batch, cycles = map(int, sys.argv[2:9])
sets_s, train_s, table_s, left, margin = map(float, sys.argv[9:])
k = val / probe_val
step = {1: 0.0, 2: 0.0}  # slowest seconds per step: from-scratch runs (1), distillations (2)
ev = {1: 0.0, 2: 0.0}
for m in sorted(Path(runs).glob("*/metrics.json")):
    s, name = json.loads(m.read_text()), m.parent.name
    phase = 1 if name.startswith(("teacher", "student")) else 2
    sec = s["config"]["batch"] / s["step_images_per_s"]
    step[phase], ev[phase] = max(step[phase], sec), max(ev[phase], s["eval_seconds"])
    print(f"{name}: {s['step_images_per_s']:.1f} images/s, {sec * 1000:.0f} ms/step, "
          f"validation {s['eval_seconds']:.1f} s")
# The runs from scratch train `cycles` schedules in a row before the distillations start.
per_iter = cycles * step[1] + step[2]
startup = train_s - probe * per_iter - cycles * ev[1] - ev[2]
table = k * table_s + 10
sets = sets_s * (train + val) / (probe_images + probe_val)
fixed = startup + sets + k * (cycles * ev[1] + ev[2]) + table
iters = int(margin * (left - fixed) / per_iter)
epochs = max(1, round(iters * batch / train))
images = math.ceil(iters * batch / epochs)
print(f"per step {cycles} x {step[1] * 1000:.0f} + {step[2] * 1000:.0f} ms; "
      f"start-up {startup:.0f} s; "
      f"sets {sets:.0f} s; validations x{k:.1f} and table {fixed - startup - sets:.0f} s; "
      f"{left:.0f} s left; {epochs} epochs of {images} images")
print(iters, images, int(table))
EOF
  )
  [[ $ITERS =~ ^[1-9][0-9]*$ && $ITERS -ge $PROBE ]] ||
    { say "no time left for a run (ITERS '$ITERS')"; exit 1; }
}

if [[ $PROBE == 0 ]]; then  # sized before: ITERS and IMAGES as given, else the scale's
  IMAGES=$TRAIN table_s=${TABLE_S:-60}
else
  plan
fi
say "ITERS=$ITERS IMAGES=$IMAGES; training stops at" \
  "$((DEADLINE - PACK_S - table_s)) s at the latest"

t=$SECONDS
ITERS=$ITERS IMAGES=$IMAGES TABLE=0 within $((DEADLINE - PACK_S - table_s - SECONDS)) \
  "$TABLE_SH" "$W" "$SCALE" > "$W/train.log" 2>&1
say "training: exit $? after $((SECONDS - t)) s;" \
  "$(grep -c ': [0-9]* s$' "$W/train.log") runs finished"
ITERS=$ITERS IMAGES=$IMAGES TABLE_ONLY=1 within $((DEADLINE - PACK_S - SECONDS)) \
  "$TABLE_SH" "$W" "$SCALE" > "$W/table.log" 2>&1
rc=$?
say "table: exit $rc; $(tail -n 2 "$W/table.log" | tr '\n' ' ')"
cat "$W/table/compare.md" 2> /dev/null
exit $rc
