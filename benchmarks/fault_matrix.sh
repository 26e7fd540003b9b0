#!/usr/bin/env bash
# The fault matrix of the simulated line: each fault class alone at p = 0.2, then all of
# them together at p = 0.05, then an engine that goes blind for good (`blind`, p = 0.05 a
# container: its onset; the reference rounds must stop the line), through the demo bundle
# with the gate model judging what physically happened. Then the machine's own faults
# (MACHINE=0 skips them; SOFTWARE=0 the first table): a gate write that blocks in the
# driver, an off write that fails with the driver failing for a while after it, each with
# both wirings, and a relay that welds, with the gate feedback wired. No software stops
# every container those pass; what must hold is that the audit says what the gate did and
# the alarm is up (`machine_violations` of the run's summary). Prints two Markdown tables;
# each run's summary.json stays in OUT.
# SIM_ARGS: more flags for every run (e.g. "--alarm-output ready").
# Usage: [SOFTWARE=1] [MACHINE=1] [SIM_ARGS=] benchmarks/fault_matrix.sh [OUT=fault-matrix] [CONTAINERS=200] [RATE=100] [FRAMES=4]
set -euo pipefail
out=${1:-fault-matrix}
n=${2:-200}
rate=${3:-100}
frames=${4:-4}
fod=${FOD:-fod}
read -ra extra <<< "${SIM_ARGS:-}"  # its words, for every run
mkdir -p "$out"
red=()  # runs that broke a safety invariant: their rows still print

run() {  # run NAME ARGS...: one simulated line into OUT/NAME -> its exit status in rc
  local dir="$out/$1"
  shift
  rm -rf "$dir"
  rc=0
  "$fod" simulate --out "$dir" --containers "$n" --rate "$rate" --frames "$frames" \
    --seed 1 --json ${extra[@]+"${extra[@]}"} "$@" 2>"$dir.log" >"$dir.json" || rc=$?
  if [[ $rc != 0 && $rc != 1 ]]; then cat "$dir.log" >&2; exit "$rc"; fi
}

if [[ ${SOFTWARE:-1} == 1 ]]; then
  kinds="camera_drop corrupt black frozen stall nan backend_error slow stale_output thread_crash gpio_error bounce audit_error"
  echo "| faults | containers | injected | fault rows | alarms | passed_defective (model misses) | passed_faulty | audit_disagrees | ghosts |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for spec in $(for k in $kinds; do echo "$k=0.2"; done) all=0.05 blind=0.05; do
    run "${spec%%=*}" --faults "$spec"
    [[ $rc == 1 ]] && red+=("$spec")  # `fod simulate` exits 1 on a broken invariant
    python3 - "$spec" "$out/${spec%%=*}.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[2]))
print(f"| {sys.argv[1]} | {s['containers']} | {sum(s['injected'].values())} | "
      f"{sum(s['faults'].values())} | {s['alarms']} | {s['passed_defective']} ({s['missed_by_model']}) | "
      f"{s['passed_faulty']} | {s['audit_disagrees']} | {s['ghost_containers']} |")
PY
  done
fi

if [[ ${MACHINE:-1} == 1 ]]; then
  # The gate feedback (the relay's auxiliary contact) on a mock input that follows the gate;
  # the runs' own delay, the metrics endpoint off.
  feedback="$out/feedback.toml"
  printf '[gpio]\ngate_feedback_pin = "GPIO23"\n[metrics]\nport = 0\n' > "$feedback"
  [[ ${SOFTWARE:-1} == 1 ]] && echo  # between the tables
  echo "| machine fault | wiring | gate feedback | containers | injected | passed | passed_faulty | audit_uncertain | audit_disagrees | alarms | ghosts | holds |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for row in gpio_hang=0.1:accept: gpio_hang=0.1:reject: gpio_off_error=0.1:accept: \
    gpio_off_error=0.1:reject: relay_welded=0.05:accept:fb relay_welded=0.05:reject:fb; do
    IFS=: read -r spec wiring fb <<< "$row"
    name="machine-${spec%%=*}-$wiring"
    cfg=()
    [[ -n $fb ]] && cfg=(--config "$feedback" --delay-ms 3000)
    run "$name" --faults "$spec" --wiring "$wiring" "${cfg[@]}"
    python3 - "$spec" "$wiring" "${fb:+yes}" "$out/$name.json" <<'PY' || red+=("$spec $wiring")
import json, sys
spec, wiring, fb, path = sys.argv[1:]
s = json.load(open(path))
broke = s["machine_violations"]
print(f"| {spec} | {wiring} | {fb or 'no'} | {s['containers']} | {sum(s['injected'].values())} | "
      f"{s['physically_passed']} | {s['passed_faulty']} | {s['audit_uncertain']} | "
      f"{s['audit_disagrees']} | {s['alarms']} | {s['ghost_containers']} | "
      f"{'yes' if not broke else 'NO: ' + ', '.join(broke)} |")
sys.exit(1 if broke else 0)
PY
  done
fi
if [[ ${#red[@]} -gt 0 ]]; then
  echo "SAFETY VIOLATED in: ${red[*]} (each run's log: $out/<run>.log)" >&2
  exit 1
fi
