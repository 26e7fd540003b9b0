#!/usr/bin/env bash
# A fleet rollout rehearsed on this machine: jetson/ansible/rollout.yml against two local
# folders standing for two stations of a line, with a fake service (restart appends to a
# log; the probe fails while a bundle whose version says "crash" is current).
#
#   benchmarks/rollout_rehearsal.sh [WORKDIR]
#
# 1. bundle 1.0.0 goes to both stations (done, done);
# 2. bundle 1.1.0-crash: station 1 switches, fails its probe, rolls back to 1.0.0 with a
#    permit; the play stops there, station 2 is never touched;
# 3. bundle 1.2.0, whose model renamed a class the stations' configs tune
#    (decision.class_thresholds.glass_flake): refused at station 1's check, nothing switched.
# Prints each station's current bundle after each round; exits non-zero if any differs
# from that expectation.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
FOD=$PWD/.venv/bin/fod
PLAY=$PWD/.venv/bin/ansible-playbook
export ANSIBLE_CONFIG=$PWD/jetson/ansible/ansible.cfg

"$FOD" keygen --out "$WORK/keys" > /dev/null
mkdir -p "$WORK/prefix" && ln -sfn "$PWD/.venv" "$WORK/prefix/venv"
for v in 1.0.0 1.1.0-crash; do
  "$FOD" bundle make --int8-cpu models/demo/model.int8-cpu.onnx --name line-a --version "$v" \
    --sign "$WORK/keys/fod_signing.key" --tar --out "$WORK/line-a-$v" > /dev/null
done
mkdir -p "$WORK/renamed"
.venv/bin/python - "$WORK/renamed/model.int8-cpu.onnx" << 'PY'
import json, sys
import onnx
m = onnx.load("models/demo/model.int8-cpu.onnx")
meta = {p.key: p.value for p in m.metadata_props}
meta["class_names"] = json.dumps(["fiber", "particle", "flake"])
del m.metadata_props[:]
onnx.helper.set_model_props(m, meta)
onnx.save(m, sys.argv[1])
PY
"$FOD" bundle make --int8-cpu "$WORK/renamed/model.int8-cpu.onnx" --name line-a \
  --version 1.2.0 --sign "$WORK/keys/fod_signing.key" --tar --out "$WORK/line-a-1.2.0" > /dev/null

inv=$WORK/inventory.yml
{
  echo "all:"
  echo "  vars:"
  echo "    ansible_connection: local"
  echo "    ansible_python_interpreter: $PWD/.venv/bin/python"
  echo "  hosts:"
  for s in 1 2; do
    st=$WORK/station$s
    mkdir -p "$st/etc" "$st/state"
    cat > "$st/etc/line.toml" << TOML
[camera]
mono = true
[model]
bundle = "$st/state/current"
public_key = "$WORK/keys/fod_signing.pub"
[decision.class_thresholds]
glass_flake = 0.6
[gpio]
pin_factory = "mock"
[audit]
folder = "$st/state/audit"
[metrics]
port = 0
TOML
    echo "    station$s:"  # host variables: they win over the playbook's group_vars
    echo "      fod_prefix: $WORK/prefix"
    echo "      fod_settle_s: 0"
    echo "      fod_etc: $st/etc"
    echo "      fod_state: $st/state"
    echo "      fod_restart_cmd: sh -c 'echo restart >> $st/restarts'"
    echo "      fod_probe_cmd: sh -c '! grep -q crash $st/state/current/manifest.json'"
  done
} > "$inv"

current() { sed -n 's/.*"version": "\(.*\)".*/\1/p' "$WORK/station$1/state/current/manifest.json" 2> /dev/null || echo none; }
round() {
  local bundle=$1 want1=$2 want2=$3 rc=0
  "$PLAY" -i "$inv" jetson/ansible/rollout.yml -e "fod_bundle=$bundle" > "$WORK/round.log" 2>&1 || rc=$?
  echo "$(basename "$bundle"): playbook rc=$rc; current: station1 $(current 1), station2 $(current 2)"
  for s in 1 2; do
    local j=$WORK/station$s/state/rollouts.jsonl
    if [[ -s $j && $(grep -c "$(basename "$bundle")" "$j") -gt 0 ]]; then
      grep "$(basename "$bundle")" "$j" | .venv/bin/python -c '
import json, sys
for e in map(json.loads, sys.stdin):
    print("    station%s %-15s %s %s" % (sys.argv[1], e["step"], "ok  " if e["ok"] else "FAIL", e["detail"][:90]))' "$s"
    else
      echo "    station$s untouched"
    fi
  done
  [[ $(current 1) == "$want1" && $(current 2) == "$want2" ]]
}
round "$WORK/line-a-1.0.0.tar.gz" 1.0.0 1.0.0
round "$WORK/line-a-1.1.0-crash.tar.gz" 1.0.0 1.0.0
round "$WORK/line-a-1.2.0.tar.gz" 1.0.0 1.0.0
permit=$WORK/station1/state/audit/rollback-permit.json
[[ -s $permit ]] || { echo "no rollback permit at station1" >&2; exit 1; }
echo "station1's rollback permit (for the service's next start): $(cat "$permit")"
echo "rehearsal as expected (work in $WORK)"
