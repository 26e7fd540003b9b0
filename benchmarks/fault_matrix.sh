#!/usr/bin/env bash
# The fault matrix of the simulated line: each fault class alone at p = 0.2, then all of
# them together at p = 0.05, then an engine that goes blind for good (`blind`, p = 0.05 a
# container: its onset; the reference rounds must stop the line), through the demo bundle
# with the gate model judging what physically happened. Prints one Markdown table; each run's summary.json stays in OUT.
# Usage: benchmarks/fault_matrix.sh [OUT=fault-matrix] [CONTAINERS=200] [RATE=100] [FRAMES=4]
set -euo pipefail
out=${1:-fault-matrix}
n=${2:-200}
rate=${3:-100}
frames=${4:-4}
fod=${FOD:-fod}
mkdir -p "$out"
red=()  # runs that broke a safety invariant (`fod simulate` exit 1): their rows still print
kinds="camera_drop corrupt black frozen stall nan backend_error slow stale_output thread_crash gpio_error bounce audit_error"
echo "| faults | containers | injected | fault rows | alarms | passed_defective (model misses) | passed_faulty | audit_disagrees | ghosts |"
echo "|---|---|---|---|---|---|---|---|---|"
for spec in $(for k in $kinds; do echo "$k=0.2"; done) all=0.05 blind=0.05; do
  dir="$out/${spec%%=*}"
  rm -rf "$dir"
  rc=0
  "$fod" simulate --out "$dir" --containers "$n" --rate "$rate" --frames "$frames" \
    --faults "$spec" --seed 1 --json 2>"$dir.log" >"$dir.json" || rc=$?
  if [[ $rc == 1 ]]; then red+=("$spec"); elif [[ $rc != 0 ]]; then cat "$dir.log" >&2; exit "$rc"; fi
  python3 - "$spec" "$dir.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[2]))
print(f"| {sys.argv[1]} | {s['containers']} | {sum(s['injected'].values())} | "
      f"{sum(s['faults'].values())} | {s['alarms']} | {s['passed_defective']} ({s['missed_by_model']}) | "
      f"{s['passed_faulty']} | {s['audit_disagrees']} | {s['ghost_containers']} |")
PY
done
if [[ ${#red[@]} -gt 0 ]]; then
  echo "SAFETY VIOLATED in: ${red[*]} (each run's log: $out/<fault>.log)" >&2
  exit 1
fi
