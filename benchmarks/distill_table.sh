#!/usr/bin/env bash
# The paper's distillation experiment in one command: the benchmark sets (fod synth --preset
# hard), the CARAFE teacher, the teacher without CARAFE, the student alone, every method,
# the ablation of ours, one `fod compare` table (clean and noisy val) and `fod heatmap`.
#
#   benchmarks/distill_table.sh OUT [cpu|gpu]
#
# Every run has the same schedule. `gpu` is the full-size experiment (1280x800, GFL-R50
# teacher, a few hours on one GPU); `cpu` the same commands at a smoke scale (small images,
# narrow heads, a hundred-odd iterations: its figures show the pipeline works, they do not
# rank the methods). Each step is skipped when its output exists, so a stopped run resumes.
set -euo pipefail
OUT=${1:?usage: distill_table.sh OUT [cpu|gpu]}
SCALE=${2:-cpu}
case $SCALE in
  cpu) SIZE=256x160 TRAIN=80 VAL=30 ITERS=120 BATCH=4 CH=64 CONVS=2 DEVICE=cpu WORKERS=1 ;;
  gpu) SIZE=1280x800 TRAIN=3000 VAL=400 ITERS=12000 BATCH=8 CH=256 CONVS=4 DEVICE=cuda WORKERS=8 ;;
  *) echo "distill_table.sh: scale must be cpu or gpu" >&2; exit 2 ;;
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
# spans the run; validation once, at the end.
EPOCHS=$(( (ITERS * BATCH + TRAIN - 1) / TRAIN ))
# Gradient clipping for every run alike: feature losses on raw FPN maps (mimic) can blow up.
common=(--data "$OUT/train" --val "$OUT/val" --size "$SIZE" --epochs "$EPOCHS"
  --batch "$BATCH" --fpn-channels "$CH" --stacked-convs "$CONVS" --grad-clip 35
  --device "$DEVICE" --workers "$WORKERS" --eval-interval "$EPOCHS")
failed=()
run() {  # run NAME VERB ARGS...: skipped when NAME finished before (metrics.json written)
  local name=$1
  shift
  if [[ -f "$OUT/runs/$name/metrics.json" ]]; then say "$name: done before"; return; fi
  rm -rf "${OUT:?}/runs/$name"
  say "$name: fod $*"
  local t0=$SECONDS
  if "$FOD" "$@" --out "$OUT/runs/$name" "${common[@]}" > "$OUT/runs/$name.log" 2>&1; then
    say "$name: $((SECONDS - t0)) s"
  else  # one method failing (e.g. diverging) is a result too: the table goes on without it
    say "$name: FAILED after $((SECONDS - t0)) s: $(tail -n 1 "$OUT/runs/$name.log")"
    failed+=("$name")
  fi
}
run teacher train --arch gfl-r50 --teacher
run teacher-nocarafe train --arch gfl-r50
run student train --arch gfl-r18
T=$OUT/runs/teacher/last.pt
for m in none mimic ld pkd fgd crosskd ours; do
  run "$m" distill --method "$m" --teacher "$T"
done
run ours-no-noise distill --teacher "$T" --no-noise
run ours-no-residual distill --teacher "$T" --no-residual
run ours-no-ld distill --teacher "$T" --no-ld
run ours-no-carafe distill --teacher "$OUT/runs/teacher-nocarafe/last.pt"

runs=()
for n in teacher teacher-nocarafe student none mimic ld pkd fgd crosskd ours ours-no-noise \
  ours-no-residual ours-no-ld ours-no-carafe; do
  [[ -f "$OUT/runs/$n/metrics.json" ]] && runs+=("$OUT/runs/$n")
done
"$FOD" compare --runs "${runs[@]}" --data "$OUT/val" --out "$OUT/table" \
  --size "$SIZE" --noisy --device "$DEVICE"
image=$(find "$OUT/val/images" -name '*.png' | sort | head -n 1)
"$FOD" heatmap --weights "$OUT/runs/teacher" "$OUT/runs/student" "$OUT/runs/ours" \
  --image "$image" --out "$OUT/table"
say "table: $OUT/table/compare.md, heatmaps: $OUT/table/heatmap.png"
if [[ ${#failed[@]} -gt 0 ]]; then
  say "failed runs (not in the table): ${failed[*]}"
  exit 1
fi
