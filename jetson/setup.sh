#!/usr/bin/env bash
# Provision a Jetson unit for pharma-fod: from a flashed JetPack to the supervised service.
#
#   sudo jetson/setup.sh [--dry-run] [--source SPEC] [--constraints FILE] [--lock-clocks]
#                        [--nvpmodel MODE] [--user NAME] [--prefix DIR] [--no-apt] [--force]
#                        [--archive-to DIR [--archive-on CALENDAR] [--archive-keep N]]
#
# Idempotent: run it again after a JetPack or package upgrade. --dry-run prints every
# action and changes nothing (runs anywhere, no root needed). It does not start the
# service until /etc/pharma-fod/line.toml exists (put the unit's config there, run
# `fod check`, then `systemctl start pharma-fod`). --constraints pins what pip installs to a
# validated unit's `pip freeze --local --exclude pharma-fod`: every unit runs the same versions.
# The unit's audit key is made once, on the unit. --archive-to moves the oldest audit files
# there daily (03:00; `fod audit archive`, keeping 2), from the fleet role's unit templates.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DRY_RUN=0
SOURCE=$(cd "$HERE/.." && pwd)  # what pip installs: this checkout, a wheel or an index spec
CONSTRAINTS=""             # pip -c: the fleet's validated versions (pip freeze of one unit)
PREFIX=/opt/pharma-fod     # the venv
ETC=/etc/pharma-fod        # line.toml, keys, clocks.env
STATE=/var/lib/pharma-fod  # bundles, engines, audit
SVC_USER=pharma-fod
LOCK_CLOCKS=0
NVPMODEL_MODE=""
APT=1
FORCE=0
ROOT=${FOD_SETUP_ROOT:-}   # read the board's files under this prefix (tests)
ARCHIVE_TO=""              # where `fod audit archive` moves the oldest audit files ("" = off)
ARCHIVE_ON="*-*-* 03:00"   # systemd OnCalendar of its timer
ARCHIVE_KEEP=2             # newest audit files that stay on the unit

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
say() { printf '== %s\n' "$*"; }
fail() { echo "setup.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in  # an option that takes a value and is given none: named, not "unbound variable"
    --source | --constraints | --prefix | --user | --nvpmodel | --archive-to | --archive-on | --archive-keep)
      [[ $# -ge 2 && $2 != --* ]] || fail "$1 needs a value (see --help)" ;;
  esac
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --source) SOURCE=$2; shift ;;
    --constraints) CONSTRAINTS=$2; shift ;;
    --prefix) PREFIX=$2; shift ;;
    --user) SVC_USER=$2; shift ;;
    --lock-clocks) LOCK_CLOCKS=1 ;;
    --nvpmodel) NVPMODEL_MODE=$2; LOCK_CLOCKS=1; shift ;;
    --no-apt) APT=0 ;;
    --force) FORCE=1 ;;
    --archive-to) ARCHIVE_TO=$2; shift ;;
    --archive-on) ARCHIVE_ON=$2; shift ;;
    --archive-keep) ARCHIVE_KEEP=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) fail "unknown option $1 (see --help)" ;;
  esac
  shift
done

# Values go into unit files through sed: no sed metacharacters, no newlines.
for v in "$SVC_USER" "$PREFIX" "$STATE" "$ARCHIVE_TO" "$ARCHIVE_ON"; do
  [[ $v != *[\|\&\\]* && $v != *$'\n'* ]] || fail "'$v': no |, & or \\ in a path, user or calendar"
done
if [[ -n $ARCHIVE_TO && $ARCHIVE_TO != /* ]]; then fail "--archive-to $ARCHIVE_TO: an absolute path"; fi
[[ $ARCHIVE_KEEP =~ ^[1-9][0-9]*$ ]] || fail "--archive-keep $ARCHIVE_KEEP: a whole number >= 1"
# Print a command, then run it unless --dry-run: the log says what changed (the Ansible
# base role reads its changed state from these lines).
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ $DRY_RUN -eq 0 ]]; then
    "$@"
  fi
}
TEMPLATES=$HERE/ansible/roles/runtime/templates
# The fleet role's template $1 with this script's values into $2 (plain {{ var }} only).
render() {
  [[ -r $TEMPLATES/$1.j2 ]] || fail "$TEMPLATES/$1.j2: not found (run setup.sh from a checkout)"
  sed -e "s|{{ fod_user }}|$SVC_USER|g" -e "s|{{ fod_prefix }}|$PREFIX|g" \
    -e "s|{{ fod_state }}|$STATE|g" -e "s|{{ fod_audit_archive_to }}|$ARCHIVE_TO|g" \
    -e "s|{{ fod_audit_archive_on }}|$ARCHIVE_ON|g" \
    -e "s|{{ fod_audit_archive_keep }}|$ARCHIVE_KEEP|g" "$TEMPLATES/$1.j2" > "$2"
  if grep -q '{[{%]' "$2"; then fail "$1.j2: a template setup.sh cannot fill"; fi
}
# Install a file with owner and mode, only when its content differs (idempotent).
put() {
  local mode=$1 src=$2 dst=$3
  if [[ -f $dst ]] && cmp -s "$src" "$dst"; then
    say "$dst is up to date"
  else
    run install -D -m "$mode" "$src" "$dst"
  fi
}

# --- what this machine is -------------------------------------------------------------------
L4T=""
if [[ -r "$ROOT/etc/nv_tegra_release" ]]; then
  L4T=$(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\).*/R\1.\2/p' "$ROOT/etc/nv_tegra_release")
fi
case "${L4T%%.*}" in
  R35) JETPACK=5 ;;  # TensorRT 8.5, Python 3.8, gpiozero 1.6 era
  R36) JETPACK=6 ;;  # TensorRT 8.6 (6.0) or 10.3 (6.1/6.2)
  R38) JETPACK=7 ;;
  "") JETPACK="" ;;
  *) JETPACK="unsupported" ;;
esac
MODEL=$({ tr -d '\0' < "$ROOT/proc/device-tree/model"; } 2> /dev/null || echo "unknown board")
if [[ -z $L4T ]]; then
  say "not a Jetson (no /etc/nv_tegra_release): $MODEL"
  if [[ $DRY_RUN -eq 0 && $FORCE -eq 0 ]]; then
    echo "setup.sh: refusing to provision a non-Jetson machine (--force to do it anyway)" >&2
    exit 2
  fi
else
  say "$MODEL, L4T $L4T (JetPack $JETPACK)"
  if [[ $JETPACK == unsupported ]]; then
    echo "setup.sh: L4T $L4T is not supported (JetPack 5.1+ needed: TensorRT 8.5.1+)" >&2
    exit 2
  fi
fi
TRT=$(dpkg-query -W -f='${Version}' python3-libnvinfer 2>/dev/null || true)
say "TensorRT Python bindings: ${TRT:-not installed yet (apt python3-libnvinfer)}"
if [[ $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
  echo "setup.sh: run as root (sudo), or with --dry-run" >&2
  exit 2
fi

# --- packages -------------------------------------------------------------------------------
if [[ $APT -eq 1 ]]; then
  say "apt packages"
  # python3-libnvinfer: TensorRT's bindings come from JetPack, never from pip.
  PKGS=(python3-venv python3-dev python3-pip v4l-utils)
  [[ -n $L4T ]] && PKGS+=(python3-libnvinfer nvidia-l4t-gstreamer)
  run apt-get update
  run apt-get install -y --no-install-recommends "${PKGS[@]}"
fi

# --- the venv (sees JetPack's TensorRT through the system site-packages) --------------------
say "venv in $PREFIX/venv"
if [[ ! -x "$PREFIX/venv/bin/python" ]]; then
  run python3 -m venv --system-site-packages "$PREFIX/venv"
fi
PIN=()
if [[ -n $CONSTRAINTS ]]; then
  if [[ ! -r $CONSTRAINTS ]]; then
    echo "setup.sh: --constraints $CONSTRAINTS: no such readable file" >&2
    exit 2
  fi
  say "versions pinned by $CONSTRAINTS"
  PIN=(-c "$CONSTRAINTS")
fi
run "$PREFIX/venv/bin/pip" install --upgrade pip  # first, unpinned: the pins are read by the new pip
run "$PREFIX/venv/bin/pip" install "${PIN[@]}" "${SOURCE}[edge,jetson]"

# --- the service user, groups, folders ------------------------------------------------------
say "service user $SVC_USER in gpio and video"
for g in gpio video; do
  getent group "$g" > /dev/null || run groupadd --system "$g"
done
if ! id -u "$SVC_USER" > /dev/null 2>&1; then
  run useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin --user-group "$SVC_USER"
fi
run usermod -a -G gpio,video "$SVC_USER"
run install -d -m 0755 "$ETC"
run install -d -o "$SVC_USER" -g "$SVC_USER" -m 0750 "$STATE" "$STATE/bundles" "$STATE/engines" "$STATE/audit"
# The audit trail's signing key: made here, readable by the service user only, never copied
# off the unit; its public half is what QA verifies the trail with.
run install -d -o "$SVC_USER" -g "$SVC_USER" -m 0700 "$STATE/keys"
if [[ -f $STATE/keys/audit.key ]]; then
  say "audit key $STATE/keys/audit.key present"
else
  say "the unit's audit key"
  run runuser -u "$SVC_USER" -- "$PREFIX/venv/bin/fod" keygen --out "$STATE/keys" --name audit
fi

# --- udev, systemd --------------------------------------------------------------------------
say "udev rules and the service"
put 0644 "$HERE/99-pharma-fod.rules" /etc/udev/rules.d/99-pharma-fod.rules
run udevadm control --reload-rules
run udevadm trigger --subsystem-match=gpio --subsystem-match=video4linux
put 0644 "$HERE/pharma-fod.service" /etc/systemd/system/pharma-fod.service
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ $LOCK_CLOCKS -eq 1 ]]; then
  say "fixed clocks at boot${NVPMODEL_MODE:+ (nvpmodel mode $NVPMODEL_MODE)}"
  printf 'NVPMODEL_MODE=%s\n' "$NVPMODEL_MODE" > "$tmp/clocks.env"
  put 0644 "$tmp/clocks.env" "$ETC/clocks.env"
  put 0644 "$HERE/pharma-fod-clocks.service" /etc/systemd/system/pharma-fod-clocks.service
fi
if [[ -n $ARCHIVE_TO ]]; then
  say "audit archive to $ARCHIVE_TO, $ARCHIVE_ON, keeping $ARCHIVE_KEEP files"
  for unit in pharma-fod-archive.service pharma-fod-archive.timer; do
    render "$unit" "$tmp/$unit"
    put 0644 "$tmp/$unit" "/etc/systemd/system/$unit"
  done
  say "  $(grep '^ExecStart=' "$tmp/pharma-fod-archive.service")"
fi
run systemctl daemon-reload
if [[ $LOCK_CLOCKS -eq 1 ]]; then
  run systemctl enable --now pharma-fod-clocks.service
fi
if [[ -n $ARCHIVE_TO ]]; then
  run systemctl enable --now pharma-fod-archive.timer
fi
run systemctl enable pharma-fod.service

# --- config ---------------------------------------------------------------------------------
if [[ -f "$ETC/line.toml" ]]; then
  say "$ETC/line.toml present: check it with '$PREFIX/venv/bin/fod check --config $ETC/line.toml'"
else
  say "no $ETC/line.toml yet: write the unit's config (edge/line.example.toml), with"
  say "  [audit] signing_key = \"$STATE/keys/audit.key\", then"
  say "  $PREFIX/venv/bin/fod check --config $ETC/line.toml && systemctl start pharma-fod"
fi
say "QA verifies this unit's audit trail with $STATE/keys/audit.pub (fod audit verify --public-key)"
if [[ $DRY_RUN -eq 1 ]]; then say "done (dry run: nothing changed)"; else say "done"; fi
