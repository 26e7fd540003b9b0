#!/usr/bin/env bash
# The issue-4 measurement run on one GPU, inside a fixed wall-clock budget:
# synthetic train/val sets, a short throughput probe, then GFL-R18, GFL-R50 and
# the small demo student trained side by side with epochs sized to the budget.
# From scratch (no ImageNet file here), batch 32, lr 0.01 with gradient clipping:
# GFL-R50 diverged at lr 0.02 during warm-up.
# Usage: benchmarks/gpu_train.sh WORKDIR [BUDGET_S]   (summaries and logs land in WORKDIR)
# Needs torch, torchvision, opencv, pycocotools, tensorboard on PYTHONPATH.
set -euo pipefail
W=${1:?workdir}
BUDGET=${2:-420}  # seconds of training for all three runs together
FOD="python3 -m fod"
export PYTHONUNBUFFERED=1
mkdir -p "$W"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, torchvision.__version__)" \
  | tee -a "$W/gpu.txt"

t0=$(date +%s)
$FOD synth --out "$W/train" --images 2000 --sequences 0 --seed 11 --workers 16 --json
$FOD synth --out "$W/val" --images 200 --sequences 0 --seed 12 --workers 16 --json
$FOD synth --out "$W/train640" --images 3000 --sequences 0 --size 640x384 --seed 21 --workers 16 --json
$FOD synth --out "$W/val640" --images 150 --sequences 0 --size 640x384 --seed 22 --workers 16 --json
echo "synth: $(( $(date +%s) - t0 )) s" | tee -a "$W/gpu.txt"

# name data crop batch extra-args
RUNS=(
  "r18|train|val|gfl-r18|1280x800|--crop 512x512|32|"
  "r50|train|val|gfl-r50|1280x800|--crop 512x512|32|"
  "demo|train640|val640|gfl-r18|640x384||32|--fpn-channels 64 --stacked-convs 2"
)
launch() {  # $1 spec, $2 epochs, $3 out, $4 extra
  IFS='|' read -r name data val arch size crop batch extra <<<"$1"
  # shellcheck disable=SC2086
  $FOD train --data "$W/$data" --arch "$arch" --size "$size" $crop \
    --batch "$batch" --epochs "$2" --workers 5 --warmup-iters 300 --lr 0.01 --grad-clip 35 $extra $4 \
    --out "$3" --json
}

# Probe: 40 iterations of each, together, as they will run.
for spec in "${RUNS[@]}"; do
  name=${spec%%|*}
  launch "$spec" 1 "$W/probe-$name" "--max-iters 40" \
    > "$W/probe-$name.json" 2> "$W/probe-$name.log" &
done
wait
left=$(( BUDGET - ($(date +%s) - t0) ))
echo "training budget left: $left s" | tee -a "$W/gpu.txt"

for spec in "${RUNS[@]}"; do
  IFS='|' read -r name data val _ <<<"$spec"
  n=$(python3 -c "import json; print(len(json.load(open('$W/$data/annotations.json'))['images']))")
  ips=$(python3 -c "import json; print(json.load(open('$W/probe-$name.json'))['images_per_s'])")
  # 85 % of the time for steps; the rest for evaluations, checkpoints and worker start-up.
  ep=$(python3 -c "print(max(1, int(0.85 * $left * $ips / $n)))")
  ev=$(python3 -c "print(max(1, $ep // 2))")
  echo "$name: $ips img/s in the probe -> $ep epochs, eval every $ev" | tee -a "$W/gpu.txt"
  launch "$spec" "$ep" "$W/run-$name" "--val $W/$val --eval-interval $ev" \
    > "$W/$name.json" 2> "$W/$name.log" &
done
wait
echo "total: $(( $(date +%s) - t0 )) s" | tee -a "$W/gpu.txt"
