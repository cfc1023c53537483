"""The daemon's memory measures (edge_agent/memory.py, edge_agent/cli.py): what `edge-agent run`
imports, and that the config is parsed in a child process with the same results and errors.

The RSS figures themselves are measured by the benchmark (bench/footprint*.py), not here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import edge_agent.config as config_module
from edge_agent import memory
from edge_agent.cli import _parse_run
from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.memory import load_config_compact

ROOT = Path(__file__).resolve().parent.parent

MODBUS_ONLY = """\
plant: {site: s, area: a, line: l}
machines:
  - id: m1
    signals: {run: running, part_counter: parts}
devices:
  - {name: plc, protocol: modbus_tcp, host: 127.0.0.1, port: 1, poll_interval: 1s, timeout: 1s}
tags:
  - {name: running, device: plc, address: "coil:0", type: bool}
  - {name: parts, device: plc, address: "hr:0", type: uint32}
buffer: {path: BUFFER}
metrics: {enabled: false}
"""


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("BUFFER", str(tmp_path / "buffer.db")))
    return path


# ---------------------------------------------------------------- what `run` imports


def test_run_imports_neither_typer_nor_the_sub_apps_nor_other_protocols(tmp_path):
    """A Modbus-only `edge-agent run` (through cli.main, as the console script and `python -m`
    call it): no typer/click, no CLI sub-apps, no asyncua/snap7, and no YAML parser in the daemon."""
    cfg = _write(tmp_path, MODBUS_ONLY)
    out = tmp_path / "modules.json"
    code = textwrap.dedent(f"""
        import atexit, json, sys
        atexit.register(lambda: open({str(out)!r}, "w").write(json.dumps(sorted(sys.modules))))
        sys.argv = ["edge-agent", "run", "--config", {str(cfg)!r}]
        from edge_agent.cli import main
        main()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []

    def read() -> None:
        lines.extend(proc.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    try:
        while not any("event=agent_started" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "agent did not start: " + "".join(lines)
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    modules = set(json.loads(out.read_text()))

    def imported(pkg: str) -> bool:
        return any(m == pkg or m.startswith(pkg + ".") for m in modules)

    assert imported("pymodbus") and "edge_agent.daemon" in modules  # it did run
    for pkg in ("typer", "click", "rich", "edge_agent.cli_app", "edge_agent.cli_ops", "edge_agent.cli_tags",
                "edge_agent.cli_mes", "edge_agent.buffer_cli", "edge_agent.init", "asyncua", "snap7", "yaml"):
        assert not imported(pkg), f"`edge-agent run` imported {pkg}"


@pytest.mark.parametrize("args, expected", [
    (["run", "--config", "c.yaml"], (Path("c.yaml"), False)),
    (["run", "-c", "c.yaml", "-v"], (Path("c.yaml"), True)),
    (["run", "--verbose", "--config=c.yaml"], (Path("c.yaml"), True)),
    (["run", "-cc.yaml"], (Path("c.yaml"), False)),
    (["run"], None),                                   # missing --config: typer's usage error
    (["run", "--help"], None),
    (["run", "--config", "a", "--config", "b"], None),
    (["run", "--config"], None),
    (["run", "--config", "c.yaml", "extra"], None),
    (["run", "--bogus"], None),
    (["validate", "c.yaml"], None),
    ([], None),
])
def test_run_fast_path_only_takes_plain_run_lines(args, expected):
    assert _parse_run(args) == expected


def test_run_help_and_usage_errors_still_come_from_typer():
    help_ = subprocess.run([sys.executable, "-m", "edge_agent", "run", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, check=False)
    assert help_.returncode == 0 and "--config" in help_.stdout and "--verbose" in help_.stdout
    missing = subprocess.run([sys.executable, "-m", "edge_agent", "run"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=False)
    assert missing.returncode == 2 and "Missing option '--config'" in missing.stderr


def test_run_with_a_bad_config_prints_file_line_errors_and_exits_2(tmp_path):
    cfg = _write(tmp_path, MODBUS_ONLY.replace("type: uint32", "type: uint33"))
    proc = subprocess.run([sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert f"{cfg}:9: tags[1].type:" in proc.stderr
    assert "event=config_error" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- parsing in a child


def test_compact_load_parses_in_a_child_and_returns_the_same_config(tmp_path, monkeypatch):
    cfg = _write(tmp_path, MODBUS_ONLY)
    pids = tmp_path / "pids"
    real = config_module.load_config

    def recording(path):
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(path)

    monkeypatch.setattr(config_module, "load_config", recording)
    got = load_config_compact(cfg)
    assert [int(p) for p in pids.read_text().split()] != [os.getpid()]  # parsed elsewhere, once
    assert len(pids.read_text().split()) == 1
    assert got == real(cfg) and got.tags[1].type == "uint32"


def test_compact_load_reports_the_same_problems(tmp_path):
    cfg = _write(tmp_path, MODBUS_ONLY.replace("port: 1,", "port: 0,").replace("coil:0", "coil:x"))
    with pytest.raises(ConfigError) as direct:
        load_config(cfg)
    with pytest.raises(ConfigError) as compact:
        load_config_compact(cfg)
    assert compact.value.problems == direct.value.problems
    assert all(line.startswith(f"{cfg}:") for line in compact.value.problems)


def test_compact_load_parses_here_when_the_child_dies(tmp_path, monkeypatch):
    cfg = _write(tmp_path, MODBUS_ONLY)
    parent = os.getpid()
    real = config_module.load_config

    def dying_in_child(path):
        if os.getpid() != parent:
            os._exit(3)
        return real(path)

    monkeypatch.setattr(config_module, "load_config", dying_in_child)
    assert load_config_compact(cfg) == real(cfg)


@pytest.mark.parametrize("bad", [False, True])
def test_compact_load_in_a_threaded_process_uses_a_fresh_interpreter(tmp_path, monkeypatch, bad):
    """A reload runs with threads: no fork then, a `python -m edge_agent.memory` child instead."""
    cfg = _write(tmp_path, MODBUS_ONLY.replace("coil:0", "coil:x") if bad else MODBUS_ONLY)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("forked with a second thread running"))
    monkeypatch.setattr(memory, "SUBPROCESS_MIN_BYTES", 0)  # the test config is small
    real_run = memory.subprocess.run
    children = []

    def run(args, **kw):
        children.append(args)
        return real_run(args, **kw)

    monkeypatch.setattr(memory.subprocess, "run", run)
    try:
        if bad:
            with pytest.raises(ConfigError) as got:
                load_config_compact(cfg)
            with pytest.raises(ConfigError) as direct:
                load_config(cfg)
            assert got.value.problems == direct.value.problems
        else:
            assert load_config_compact(cfg) == load_config(cfg)
    finally:
        stop.set()
        t.join()
    assert children and children[0][1:3] == ["-m", "edge_agent.memory"]


def test_importing_the_config_models_builds_no_validator():
    """Defaults are factories and schemas are deferred: importing edge_agent.config builds no pydantic
    validator (nor loads pydantic's plugin machinery), so the daemon, which only unpickles its
    Config, never pays for them. Validating still works (and builds them then)."""
    code = textwrap.dedent("""
        import sys
        from pydantic import BaseModel
        import edge_agent.config as c
        models = [v for v in vars(c).values() if isinstance(v, type) and issubclass(v, BaseModel) and v is not BaseModel]
        built = [m.__name__ for m in models if type(m.__dict__.get("__pydantic_validator__")).__name__ != "MockValSer"]
        print(len(models), built, "pydantic.plugin._loader" in sys.modules)
        assert c.parse_config(open("config/default.yaml").read()).plant.site == "demo-site"
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    count, rest = out.stdout.split(" ", 1)
    assert int(count) > 20
    assert rest.strip() == "[] False"


def test_a_small_config_in_a_threaded_process_is_parsed_in_process(tmp_path, monkeypatch):
    cfg = _write(tmp_path, MODBUS_ONLY)
    assert cfg.stat().st_size < memory.SUBPROCESS_MIN_BYTES
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("forked with a second thread running"))
    monkeypatch.setattr(memory.subprocess, "run", lambda *a, **kw: pytest.fail("a child for a small file"))
    try:
        assert load_config_compact(cfg) == load_config(cfg)
    finally:
        stop.set()
        t.join()
