#!/usr/bin/env bash
# The paper's distillation experiment in one command: the benchmark sets (fod synth --preset
# hard), the CARAFE teacher, the teacher without CARAFE, the student alone, every method,
# the ablation of ours (and ours on normalised maps), one `fod compare` table (clean and noisy
# val) and `fod heatmap`.
#
#   benchmarks/distill_table.sh OUT [smoke|cpu|gpu|h200]
#
# Every run has the same schedule. `gpu` is the full-size experiment (1280x800, GFL-R50
# teacher, a few hours on one GPU); `h200` a 640x384 version sized for one call of about
# eight minutes on one H200 with 16 cores (390 iterations of 16 crops, 2080 images: 3
# whole epochs): the two teachers and the student train side by side, then the
# distillations side by side (the GPU is shared, the data loaders take the cores; each
# distillation waits only for its own teacher); the runs from scratch train two
# schedules there too (one left two of three at the classifier prior); `cpu` a 640x384
# version for a 2-core machine: 6 epochs of 600
# images (450 iterations of 8 crops 256x256) per run, narrow heads, two runs side by side
# on one core each (the student alone 20 min, a distillation about 35, each teacher
# schedule 45); from scratch, one schedule leaves the R50 teacher behind the R18
# student, so at this scale the teachers train two schedules in a row (and the student
# too, as `student-long`, to tell the architecture from the schedule); `smoke` the same
# commands at a tiny scale (its figures show the pipeline works, they rank nothing:
# every model scores 0).
# Each step is skipped when its output exists, and a training run stopped part-way (a
# time limit) continues from its last.pt (saved every SAVE iterations), so a stopped
# table resumes;
# TABLE_ONLY=1 skips training and tabulates the runs that finished (after a time limit);
# TABLE=0 trains and makes no table (several invocations sharing one machine);
# RUNS="teacher student none ours ..." trains only those (in the script's order) and
# tabulates only those;
# SEEDS="0 1 2" trains the student alone and every distillation from the CARAFE teacher
# once per seed (default "0"): seed 0 keeps the row's name, seed N runs with --seed N as
# NAME-sN (its own init, crops, order and noise; the teachers stay one each: they are the
# fixed input of the distillations); RUNS names the rows, each with all its seeds;
# IMAGES, VAL_IMAGES, ITERS, JOBS, THREADS replace the scale's training images, validation
# images, iterations per run, runs side by side and torch threads per run (a throughput
# probe, a machine of another size: benchmarks/timed_table.sh sizes them to a deadline);
# SHOW=1 prints the sizes the call would use and makes nothing;
# ZERO_INIT=0 trains every backbone from its plain random init (default 1: each `fod train`
# run that starts from scratch, the teachers and the student alone, gets
# --zero-init-residual; any other value is refused; the recorded cpu table of the README
# was made before that, i.e. with ZERO_INIT=0). Distilled students always start from the
# plain init: at the cpu scale `ours` reached the same mean AP from either init, with far
# less spread between runs from the plain one, which a table of one run per method needs.
# AMP=1 trains every run with --amp (on the CPU bfloat16: about twice as fast on a CPU with
# AMX; on CUDA --amp is the default anyway); default 0 (the recorded cpu table: float32).
# FOD names the fod command (default .venv/bin/fod). On a GPU machine without the venv:
#
#   printf '#!/bin/sh\nexec python3 -m fod "$@"\n' > /tmp/fod && chmod +x /tmp/fod
#   export FOD=/tmp/fod PYTHONPATH=$PWD   # plus pycocotools where the machine lacks it
#   timeout 480 benchmarks/distill_table.sh OUT h200; TABLE_ONLY=1 benchmarks/distill_table.sh OUT h200
set -euo pipefail
OUT=${1:?usage: distill_table.sh OUT [smoke|cpu|gpu|h200]}
SCALE=${2:-cpu}
knobs=("${IMAGES:-}" "${VAL_IMAGES:-}" "${ITERS:-}" "${JOBS:-}" "${THREADS-unset}")
CROP=() JOBS=1 THREADS=''  # JOBS: runs side by side; THREADS: torch threads of each run
CJOBS=1  # runs the table evaluates at once (fod compare --jobs)
TCYCLES=1  # schedules the teachers train, one after the other (from scratch, R50 learns slower)
TWORKERS=''  # data loader processes of each teacher run (default: WORKERS)
# WARMUP: linear lr warm-up iterations, a small share of the run (the trainer's default of
# 500 would take all of a short run).
case $SCALE in
  smoke) SIZE=256x160 TRAIN=80 VAL=30 ITERS=120 BATCH=4 CH=64 CONVS=2 DEVICE=cpu WORKERS=1
    WARMUP=20 CJOBS=1 ;;
  cpu) SIZE=640x384 TRAIN=600 VAL=200 ITERS=400 BATCH=8 CH=64 CONVS=2 DEVICE=cpu WORKERS=1
    WARMUP=60 CROP=(--crop 256x256) JOBS=2 THREADS=1 TCYCLES=2 CJOBS=2 ;;
  gpu) SIZE=1280x800 TRAIN=3000 VAL=400 ITERS=12000 BATCH=8 CH=256 CONVS=4 DEVICE=cuda WORKERS=8
    WARMUP=500 CJOBS=4 ;;
  h200) SIZE=640x384 TRAIN=2080 VAL=300 ITERS=390 BATCH=16 CH=128 CONVS=4 DEVICE=cuda WORKERS=1
    WARMUP=60 TWORKERS=7 CROP=(--crop 384x256) JOBS=16 THREADS=2 CJOBS=14 TCYCLES=2 ;;
  *) echo "distill_table.sh: scale must be smoke, cpu, gpu or h200" >&2; exit 2 ;;
esac
TRAIN=${knobs[0]:-$TRAIN} VAL=${knobs[1]:-$VAL} ITERS=${knobs[2]:-$ITERS} JOBS=${knobs[3]:-$JOBS}
[[ ${knobs[4]} != unset ]] && THREADS=${knobs[4]}
for k in TRAIN VAL ITERS JOBS; do
  [[ ${!k} =~ ^[1-9][0-9]*$ ]] ||
    { echo "distill_table.sh: $k must be a positive integer, got '${!k}'" >&2; exit 2; }
done
SEEDS=${SEEDS:-0}
[[ $SEEDS =~ ^[0-9]+( [0-9]+)*$ ]] ||
  { echo "distill_table.sh: SEEDS must be seeds (integers) apart by spaces, got '$SEEDS'" >&2
    exit 2; }
if [[ ${SHOW:-0} == 1 ]]; then  # the sizes this call would use, nothing made (a planner)
  echo "SIZE=$SIZE TRAIN=$TRAIN VAL=$VAL ITERS=$ITERS BATCH=$BATCH JOBS=$JOBS DEVICE=$DEVICE" \
    "TCYCLES=$TCYCLES"
  exit 0
fi
case ${ZERO_INIT:-1} in  # refused before anything is made, like a bad scale
  0 | 1) ;;
  *) echo "distill_table.sh: ZERO_INIT must be 0 or 1, got $ZERO_INIT" >&2; exit 2 ;;
esac
case ${AMP:-0} in
  1) MP=(--amp) ;;
  0) MP=() ;;
  *) echo "distill_table.sh: AMP must be 0 or 1, got $AMP" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
FOD=${FOD:-.venv/bin/fod}
mkdir -p "$OUT/runs"
say() { printf '== %s\n' "$*"; }

for split in train:"$TRAIN":1 val:"$VAL":2; do
  IFS=: read -r name n seed <<< "$split"
  [[ -f "$OUT/$name/annotations.json" ]] || "$FOD" synth --out "$OUT/$name" --images "$n" \
    --sequences 0 --size "$SIZE" --preset hard --seed "$seed"
done
# Epochs from the iteration budget, so the lr schedule (warm-up, steps at 8/12 and 11/12)
# spans the run; validation once, at the end; last.pt every tenth of the run.
EPOCHS=$(( (ITERS * BATCH + TRAIN - 1) / TRAIN ))
SAVE=$(( ITERS / 10 > 10 ? ITERS / 10 : 10 ))
# Gradient clipping for every run alike: feature losses on raw FPN maps (mimic) can blow up.
common=(--data "$OUT/train" --val "$OUT/val" --size "$SIZE" "${CROP[@]}" --epochs "$EPOCHS"
  --batch "$BATCH" --fpn-channels "$CH" --stacked-convs "$CONVS" --grad-clip 35
  --warmup-iters "$WARMUP" --save-every "$SAVE" "${MP[@]}"
  --device "$DEVICE" --workers "$WORKERS" --eval-interval "$EPOCHS")
asked() {  # asked NAME: NAME is in RUNS (or no RUNS); a seed's run NAME-sN by its row
  local row=$1
  [[ $row =~ ^(.+)-s[0-9]+$ ]] && row=${BASH_REMATCH[1]}
  [[ -z ${RUNS:-} || " $RUNS " == *" $row "* ]]
}
seeded() {  # seeded NAME: NAME's run of each seed in SEEDS
  local s
  for s in $SEEDS; do if [[ $s == 0 ]]; then echo "$1"; else echo "$1-s$s"; fi; done
}
run() {  # run NAME VERB ARGS...: skipped when NAME finished before (metrics.json written);
  # a seed's run (NAME-sN) gets --seed N
  local name=$1 verb=$2
  shift 2
  if [[ -f "$OUT/runs/$name/metrics.json" ]]; then say "$name: done before"; return; fi
  [[ ${TABLE_ONLY:-0} == 1 ]] && return
  asked "$name" || return 0
  [[ $name =~ -s([0-9]+)$ ]] && set -- "$@" --seed "${BASH_REMATCH[1]}"
  local zi=()  # from scratch only: a run from --init brings its weights (the CLI refuses both)
  [[ ${ZERO_INIT:-1} == 1 && $verb == train && " $* " != *" --init "* ]] &&
    zi=(--zero-init-residual)
  local last=$OUT/runs/$name/last.pt args=("$@") from=()
  if [[ -f $last ]]; then  # stopped part-way: continue it (its weights, lr, optimizer state)
    args=() zi=() from=(--resume "$last")
    while (($#)); do  # --resume replaces the --init it started from (its architecture)
      if [[ $1 == --init ]]; then shift 2; continue; fi
      args+=("$1"); shift
    done
  else
    rm -rf "${OUT:?}/runs/$name"
    : > "$OUT/runs/$name.log"
  fi
  say "$name: fod $verb ${args[*]} ${from[*]}"
  local t0=$SECONDS
  local threads=()  # THREADS per training run only: the table afterwards has every core
  [[ -n $THREADS ]] && threads=(env "OMP_NUM_THREADS=$THREADS")
  if "${threads[@]}" "$FOD" "$verb" "${common[@]}" "${zi[@]}" "${from[@]}" "${args[@]}" \
    --out "$OUT/runs/$name" >> "$OUT/runs/$name.log" 2>&1; then
    say "$name: $((SECONDS - t0)) s"
  else  # one method failing (e.g. diverging) is a result too: the table goes on without it
    say "$name: FAILED after $((SECONDS - t0)) s: $(tail -n 1 "$OUT/runs/$name.log")"
  fi
}
cycles() {  # cycles NAME FIRST ARGS...: FIRST trains one schedule, then TCYCLES - 1 more
  # schedules follow in a row, each from the last one's weights (other crops: its own
  # seed); NAME is the last
  local name=$1 prev=$2 c to
  shift 2
  run "$prev" train "$@"
  for ((c = 2; c <= TCYCLES; c++)); do
    if [[ $c == "$TCYCLES" ]]; then to=$name; else to=$name-c$c; fi
    run "$to" train "$@" --init "$OUT/runs/$prev/last.pt" --seed "$c"
    prev=$to
  done
}
step() {  # step FN ARGS...: in the background, at most JOBS at once (the caller waits);
  # LAST: its pid, '' when it ran in the foreground
  LAST=''
  if [[ $JOBS -le 1 ]]; then "$@"; return; fi
  while [[ $(jobs -rp | wc -l) -ge $JOBS ]]; do wait -n || true; done
  "$@" &
  LAST=$!
}
first() { if [[ $TCYCLES -le 1 ]]; then echo "$1"; else echo "$1-c1"; fi; }
tw=(--workers "${TWORKERS:-$WORKERS}")
T=$OUT/runs/teacher/last.pt
nocarafe() {  # the teacher without CARAFE, then ours from it: one chain, so the other
  # distillations need not wait for this teacher
  cycles teacher-nocarafe "$(first teacher-nocarafe)" --arch gfl-r50 "${tw[@]}"
  local s
  for s in $(seeded ours-no-carafe); do
    run "$s" distill --teacher "$OUT/runs/teacher-nocarafe/last.pt"
  done
}
step cycles teacher "$(first teacher)" --arch gfl-r50 --teacher "${tw[@]}"
teacher=$LAST
step nocarafe
for s in $(seeded student); do
  if [[ $s != student || $TCYCLES -le 1 ]]; then  # the student alone needs no teacher
    step run "$s" train --arch gfl-r18
  else  # and at the teachers' schedule, to tell the architecture from the schedule
    step cycles student-long student --arch gfl-r18
  fi
done
# The distillations from the CARAFE teacher wait for it alone (reaped already if the pool
# waited on it).
[[ -n $teacher ]] && { wait "$teacher" 2> /dev/null || true; }
# Every distillation from the CARAFE teacher, "NAME ARGS...", the paper's comparison first;
# the table lists them in this order.
DISTILL=(
  "none --method none" "ours --method ours" "ld --method ld" "pkd --method pkd"
  "crosskd --method crosskd" "fgd --method fgd" "mimic --method mimic"
  "pkd-no-noise --method pkd --no-noise"  # PKD as published: the noise is the paper's own
  "ours-no-noise --no-noise"
  "ours-no-residual --no-residual"  # = mimic + LD
  "ours-no-ld --no-ld"  # = mimic + the residual adapters
  # As the adapters learn (R -> T - S) ours' pull on S falls to half of --no-residual's:
  # at twice the weight it ends at --no-residual's, so this row tells adapters from weight.
  "ours-w2 --feature-weight 2"
  # Controls for ours-w2: the same doubled pull without the adapters, and without LD too.
  "ours-w2-no-residual --feature-weight 2 --no-residual"
  "mimic-w2 --method mimic --feature-weight 2"
  "ours-own --features own"  # each map normalised by its own statistics, as PKD
  "ours-teacher --features teacher"  # both by the teacher's statistics
)
for d in "${DISTILL[@]}"; do
  read -r -a a <<< "$d"
  for s in $(seeded "${a[0]}"); do step run "$s" distill --teacher "$T" "${a[@]:1}"; done
done
wait
[[ ${TABLE:-1} == 0 ]] && { say "TABLE=0: no table"; exit 0; }

runs=() failed=() extra=()
[[ $TCYCLES -gt 1 ]] && extra=(teacher-c1 student-long)  # the teacher at the students' schedule
rows=()
for d in student "${DISTILL[@]%% *}"; do mapfile -t -O "${#rows[@]}" rows < <(seeded "$d"); done
for n in teacher "${extra[@]}" teacher-nocarafe "${rows[@]}" $(seeded ours-no-carafe); do
  asked "$n" || continue
  if [[ -f "$OUT/runs/$n/metrics.json" ]]; then runs+=("$OUT/runs/$n"); else failed+=("$n"); fi
done
"$FOD" compare --runs "${runs[@]}" --data "$OUT/val" --out "$OUT/table" \
  --size "$SIZE" --noisy --device "$DEVICE" --jobs "$CJOBS"
image=$(find "$OUT/val/images" -name '*.png' | sort | head -n 1)
heat=()
for n in teacher student ours; do [[ -f "$OUT/runs/$n/metrics.json" ]] && heat+=("$OUT/runs/$n"); done
[[ ${#heat[@]} -gt 0 ]] && "$FOD" heatmap --weights "${heat[@]}" --image "$image" --out "$OUT/table"
say "table: $OUT/table/compare.md, heatmaps: $OUT/table/heatmap.png"
if [[ ${#failed[@]} -gt 0 ]]; then
  say "failed or unfinished runs (not in the table): ${failed[*]}"
  exit 1
fi
