"""jetson/: the setup script, the systemd unit, udev rules, the Ansible playbooks and the
container image, checked by the tools that own those formats (shellcheck, systemd-analyze,
ansible-playbook --syntax-check, ansible-lint, hadolint) and by running what can run here:
setup.sh --dry-run on a fake Jetson root, the Prometheus config from the example inventory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import yaml

from edge.software import read_pins

ROOT = Path(__file__).resolve().parents[1]
JETSON = ROOT / "jetson"
ANSIBLE = JETSON / "ansible"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return str(path)


def run(*cmd: str, cwd: Path = ROOT, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **(env or {})}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=e, timeout=300)


def test_shellcheck_every_script() -> None:
    scripts = [
        JETSON / "setup.sh",
        ROOT / ".ci/run",
        *sorted((ROOT / "tools").glob("*.sh")),
        *sorted((ROOT / "benchmarks").glob("*.sh")),
    ]
    r = run(tool("shellcheck"), *map(str, scripts))
    assert r.returncode == 0, r.stdout + r.stderr


def _fake_jetson(tmp: Path, release: str) -> Path:
    (tmp / "etc").mkdir(parents=True)
    (tmp / "etc/nv_tegra_release").write_text(f"# {release} (release), REVISION: 4.3, GCID: 1\n")
    (tmp / "proc/device-tree").mkdir(parents=True)
    (tmp / "proc/device-tree/model").write_text("NVIDIA Jetson AGX Orin Developer Kit\0")
    return tmp


def test_setup_dry_run_on_a_jetson(tmp_path: Path) -> None:
    env = {"FOD_SETUP_ROOT": str(_fake_jetson(tmp_path, "R36"))}
    r = run("bash", str(JETSON / "setup.sh"), "--dry-run", "--nvpmodel", "0", env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "NVIDIA Jetson AGX Orin Developer Kit, L4T R36.4.3 (JetPack 6)" in out
    for step in (
        "python3-libnvinfer",
        "venv --system-site-packages /opt/pharma-fod/venv",
        "\\[edge\\,jetson\\]",
        "usermod -a -G gpio\\,video pharma-fod",
        "/etc/udev/rules.d/99-pharma-fod.rules",
        "/etc/systemd/system/pharma-fod.service",
        "systemctl enable --now pharma-fod-clocks.service",
        "systemctl enable pharma-fod.service",
        "install -d -o pharma-fod -g pharma-fod -m 0700 /var/lib/pharma-fod/keys",
        "runuser -u pharma-fod -- /opt/pharma-fod/venv/bin/fod keygen --out "
        "/var/lib/pharma-fod/keys --name audit",
        'signing_key = "/var/lib/pharma-fod/keys/audit.key"',
        "dry run: nothing changed",
    ):
        assert step in out, step
    assert "pharma-fod-archive" not in out  # no archive unless asked
    assert "tensorrt" not in out.split("pip install")[-1].split("\n")[0].lower()
    assert " -c " not in out  # nothing pinned unless asked


def test_setup_installs_the_archive_timer_from_the_fleet_templates(tmp_path: Path) -> None:
    """--archive-to renders the runtime role's archive units with setup.sh's values: every
    placeholder filled, the archive signed with the unit's audit key."""
    env = {"FOD_SETUP_ROOT": str(_fake_jetson(tmp_path, "R36"))}
    argv = ["bash", str(JETSON / "setup.sh"), "--dry-run", "--no-apt", "--prefix", "/opt/f"]
    r = run(*argv, "--archive-to", "/mnt/qa/unit7", "--archive-keep", "3", env=env)
    assert r.returncode == 0, r.stderr
    assert (
        "ExecStart=/opt/f/venv/bin/fod audit archive /var/lib/pharma-fod/audit --to "
        "/mnt/qa/unit7 --signing-key /var/lib/pharma-fod/keys/audit.key --keep 3" in r.stdout
    )
    assert "/etc/systemd/system/pharma-fod-archive.timer" in r.stdout
    assert "systemctl enable --now pharma-fod-archive.timer" in r.stdout
    for bad, why in (
        (["--archive-to", "qa"], "an absolute path"),
        (["--archive-to", "/mnt/a|b"], "no |, & or"),
        (["--archive-to", "/mnt/qa", "--archive-keep", "0"], "a whole number >= 1"),
    ):
        r = run(*argv, *bad, env=env)
        assert r.returncode == 2 and why in r.stderr, r.stderr


def test_setup_names_an_option_given_without_its_value() -> None:
    """An option that takes a value, given last or before another option, is refused by
    name (it was bash's "$2: unbound variable", exit 1, before)."""
    for opt in ("--source", "--constraints", "--prefix", "--user", "--nvpmodel", "--archive-to",
                "--archive-on", "--archive-keep"):  # fmt: skip
        for argv in ([opt], [opt, "--dry-run"]):
            r = run("bash", str(JETSON / "setup.sh"), "--dry-run", *argv)
            assert r.returncode == 2 and f"setup.sh: {opt} needs a value" in r.stderr, r.stderr
    r = run("bash", str(JETSON / "setup.sh"), "--dry-run", "--archive-every", "1")
    assert r.returncode == 2 and "unknown option --archive-every" in r.stderr


def test_setup_prints_each_command_it_runs(tmp_path: Path) -> None:
    """Each command setup.sh runs for real is printed first, as in --dry-run: the Ansible
    base role reads its changed state (`install -D`, `useradd`, `keygen`) from those lines
    (before, a real run printed none of them, and the role never reported a change)."""
    text = (JETSON / "setup.sh").read_text()
    fn = re.search(r"^run\(\) \{.*?^\}", text, re.M | re.S)
    assert fn is not None
    marker = tmp_path / "ran"
    r = run("bash", "-c", f"{fn.group(0)}\nDRY_RUN=0\nrun touch {marker}")
    assert r.returncode == 0 and r.stdout == f"+ touch {marker}\n" and marker.exists()
    base = (ANSIBLE / "roles/base/tasks/main.yml").read_text()
    assert all(f"'{w}' in base_setup.stdout" in base for w in ("install -D", "useradd", "keygen"))


def test_setup_pins_the_fleets_versions(tmp_path: Path) -> None:
    env = {"FOD_SETUP_ROOT": str(_fake_jetson(tmp_path / "root", "R35"))}
    pins = tmp_path / "fleet-constraints.txt"
    pins.write_text("numpy==1.24.4\nonnxruntime-gpu==1.16.0\n")
    r = run("bash", str(JETSON / "setup.sh"), "--dry-run", "--constraints", str(pins), env=env)
    assert r.returncode == 0, r.stderr
    installs = [ln for ln in r.stdout.splitlines() if " install " in ln and "/pip " in ln]
    assert len(installs) == 2 and f" -c {pins} " in installs[1]  # the package, by a new pip
    assert f"versions pinned by {pins}" in r.stdout
    r = run("bash", str(JETSON / "setup.sh"), "--dry-run", "--constraints", str(tmp_path / "no"))
    assert r.returncode == 2 and f"--constraints {tmp_path / 'no'}: no such readable" in r.stderr


def test_setup_refuses_unsupported_or_non_jetson(tmp_path: Path) -> None:
    env = {"FOD_SETUP_ROOT": str(_fake_jetson(tmp_path / "old", "R32"))}
    r = run("bash", str(JETSON / "setup.sh"), "--dry-run", env=env)
    assert r.returncode == 2 and "not supported" in r.stderr
    env = {"FOD_SETUP_ROOT": str(tmp_path / "nothing")}
    r = run("bash", str(JETSON / "setup.sh"), env=env)  # not a dry run, not a Jetson
    assert r.returncode == 2 and "refusing to provision a non-Jetson" in r.stderr


def test_service_unit() -> None:
    text = (JETSON / "pharma-fod.service").read_text()
    keys = dict(
        ln.split("=", 1) for ln in text.splitlines() if "=" in ln and not ln.startswith("#")
    )
    assert keys["Type"] == "notify" and keys["Restart"] == "always"
    assert int(keys["WatchdogSec"]) > 0 and keys["NotifyAccess"] == "main"
    record = "--outputs-record /var/lib/pharma-fod/driven-outputs.json"  # in ReadWritePaths
    assert keys["ExecStart"] == (
        f"/opt/pharma-fod/venv/bin/fod run --config /etc/pharma-fod/line.toml {record}"
    )
    assert keys["ExecStopPost"] == (
        f"/opt/pharma-fod/venv/bin/fod safe-outputs --config /etc/pharma-fod/line.toml {record}"
    )
    assert keys["User"] == "pharma-fod" and keys["ReadWritePaths"] == "/var/lib/pharma-fod"
    assert keys["DevicePolicy"] == "closed" and "PrivateDevices" not in keys
    assert "char-gpiochip rw" in text and "char-video4linux rw" in text and "/dev/nvmap" in text


def test_service_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed: units not verified")
    for name in ("pharma-fod.service", "pharma-fod-clocks.service"):
        # The venv and JetPack's tools are not on this machine: point the commands at
        # /bin/true so verify checks everything else.
        text = (JETSON / name).read_text()
        text = re.sub(r"/opt/pharma-fod/venv/bin/fod|/usr/bin/jetson_clocks", "/bin/true", text)
        unit = tmp_path / name
        unit.write_text(text)
        r = run(analyze, "verify", str(unit))
        assert r.returncode == 0, r.stdout + r.stderr


def test_udev_rules_parse() -> None:
    pair = re.compile(r'^\s*[A-Z]+(\{[^}]*\})?\s*(==|!=|=|\+=|:=)\s*"[^"]*"\s*$')
    lines = [ln for ln in (JETSON / "99-pharma-fod.rules").read_text().splitlines()]
    rules = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(rules) >= 2
    for rule in rules:
        for part in re.split(r',(?=(?:[^"]*"[^"]*")*[^"]*$)', rule):
            assert pair.match(part), (rule, part)
    assert any('KERNEL=="gpiochip*"' in r and 'GROUP="gpio"' in r for r in rules)
    assert any('SUBSYSTEM=="video4linux"' in r and 'GROUP="video"' in r for r in rules)


def test_ansible_syntax_and_lint() -> None:
    playbooks = ["site.yml", "rollout.yml", "prometheus.yml"]
    r = run(tool("ansible-playbook"), "--syntax-check", *playbooks, cwd=ANSIBLE)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(tool("ansible-lint"), "--offline", "--nocolor", *playbooks, cwd=ANSIBLE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_config_from_the_inventory(tmp_path: Path) -> None:
    out = tmp_path / "prometheus-fod.yml"
    r = run(
        tool("ansible-playbook"),
        "-i",
        "inventory.example.yml",
        "prometheus.yml",
        "-e",
        f"fod_prometheus_out={out}",
        cwd=ANSIBLE,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = yaml.safe_load(out.read_text())
    (job,) = cfg["scrape_configs"]
    (target,) = job["static_configs"]  # jetson-a2 binds to loopback: not scrapeable
    assert target["targets"] == ["10.20.1.11:9108"]
    assert target["labels"] == {"unit": "jetson-a1", "line": "line-a", "station": "infeed"}
    assert "jetson-a2: loopback only" in out.read_text()


def test_dockerfile_lint() -> None:
    r = run(tool("hadolint"), str(JETSON / "Dockerfile"))
    assert r.returncode == 0, r.stdout + r.stderr
    text = (JETSON / "Dockerfile").read_text()
    assert "nvcr.io/nvidia/l4t-jetpack" in text and "--system-site-packages" in text
    # The fleet's pins go in with the package; as shipped the file pins nothing.
    assert 'pip install --no-cache-dir -c /src/constraints.txt "/src[edge,jetson]"' in text
    assert "COPY jetson/constraints.txt /src/constraints.txt" in text
    assert read_pins(JETSON / "constraints.txt") == {}
    entry = text[text.index("ENTRYPOINT") :].replace("\\\n", " ")
    # PID 1 keeps `fod run` as the systemd unit does, with the unit's outputs record
    assert entry.startswith('ENTRYPOINT ["fod", "service", "--config", "/etc/pharma-fod/line.toml"')
    assert '"--outputs-record", "/var/lib/pharma-fod/driven-outputs.json"]' in entry


def _render(tmp_path: Path, template: str, out: Path, *extra: str) -> None:
    """The runtime role's `template` rendered for each unit of the example inventory into
    `out`/<unit>`suffix` (its name without .j2), with `extra` ansible-playbook arguments."""
    out.mkdir(parents=True, exist_ok=True)
    suffix = Path(template).with_suffix("").suffix
    playbook = tmp_path / "render.yml"
    playbook.write_text(
        f"""
- name: Render {template}
  hosts: all
  gather_facts: false
  connection: local
  tasks:
    - name: Render
      ansible.builtin.template:
        src: {ANSIBLE / "roles/runtime/templates" / template}
        dest: "{out}/{{{{ inventory_hostname }}}}{suffix}"
        mode: "0644"
      delegate_to: localhost
"""
    )
    shutil.copytree(ANSIBLE / "group_vars", tmp_path / "group_vars", dirs_exist_ok=True)
    inventory = str(ANSIBLE / "inventory.example.yml")
    r = run(tool("ansible-playbook"), "-i", inventory, str(playbook), *extra, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_line_template_renders_a_config_the_unit_accepts(tmp_path: Path) -> None:
    """The runtime role's line.toml template, rendered for the example inventory's units,
    loads with the unit's own config parser."""
    from edge.config import load_config

    out = tmp_path / "lines"
    _render(tmp_path, "line.toml.j2", out)
    a2 = load_config(out / "jetson-a2.toml")
    assert a2.gpio.delay_ms == 2500 and a2.gpio.pin_factory == "jetson"
    assert a2.model.bundle == "/var/lib/pharma-fod/current" and a2.model.backend == "tensorrt"
    a1 = load_config(out / "jetson-a1.toml")
    assert a1.metrics.address == "10.20.1.11" and a1.gpio.delay_ms == 3000
    assert a2.gpio.gate_feedback_pin == "GPIO23" and a1.gpio.gate_feedback_pin is None
    assert a2.gpio.alarm_energise_to == "ready" and a1.gpio.alarm_energise_to == "alarm"
    assert a1.audit.signing_key == "/var/lib/pharma-fod/keys/audit.key"  # setup.sh made it


def test_rollout_rehearsal_with_ansible(tmp_path: Path) -> None:
    """jetson/ansible/rollout.yml on two local stations: a bundle that fails its health
    probe is rolled back at the first station and the play stops before the second; a
    bundle that fails the stations' check is refused without a switch."""
    tool("ansible-playbook")
    r = run("bash", str(ROOT / "benchmarks/rollout_rehearsal.sh"), str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert (
        "line-a-1.1.0-crash.tar.gz: playbook rc=2; current: station1 1.0.0, station2 1.0.0" in out
    )
    crash = out.split("line-a-1.1.0-crash.tar.gz")[1].split("line-a-1.2.0")[0]
    assert "station1 rollback        ok" in crash and "station2 untouched" in crash
    assert "unknown class(es) ['glass_flake']" in out.split("line-a-1.2.0.tar.gz")[1]


def test_the_archive_timer_moves_the_oldest_audit_files(tmp_path: Path) -> None:
    """With `fod_audit_archive_to` set, the runtime role installs a timer whose service
    runs `fod audit archive` on the unit's signed trail: rendered, checked by
    systemd-analyze, and its ExecStart run here on a real trail."""
    from edge.audit import AuditConfig, AuditLog, ContainerRecord, audit_files
    from edge.audit_verify import verify
    from edge.signing import generate_keypair

    state, qa = tmp_path / "state", tmp_path / "qa"
    extra = ["-e", f"fod_state={state}", "-e", f"fod_audit_archive_to={qa}"]
    units = tmp_path / "units"
    _render(tmp_path, "pharma-fod-archive.service.j2", units, *extra)
    _render(tmp_path, "pharma-fod-archive.timer.j2", units, *extra)
    service = (units / "jetson-a1.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", service, re.M)
    argv = exec_start.split()
    assert argv[0] == "/opt/pharma-fod/venv/bin/fod"
    assert f"ReadWritePaths={state}/audit {qa}" in service and f"RequiresMountsFor={qa}" in service
    assert "OnCalendar=*-*-* 03:00" in (units / "jetson-a1.timer").read_text()
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # the venv is not on this machine: /bin/true in its place
        qa.mkdir()
        for name in ("jetson-a1.service", "jetson-a1.timer"):
            text = (units / name).read_text().replace(argv[0], "/bin/true")
            unit = tmp_path / name.replace("jetson-a1", "pharma-fod-archive")
            unit.write_text(text)
        r = run(analyze, "verify", str(tmp_path / "pharma-fod-archive.service"))
        assert r.returncode == 0, r.stdout + r.stderr
    key, pub = generate_keypair(state / "keys", "audit")  # where setup.sh makes it
    cfg = AuditConfig(state / "audit", rotate_bytes=2**20, min_free_bytes=0, signing_key=str(key))
    with AuditLog(cfg) as log:
        dets = [[[10.0, 20.0, 30.0, 40.0, 0.9, 1.0]] * 30] * 8
        for i in range(300):
            log.record(ContainerRecord(f"c{i}", i, i + 1, "accept", "r", None, dets, "m", "c"))
    files = audit_files(state / "audit")
    r = run(str(BIN / "fod"), *argv[1:])  # the service's command, this venv's fod
    assert r.returncode == 0, r.stdout + r.stderr
    assert [f.name for f in audit_files(state / "audit")] == [f.name for f in files[-2:]]
    assert verify(qa, pub).first_seq == 1 and verify(state / "audit", pub).last_seq == 300
