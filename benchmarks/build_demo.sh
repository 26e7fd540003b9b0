#!/usr/bin/env bash
# Rebuild the demo bundle (models/demo) from nothing: randomized-look sets, the student,
# uint8 grey export, INT8 calibration on noise-augmented images, the bundle with its recipe.
#
#   benchmarks/build_demo.sh WORK [cpu|gpu]
#
# cpu: 2 cores, ~3 h (native-resolution crops: a first schedule of 8 epochs, then shorter
# ones of EXTRA="3 4" epochs, each from the previous best.pt, its lr steps again); gpu: one
# GPU, full frames, one schedule (EXTRA="" unless set).
# Each stage is skipped when its output exists, and a training schedule killed part-way
# resumes from its last.pt (saved every 50 iterations), so an interrupted build continues
# where it stopped.
# TEACHER=ckpt distils the student from a trained teacher (`fod distill --method ours`)
# instead of training it alone. ZERO_INIT=1 starts the student alone's first schedule
# with `--zero-init-residual` (default 0: the plain random init, the cpu build the README
# measures through all three schedules; zero-init was ahead after the first schedule and
# behind after the second, one run each); a distilled student always starts from the plain
# init. AMP=1 trains every schedule with `--amp`: bfloat16 on the CPU (about 2x faster on a
# CPU with AMX or AVX512-BF16, slower without), float16 on a GPU (its default anyway).
# IMAGES (training images) and EPOCHS (the first schedule's) override the budget's: twice
# the images at half the epochs trains the same iterations on twice the looks. WORKERS
# overrides the data loader processes (cpu 1, gpu 8): on a GPU the loaders bound the run.
# TRAIN_ONLY=1 stops after the training schedules: train on a GPU machine that lacks the
# ONNX tools, copy WORK/run*/best.pt to WORK on a machine that has them, and run the same
# command there without TRAIN_ONLY (the sets are drawn again from their seeds, the
# schedules are skipped) for the export, calibration and bundle. NOTE="text" adds a line
# "# text" to the recipe, for what the commands alone do not say (a schedule stopped early).
# The bundle lands in WORK/bundle; copy it to models/demo.
set -euo pipefail

WORK=${1:?usage: build_demo.sh WORK [cpu|gpu]}
BUDGET=${2:-cpu}
FOD=${FOD:-fod}
VERSION=${VERSION:-$(date -u +%Y.%m.%d)}

case $BUDGET in
  cpu) IMAGES=${IMAGES:-2400} EPOCHS=${EPOCHS:-8} BATCH=16 SHAPE=(--crop 384x256)
    WORKERS=${WORKERS:-1} DEVICE=cpu EXTRA=${EXTRA-3 4} ;;
  gpu) IMAGES=${IMAGES:-6000} EPOCHS=${EPOCHS:-12} BATCH=32 SHAPE=() WORKERS=${WORKERS:-8}
    DEVICE=cuda EXTRA=${EXTRA-} ;;
  *) echo "budget must be cpu or gpu, got $BUDGET" >&2; exit 2 ;;
esac
case ${ZERO_INIT:-0} in
  1) ZI=(--zero-init-residual) ;;  # the first schedule only: the later ones start from --init
  0) ZI=() ;;
  *) echo "ZERO_INIT must be 0 or 1, got $ZERO_INIT" >&2; exit 2 ;;
esac
case ${AMP:-0} in
  1) MP=(--amp) ;;
  0) MP=() ;;
  *) echo "AMP must be 0 or 1, got $AMP" >&2; exit 2 ;;
esac
case ${TRAIN_ONLY:-0} in
  0 | 1) ;;
  *) echo "TRAIN_ONLY must be 0 or 1, got $TRAIN_ONLY" >&2; exit 2 ;;
esac
for knob in IMAGES EPOCHS WORKERS; do
  [[ ${!knob} =~ ^[1-9][0-9]*$ ]] || { echo "$knob must be a positive integer, got ${!knob}" >&2; exit 2; }
done
mkdir -p "$WORK"  # only once the knobs are known good: a refusal leaves nothing behind

RECIPE=()
step() {  # step OUTPUT CMD...: run CMD unless OUTPUT exists; record it for the manifest
  local out=$1; shift
  local cmd="fod ${*:2}"  # as a user types it, whatever FOD points at, paths under WORK/
  RECIPE+=(--recipe "${cmd//"$WORK"/WORK}")
  if [[ -e $out ]]; then echo "== $out exists, skipped: $*"; return; fi
  local run=("$@") dir=${out%/best.pt}
  if [[ $out == */best.pt && -f $dir/last.pt ]]; then
    # A schedule killed part-way left its last epoch: continue it (its lr, its optimizer
    # state) instead of starting over; --resume replaces the --init it started from.
    run=()
    while (($#)); do
      if [[ $1 == --init ]]; then shift 2; continue; fi
      run+=("$1"); shift
    done
    run+=(--resume "$dir/last.pt")
  fi
  echo "== ${run[*]}"
  "${run[@]}"
}

# Training families only (random); the held-out look is for measuring generalisation.
step "$WORK/train" "$FOD" synth --out "$WORK/train" --images "$IMAGES" --sequences 0 \
  --size 640x384 --seed 31 --look random
step "$WORK/val" "$FOD" synth --out "$WORK/val" --images 150 --sequences 0 \
  --size 640x384 --seed 32 --look random
step "$WORK/cal" "$FOD" synth --out "$WORK/cal" --images 300 --sequences 0 \
  --size 640x384 --seed 33 --look random

COMMON=(--data "$WORK/train" --val "$WORK/val" --arch gfl-r18 --size 640x384 "${SHAPE[@]}"
  --fpn-channels 64 --stacked-convs 2 --batch "$BATCH" --workers "$WORKERS" --device "$DEVICE"
  --save-every 50 "${MP[@]}")
TRAIN_ARGS=("${COMMON[@]}" --epochs "$EPOCHS" --warmup-iters 300 --eval-interval "$EPOCHS"
  --out "$WORK/run")
if [[ -n ${TEACHER:-} ]]; then
  step "$WORK/run/best.pt" "$FOD" distill --teacher "$TEACHER" --method ours "${TRAIN_ARGS[@]}"
else
  step "$WORK/run/best.pt" "$FOD" train "${TRAIN_ARGS[@]}" "${ZI[@]}"
fi
# Further schedules (the student's own losses), each from the previous best: on two cores
# the first schedule leaves the student under-trained, and a restarted lr keeps gaining.
MODEL=$WORK/run/best.pt k=1
for e in $EXTRA; do
  k=$((k + 1))
  step "$WORK/run-$k/best.pt" "$FOD" train --init "$MODEL" "${COMMON[@]}" --epochs "$e" \
    --warmup-iters 20 --eval-interval "$e" --seed $((k - 1)) --out "$WORK/run-$k"
  MODEL=$WORK/run-$k/best.pt
done
if [[ ${TRAIN_ONLY:-0} == 1 ]]; then echo "== trained: $MODEL (TRAIN_ONLY=1)"; exit 0; fi
step "$WORK/demo.onnx" "$FOD" export --weights "$MODEL" --out "$WORK/demo.onnx" \
  --size 640x384 --input uint8 --mono
step "$WORK/cal-out" "$FOD" calibrate --onnx "$WORK/demo.onnx" --data "$WORK/cal" \
  --val "$WORK/val" --out "$WORK/cal-out" --images 200 --seed 0
[[ -n ${NOTE:-} ]] && RECIPE+=(--recipe "# $NOTE")
# Reference frames: the first 8 val images with objects, which the unit's backend must find.
step "$WORK/bundle" "$FOD" bundle make --int8-cpu "$WORK/cal-out/model.int8-cpu.onnx" \
  --report "$WORK/cal-out/report.json" --reference "$WORK/val" --reference-images 8 \
  --out "$WORK/bundle" --name demo --version "$VERSION" "${RECIPE[@]}"
du -sh "$WORK/bundle"
