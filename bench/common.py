"""Shared pieces of the benchmarks: ports, mosquitto, the agent as a process, server processes, stats.

Everything binds to 127.0.0.1 on ephemeral ports, and every loop is bounded in time.
The agent always runs as its own process (`python -m edge_agent run --config ...`) and
is measured with psutil; simulators and bare client loops run in processes of their own.
"""

from __future__ import annotations

import json
import math
import os
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass
class Settings:
    quick: bool = False
    runs: int = 5
    verbose: bool = False
    profile: bool = False  # py-spy the agent during the first measured window (bench/results/profile-*.txt)

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


def log(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- numbers


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        mem = psutil.virtual_memory().total
    except ImportError:
        mem = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "implementation": platform.python_implementation(), "os": platform.platform(),
            "memory_bytes": mem, "virtualized": _hypervisor()}


def _hypervisor() -> bool:
    try:
        return "hypervisor" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


# ---------------------------------------------------------------- network


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), None)
    if not found:
        raise RuntimeError("mosquitto is not installed (make system-deps installs it)")
    return found


class Mosquitto:
    """A private mosquitto on loopback (no persistence: the bench measures the agent, not the broker's disk).

    `nodelay`: `set_tcp_nodelay true`, i.e. no Nagle delay on what the broker sends to subscribers.
    """

    def __init__(self, workdir: Path, *, nodelay: bool = False):
        self.port = free_port()
        self.workdir = workdir
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"log_dest file {workdir}/mosquitto.log\nmax_queued_messages 0\n"
                        + ("set_tcp_nodelay true\n" if nodelay else ""))
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def workdir(name: str):
    d = Path(tempfile.mkdtemp(prefix=f"edge-bench-{name}-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- processes


class LineProcess:
    """A helper process speaking JSON lines: commands on stdin, replies and reports on stdout."""

    def __init__(self, args: list[str], *, ready_timeout: float = 60.0, name: str = "helper"):
        self.name = name
        self.proc = subprocess.Popen([PY, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=ROOT, text=True, bufsize=1,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.replies: queue.Queue[dict] = queue.Queue()
        self.reports: list[dict] = []  # unsolicited lines ({"change": ...}, {"first_request": ...})
        self._stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self.ready = self.reply(ready_timeout)
        if not self.ready.get("ready"):
            raise RuntimeError(f"{name} did not start: {self.ready} {''.join(self._stderr[-20:])}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            (self.reports.append(msg) if msg.get("report") else self.replies.put(msg))
        self.replies.put({"eof": True})

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line)
            if len(self._stderr) > 200:
                del self._stderr[:100]

    def reply(self, timeout: float = 30.0) -> dict:
        try:
            msg = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no answer within {timeout}s; stderr: {''.join(self._stderr[-20:])}")
        if msg.get("eof"):
            raise RuntimeError(f"{self.name} ended: {''.join(self._stderr[-20:])}")
        return msg

    def ask(self, command: str, timeout: float = 30.0, **args: Any) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": command, **args}) + "\n")
        self.proc.stdin.flush()
        return self.reply(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()

    def stderr(self) -> str:
        return "".join(self._stderr)


def server(kind: str, **options: Any) -> LineProcess:
    """A bench server process (see bench/servers.py)."""
    args = ["-m", "bench.servers", kind, json.dumps(options)]
    return LineProcess(args, name=f"{kind} server", ready_timeout=120)


class Agent:
    """`python -m edge_agent run --config ...` as its own process, measured with psutil."""

    def __init__(self, config: Path, log_path: Path, *, probe_modules: Path | None = None,
                 probe_gc: Path | None = None):
        import psutil

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if probe_gc is not None:
            env["BENCH_GC_OUT"] = str(probe_gc)
            probe_modules = probe_modules or probe_gc.with_suffix(".modules")
        if probe_modules is None:
            args = [PY, "-m", "edge_agent", "run", "--config", str(config)]
        else:  # the same CLI, with a hook that writes sys.modules at exit (bench/probe.py)
            env["BENCH_MODULES_OUT"] = str(probe_modules)
            args = [PY, "-m", "bench.probe", "run", "--config", str(config)]
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 -- the agent writes to it until stop()
        self.started = time.time()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        self.ps = psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ---------------------------------------------------------------- MQTT subscriber on a thread


class Subscriber:
    """Subscribes to `topic` on its own thread; keeps (arrival time.time(), topic, payload)."""

    def __init__(self, port: int, topic: str = "#"):
        self.port, self.topic = port, topic
        self.messages: list[tuple[float, str, bytes]] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise TimeoutError("subscriber did not connect")

    def _main(self) -> None:
        import asyncio

        asyncio.run(self._run())

    async def _run(self) -> None:
        import asyncio

        import aiomqtt

        async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"bench-sub-{os.getpid()}-{id(self)}",
                                  timeout=5) as c:
            await c.subscribe(self.topic, qos=1)
            self._ready.set()
            it = c.messages.__aiter__()
            while not self._stop.is_set():
                try:
                    m = await asyncio.wait_for(it.__anext__(), 0.2)
                except TimeoutError:
                    continue
                self.messages.append((time.time(), str(m.topic), bytes(m.payload)))

    def events(self, type_: str | None = None) -> list[tuple[float, dict]]:
        out = []
        for t, topic, payload in list(self.messages):
            if "/event/" not in topic:
                continue
            try:
                body = json.loads(payload)
            except ValueError:
                continue
            if type_ is None or body.get("type") == type_:
                out.append((t, body))
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


# ---------------------------------------------------------------- configs


def base_config(tmp: Path, mqtt_port: int | None, *, machines: list[dict], devices: list[dict],
                tags: list[dict], durability: str = "full") -> dict:
    cfg: dict[str, Any] = {
        "plant": {"site": "bench", "area": "a", "line": "l"},
        "machines": machines,
        "devices": devices,
        "tags": tags,
        "buffer": {"path": str(tmp / "buffer.db"), "durability": durability},
    }
    if mqtt_port is not None:
        cfg["outputs"] = {"mqtt": {"host": "127.0.0.1", "port": mqtt_port, "topic_prefix": "bench",
                                   "timeout": "5s"}}
    return cfg


def modbus_map(n_tags: int, machines: int) -> tuple[list[dict], list[dict]]:
    """A Modbus tag map as the bench server lays it out (see bench/servers.py, `layout`).

    Machine k: run bit at coil:k, part counter (uint32) at hr:2k. The other tags:
    3/4 16-bit holding registers from hr:1000 on, 1/8 input registers, 1/8 coils from coil:1000.
    Returns (machines, tags) for a device named `plc`.
    """
    ms, tags = [], []
    for k in range(machines):
        ms.append({"id": f"m{k}", "signals": {"run": f"m{k}_run", "part_counter": f"m{k}_parts"}})
        tags.append({"name": f"m{k}_run", "device": "plc", "address": f"coil:{k}", "type": "bool"})
        tags.append({"name": f"m{k}_parts", "device": "plc", "address": f"hr:{2 * k}", "type": "uint32"})
    rest = max(0, n_tags - 2 * machines)
    n_ir, n_coil = rest // 8, rest // 8
    n_hr = rest - n_ir - n_coil
    for i in range(n_hr):
        tags.append({"name": f"hr{i}", "device": "plc", "address": f"hr:{1000 + i}", "type": "uint16"})
    for i in range(n_ir):
        tags.append({"name": f"ir{i}", "device": "plc", "address": f"ir:{i}", "type": "int16"})
    for i in range(n_coil):
        tags.append({"name": f"c{i}", "device": "plc", "address": f"coil:{1000 + i}", "type": "bool"})
    return ms, tags


def cpu_rss_window(agent: Agent, seconds: float, step: float = 0.5, profile: str | None = None) -> dict[str, float]:
    """CPU % of one core and RSS of the agent over a window (RSS: max of samples).

    With `profile`, py-spy samples the agent during the window (non-blocking, 100 Hz)
    and a summary goes to bench/results/profile-<profile>.txt.
    """
    spy = start_profile(agent.proc.pid, seconds, profile) if profile else None
    c0, t0 = agent.cpu_seconds(), time.monotonic()
    rss = [agent.rss()]
    end = t0 + seconds
    while time.monotonic() < end:
        time.sleep(min(step, max(0.0, end - time.monotonic())))
        if not agent.alive():
            raise RuntimeError(f"agent died: {agent.output()[-2000:]}")
        rss.append(agent.rss())
    c1, t1 = agent.cpu_seconds(), time.monotonic()
    if spy is not None:
        finish_profile(*spy)
    return {"cpu_pct": 100 * (c1 - c0) / (t1 - t0), "rss_mb": max(rss) / 1e6, "rss_end_mb": rss[-1] / 1e6}


RESULTS_DIR = ROOT / "bench" / "results"


def start_profile(pid: int, seconds: float, name: str):
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    raw = RESULTS_DIR / f"profile-{name}.raw"
    proc = subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "100",
                             "--nonblocking", "-f", "raw", "-o", str(raw)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, raw, name


def finish_profile(proc: subprocess.Popen, raw: Path, name: str) -> None:
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return
    if raw.exists():
        (RESULTS_DIR / f"profile-{name}.txt").write_text(summarize_profile(raw))
        log(f"profile: {RESULTS_DIR / f'profile-{name}.txt'}")


def summarize_profile(raw: Path, top: int = 40) -> str:
    """py-spy raw (collapsed) stacks -> the functions with most samples, self and inclusive."""
    from collections import Counter

    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        frames = stack.split(";")
        own[frames[-1]] += int(n)
        for f in set(frames):
            inclusive[f] += int(n)
    out = [f"{total} samples (idle excluded)", "", "self:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["", "inclusive:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(2 * top)]
    return "\n".join(out) + "\n"


@dataclass
class Figure:
    """One row of the results table."""

    key: str
    name: str
    value: float | None
    unit: str
    target: str
    ok: bool | None
    detail: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "value": self.value, "unit": self.unit, "target": self.target,
                "ok": self.ok, "note": self.note, "detail": self.detail}
