"""The unit file: hardening present, `systemd-analyze verify` clean, exposure <= 2.5; and
`edge-agent service install|uninstall` into a temporary root (systemctl --root enables offline)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.service import UNIT_SOURCE, render_unit

ROOT = Path(__file__).resolve().parent.parent
ANALYZE = shutil.which("systemd-analyze")


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def test_unit_has_notify_watchdog_and_hardening():
    d = directives(UNIT_SOURCE.read_text())
    expected = {
        "Service.Type": "notify", "Service.NotifyAccess": "main", "Service.Restart": "on-failure",
        "Service.StateDirectory": "edge-agent", "Service.ConfigurationDirectory": "edge-agent",
        "Service.DynamicUser": "yes", "Service.ProtectSystem": "strict", "Service.NoNewPrivileges": "yes",
        "Service.CapabilityBoundingSet": "", "Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "Service.ProtectHome": "yes", "Service.PrivateTmp": "yes", "Service.PrivateDevices": "yes",
        "Service.MemoryDenyWriteExecute": "yes", "Service.RestrictNamespaces": "yes",
        "Service.SystemCallArchitectures": "native", "Service.KillSignal": "SIGTERM",
        "Service.ExecReload": "/bin/kill -HUP $MAINPID",
    }
    for key, value in expected.items():
        assert d.get(key) == [value], f"{key}={d.get(key)}"
    assert "@system-service" in d["Service.SystemCallFilter"]
    assert re.fullmatch(r"\d+s", d["Service.WatchdogSec"][0])
    assert re.fullmatch(r"\d+s", d["Service.TimeoutStopSec"][0])
    assert d["Service.ExecStart"][0].endswith("run --config ${CONFIGURATION_DIRECTORY}/config.yaml")


def test_serial_dropin_is_documented_and_opt_in():
    d = directives((ROOT / "systemd/serial-port.conf").read_text())
    assert d["Service.DeviceAllow"] == ["/dev/ttyUSB0 rw"]
    assert d["Service.SupplementaryGroups"] == ["dialout"]
    assert d["Service.PrivateDevices"] == ["no"]  # the base unit hides /dev/tty* entirely
    assert d["Service.PrivateUsers"] == ["no"]  # else dialout is "nobody" inside the service
    base = directives(UNIT_SOURCE.read_text())
    assert "Service.DeviceAllow" not in base and "Service.SupplementaryGroups" not in base


def _rendered(tmp_path: Path) -> Path:
    # verify checks that ExecStart exists: point it at this checkout's interpreter, as `service install` does
    unit = tmp_path / "edge-agent.service"
    unit.write_text(render_unit(f"{sys.executable} -m edge_agent run --config /etc/edge-agent/config.yaml"))
    return unit


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)")
def test_systemd_analyze_verify_is_clean(tmp_path):
    unit = _rendered(tmp_path)
    p = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "edge-agent.service" not in p.stderr, p.stderr  # no warning about our unit


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)")
def test_systemd_analyze_security_exposure_at_most_2_5(tmp_path):
    unit = _rendered(tmp_path)
    p = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(unit)], capture_output=True,
                       text=True, timeout=60, check=False)
    m = re.search(r"Overall exposure level for edge-agent\.service: ([0-9.]+)", p.stdout)
    if m is None and "offline" in p.stderr:
        pytest.skip(f"this systemd-analyze cannot rate a unit file offline: {p.stderr.strip()}")
    assert m, p.stdout + p.stderr
    exposure = float(m.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= 2.5


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)")
def test_serial_dropin_keeps_exposure_low(tmp_path):
    unit = _rendered(tmp_path)
    merged = tmp_path / "merged" / "edge-agent.service"
    merged.parent.mkdir()
    base = unit.read_text()
    dropin = (ROOT / "systemd/serial-port.conf").read_text().split("[Service]", 1)[1]
    merged.write_text(base.replace("[Install]", dropin + "\n[Install]"))
    p = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(merged)], capture_output=True,
                       text=True, timeout=60, check=False)
    m = re.search(r"Overall exposure level for edge-agent\.service: ([0-9.]+)", p.stdout)
    assert m and float(m.group(1)) <= 2.5, p.stdout[-500:]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_agent", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)


def test_service_install_and_uninstall_into_a_root(tmp_path):
    """`--root` puts everything under a temp dir; systemd is not running here, so systemctl runs
    offline (`systemctl --root=DIR enable` creates the wants/ symlink) or is reported as skipped."""
    root = tmp_path / "root"
    cfg = ROOT / "edge_agent/default.yaml"
    p = _cli("service", "install", "--root", str(root), "--config", str(cfg), "--serial", "/dev/ttyUSB1", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    steps = json.loads(p.stdout)
    unit = root / "etc/systemd/system/edge-agent.service"
    assert unit.read_text().count("Type=notify") == 1
    exec_start = directives(unit.read_text())["Service.ExecStart"][0]
    assert exec_start.split()[0].startswith(str(Path(sys.executable).parent)), exec_start
    assert (root / "etc/edge-agent/config.yaml").read_text() == cfg.read_text()
    dropin = root / "etc/systemd/system/edge-agent.service.d/serial-port.conf"
    assert "DeviceAllow=/dev/ttyUSB1 rw" in dropin.read_text()
    state = root / "var/lib/private/edge-agent"
    assert (state / "pki").is_dir() and oct(state.stat().st_mode & 0o777) == "0o750"
    assert oct(state.parent.stat().st_mode & 0o777) == "0o700"
    wants = root / "etc/systemd/system/multi-user.target.wants/edge-agent.service"
    if shutil.which("systemctl"):
        assert wants.is_symlink(), steps
    else:
        assert any(s["step"] == "systemctl skipped" for s in steps)

    p = _cli("service", "uninstall", "--root", str(root))
    assert p.returncode == 0, p.stdout + p.stderr
    assert not unit.exists() and not dropin.exists() and not wants.exists()
    assert (root / "etc/edge-agent/config.yaml").exists() and state.is_dir(), "kept without --purge"
    p = _cli("service", "uninstall", "--root", str(root), "--purge")
    assert p.returncode == 0, p.stdout + p.stderr
    assert not (root / "etc/edge-agent").exists() and not state.exists()


def test_service_install_refuses_an_invalid_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("plant: {site: s}\n")
    p = _cli("service", "install", "--root", str(tmp_path / "root"), "--config", str(bad))
    assert p.returncode == 2
    assert "bad.yaml:1: plant.area: required field missing" in p.stderr
    assert not (tmp_path / "root/etc/edge-agent/config.yaml").exists()


def test_service_install_without_config_writes_a_valid_starter(tmp_path):
    root = tmp_path / "root"
    p = _cli("service", "install", "--root", str(root))
    assert p.returncode == 0, p.stdout + p.stderr
    p = _cli("validate", str(root / "etc/edge-agent/config.yaml"))
    assert p.returncode == 0, p.stdout + p.stderr
    if os.geteuid() == 0:
        assert "ok" in p.stdout
