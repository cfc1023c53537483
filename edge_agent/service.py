"""Running under systemd: sd_notify, the watchdog, config reload, and installing the unit.

`Supervisor` wraps the `Agent` (edge_agent/daemon.py) for the life of the process:

- READY=1 once the buffer is open and every device had its first poll (or `READY_AFTER`
  seconds passed, so one dead PLC does not keep the service "activating" forever);
- WATCHDOG=1 every WatchdogSec/2, but only while the derivation task turns over, the
  buffer writer answers and every polled device makes progress (a read or an error);
- SIGTERM/SIGINT: the agent stops (devices first, what is queued is committed), then the
  status socket and the metrics server close; STOPPING=1 is sent first;
- SIGHUP: the config file is read again; an invalid one is rejected with one log line and
  the running pipeline keeps going; a valid one restarts the pipeline with it. Events are
  in the SQLite buffer, so nothing is lost in between.

sd_notify is a datagram to $NOTIFY_SOCKET (a path, or '@name' for the abstract namespace);
no libsystemd needed. `install`/`uninstall` put the unit, the config and state directories
in place under a root directory (`/` on a real system, a temp dir in tests).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.config import Config, load_config
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.memory import load_config_compact

log = logging.getLogger("edge_agent.service")

READY_AFTER = 15.0  # seconds: READY=1 even if some device has not answered by then
DERIVE_STALE = 10.0  # seconds without a derivation turn (a tick arrives every second) = unhealthy
BUFFER_TIMEOUT = 5.0  # seconds the buffer writer may take to answer a health probe


# ---------------------------------------------------------------- sd_notify


class Notifier:
    """sd_notify(3) in a few lines: one datagram per message, never blocking."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None):
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        if address:
            target = "\0" + address[1:] if address.startswith("@") else address
            self._target = target
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        if env.get("WATCHDOG_USEC", "").isdigit():
            pid = env.get("WATCHDOG_PID", "")
            if not pid or pid == str(os.getpid()):
                usec = int(env["WATCHDOG_USEC"]) or None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two WATCHDOG=1 (half the timeout, as sd_watchdog_enabled(3) advises)."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, **fields: Any) -> bool:
        """Send `KEY=value` lines; False (and a debug log) if systemd did not take it."""
        if self._sock is None:
            return False
        message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(message, self._target)
            return True
        except (BlockingIOError, OSError) as e:
            log.debug("event=notify_failed error=%r", str(e))
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# ---------------------------------------------------------------- supervisor


def _leaves(group: BaseExceptionGroup) -> list[Exception]:
    out: list[Exception] = []
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            out += _leaves(e)
        elif isinstance(e, Exception):
            out.append(e)
    return out


class _DeviceProgress:
    """Last time each polled device read something or failed trying."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[int, float]] = {}

    def stale(self, agent: Any, at: float) -> list[str]:
        out = []
        for d in agent.drivers:
            if getattr(d.device, "mode", "poll") == "subscribe":
                continue  # a subscription reports changes only; its session keepalive is the driver's job
            h = d.health
            count = h.reads + h.errors
            last_count, since = self.seen.get(id(d), (-1, at))
            if count != last_count:
                self.seen[id(d)] = (count, at)
                continue
            guard = d.device.timeout * (2 + len(getattr(d, "plan", ())))
            # a disconnected device retries at least every 30 s (backoff cap) plus its connect timeout
            bound = max(60.0, 4 * (d.device.poll_interval + guard))
            if at - since > bound:
                out.append(d.device.name)
        return out


class Supervisor:
    """The agent for the life of the process: signals, notify, watchdog, reload, status, metrics."""

    def __init__(self, cfg: Config, *, config_path: Path | None = None, notifier: Notifier | None = None,
                 install_signals: bool = True):
        from edge_agent.metrics import Metrics

        self.cfg = cfg
        self.config_path = config_path
        self.notifier = notifier or Notifier.from_env()
        self.install_signals = install_signals
        self.metrics = Metrics(self)
        self.agent: Any = None
        self.started = time.time()
        self.reloads = 0
        self.stop = asyncio.Event()  # set only through request_stop()
        self._wake = asyncio.Event()
        self._reload_pending = False
        self._progress = _DeviceProgress()
        self._unhealthy: str | None = None
        self._switching = False

    # ------------------------------------------------------------ signals

    def request_stop(self) -> None:
        self.stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_pending = True
        self._wake.set()

    async def run(self) -> None:
        from edge_agent.metrics import serve_metrics
        from edge_agent.status import RedactSecrets, secrets_of, serve_status

        redact = RedactSecrets(secrets_of(self.cfg))
        handlers = list(logging.getLogger().handlers)
        for h in handlers:
            h.addFilter(redact)
        self._redact = redact
        loop = asyncio.get_running_loop()
        if self.install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            async with asyncio.TaskGroup() as tg:
                services = [tg.create_task(serve_status(self), name="status-socket")]
                if self.cfg.metrics.enabled:
                    services.append(tg.create_task(serve_metrics(self), name="metrics-http"))
                if self.notifier.watchdog_interval:
                    services.append(tg.create_task(self._watchdog(), name="watchdog"))
                await self._run_agents()
                for t in services:
                    t.cancel()
        except BaseExceptionGroup as group:
            leaves = _leaves(group)
            if not leaves:
                raise
            first = next((e for e in leaves if isinstance(e, EdgeAgentError)), leaves[0])
            log.critical("event=agent_failed error=%r", f"{type(first).__name__}: {first}")
            self.notifier.notify(STATUS=f"failed: {type(first).__name__}: {first}", ERRNO=1)
            if isinstance(first, EdgeAgentError):
                raise first from group  # the CLI prints it as one line and exits 1
            raise
        finally:
            if self.install_signals:
                # everything is committed: a second SIGTERM while the process exits must not turn a
                # clean stop into "killed by signal" (exit status -15) after the loop is gone
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
                    signal.signal(sig, signal.SIG_IGN)
            self.metrics.close()
            self.notifier.close()
            for h in handlers:
                h.removeFilter(redact)

    async def _run_agents(self) -> None:
        from edge_agent.daemon import Agent

        while True:
            agent = Agent(self.cfg, config_path=self.config_path, metrics=self.metrics)
            agent_stop = asyncio.Event()
            self.agent = agent
            self._progress = _DeviceProgress()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(agent.run(agent_stop), name="agent")
                ready = tg.create_task(self._announce_ready(agent), name="notify-ready")
                new_cfg = await self._next_config()
                self._switching = True  # the old pipeline winds down: not a watchdog matter
                if new_cfg is None:
                    self.notifier.notify(STOPPING=1, STATUS="stopping: committing queued events")
                else:
                    self.notifier.notify(RELOADING=1, STATUS="reloading the config",
                                         MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
                ready.cancel()
                agent_stop.set()
            self.metrics.retire(agent)
            self._switching = False
            if new_cfg is None:
                return
            self.cfg = new_cfg
            from edge_agent.status import secrets_of

            self._redact.secrets = list(dict.fromkeys(self._redact.secrets + secrets_of(new_cfg)))
            self.reloads += 1
            log.info("event=config_reloaded config=%s devices=%d tags=%d", self.config_path,
                     len(new_cfg.devices), len(new_cfg.tags))

    async def _next_config(self) -> Config | None:
        """Wait for SIGTERM (None) or a SIGHUP whose config is valid (the new Config)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.stop.is_set():
                return None
            if not self._reload_pending:
                continue
            self._reload_pending = False
            if self.config_path is None:
                log.warning("event=config_reload_ignored reason=%r", "started without a config file")
                continue
            try:
                # parsed in a child process: the parse garbage of a big config never lands in the daemon
                cfg = await asyncio.to_thread(load_config_compact, self.config_path)
            except ConfigError as e:
                log.error("event=config_rejected config=%s problems=%d first=%r action=%r", self.config_path,
                          len(e.problems), e.problems[0] if e.problems else "", "keeps running the old config")
                for line in e.problems[1:]:
                    log.error("event=config_problem %r", line)
                continue
            if self.stop.is_set():
                return None
            old = self.cfg
            if cfg.buffer.resolved_path() != old.buffer.resolved_path():
                # the events waiting in the old file would never be forwarded
                log.error("event=config_rejected config=%s problems=1 first=%r action=%r", self.config_path,
                          f"buffer.path changed from {old.buffer.resolved_path()} to {cfg.buffer.resolved_path()}",
                          "keeps running the old config; restart the service to move the buffer")
                continue
            if cfg.metrics != old.metrics or cfg.status != old.status:
                log.warning("event=config_restart_needed fields=%r", "metrics/status take effect at the next restart")
            return cfg

    async def _announce_ready(self, agent: Any) -> None:
        await agent.ready.wait()
        deadline = time.monotonic() + READY_AFTER
        while time.monotonic() < deadline and not all(d.health.reads + d.health.errors for d in agent.drivers):
            await asyncio.sleep(0.05)
        waiting = [d.device.name for d in agent.drivers if not d.health.reads + d.health.errors]
        status = f"polling {len(agent.drivers)} device(s)" + (f"; no answer yet from {', '.join(waiting)}"
                                                               if waiting else "")
        self.notifier.notify(READY=1, STATUS=status, MAINPID=os.getpid())
        log.info("event=ready devices=%d waiting=%s", len(agent.drivers), ",".join(waiting) or "-")

    # ------------------------------------------------------------ watchdog

    async def health(self) -> str | None:
        """None when healthy, else why not: what the watchdog (and `status`) report."""
        agent = self.agent
        if agent is None or not agent.ready.is_set() or self._switching:
            return None  # starting, stopping or restarting after a reload: TimeoutStartSec covers that
        at = time.monotonic()
        if at - agent.last_derive > DERIVE_STALE:
            return f"derivation has not run for {at - agent.last_derive:.0f}s"
        try:
            async with asyncio.timeout(BUFFER_TIMEOUT):
                await agent.buffer.stats()
        except TimeoutError:
            return f"buffer writer did not answer within {BUFFER_TIMEOUT:.0f}s"
        except Exception as e:  # noqa: BLE001 -- a closed or broken buffer: report it, do not kill the watchdog loop
            return f"buffer error: {e!r}"
        stale = self._progress.stale(agent, at)
        if stale:
            return f"no poll progress on {', '.join(stale)}"
        return None

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        while True:
            problem = await self.health()
            if problem is None:
                self.notifier.notify(WATCHDOG=1)
                if self._unhealthy is not None:
                    log.info("event=watchdog_resumed")
            elif problem != self._unhealthy:
                log.error("event=watchdog_withheld reason=%r", problem)
            self._unhealthy = problem
            await asyncio.sleep(interval)


# ---------------------------------------------------------------- install / uninstall

UNIT_NAME = "edge-agent.service"
UNIT_SOURCE = Path(__file__).resolve().parent.parent / "systemd" / UNIT_NAME
SERIAL_DROPIN = "serial-port.conf"


@dataclass
class Layout:
    """Where things go under a root directory (`/` on a real system)."""

    root: Path
    unit_dir: Path = field(init=False)
    config_dir: Path = field(init=False)
    state_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.unit_dir = self.root / "etc/systemd/system"
        self.config_dir = self.root / "etc/edge-agent"
        # DynamicUser=yes: systemd keeps the state in /var/lib/private/edge-agent and links
        # /var/lib/edge-agent to it; creating it in that place is what systemd expects.
        self.state_dir = self.root / "var/lib/private/edge-agent"

    @property
    def unit(self) -> Path:
        return self.unit_dir / UNIT_NAME

    @property
    def dropin_dir(self) -> Path:
        return self.unit_dir / f"{UNIT_NAME}.d"


def default_exec_start() -> str:
    """How systemd should start this installation of the agent."""
    script = Path(sys.executable).parent / "edge-agent"
    cmd = str(script) if script.exists() else f"{sys.executable} -m edge_agent"
    return f"{cmd} run --config ${{CONFIGURATION_DIRECTORY}}/config.yaml"


def render_unit(exec_start: str, template: str | None = None) -> str:
    text = template if template is not None else UNIT_SOURCE.read_text(encoding="utf-8")
    lines = [f"ExecStart={exec_start}" if line.startswith("ExecStart=") else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def render_serial_dropin(ports: list[str]) -> str:
    allow = "".join(f"DeviceAllow={p} rw\n" for p in ports)
    return ("# Written by `edge-agent service install --serial`: Modbus RTU serial ports (see systemd/serial-port.conf)\n"
            "[Service]\nPrivateDevices=no\nPrivateUsers=no\nDevicePolicy=closed\n" + allow + "SupplementaryGroups=dialout\n")


def systemd_running(root: Path) -> bool:
    """systemctl can only talk to a running systemd on this very system."""
    return root.resolve() == Path("/") and Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _systemctl(args: list[str], root: Path) -> tuple[bool, str]:
    """Run systemctl with a timeout; with --root it edits the tree offline (enable/disable only)."""
    exe = shutil.which("systemctl")
    if exe is None:
        return False, "systemctl not found"
    cmd = [exe, *([] if root.resolve() == Path("/") else [f"--root={root}"]), *args]
    try:
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False, f"{' '.join(cmd)} timed out after 60s"
    out = (p.stdout + p.stderr).strip()
    return p.returncode == 0, out


@dataclass
class Step:
    what: str
    done: bool = True
    detail: str = ""


def install(root: Path, *, exec_start: str | None = None, config: Path | None = None, starter: str | None = None,
            serial: list[str] = (), start: bool = False,
            progress: Callable[[str], None] = lambda _: None) -> list[Step]:
    """Put the unit, the config and state directories in place and enable the service."""
    lay = Layout(root)
    steps: list[Step] = []
    exec_start = exec_start or default_exec_start()
    if any(exec_start.startswith(p) for p in ("/home/", "/root/", "/run/user/")):
        steps.append(Step("warning", False, "the agent lives under /home or /root, which ProtectHome=yes hides "
                                            "from the service: install it under /opt (e.g. /opt/edge-agent/.venv)"))

    progress("unit file")
    _write_atomic(lay.unit, render_unit(exec_start))
    steps.append(Step(f"wrote {lay.unit}"))
    if serial:
        dropin = lay.dropin_dir / SERIAL_DROPIN
        _write_atomic(dropin, render_serial_dropin(list(serial)))
        steps.append(Step(f"wrote {dropin} (serial ports: {', '.join(serial)})"))

    progress("config directory")
    lay.config_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(lay.config_dir, 0o755)
    target = lay.config_dir / "config.yaml"
    if config is not None:
        load_config(config)  # raises ConfigError: never install a config that does not validate
        _write_atomic(target, config.read_text(encoding="utf-8"), 0o644)
        steps.append(Step(f"copied {config} to {target}"))
    elif not target.exists() and starter is not None:
        _write_atomic(target, starter, 0o644)
        steps.append(Step(f"wrote a starter config to {target}: edit it, then `edge-agent validate {target}`"))
    else:
        steps.append(Step(f"kept {target}" if target.exists() else f"no config at {target} yet"))

    progress("state directory")
    lay.state_dir.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(lay.state_dir.parent, 0o700)
    (lay.state_dir / "pki").mkdir(parents=True, exist_ok=True)
    os.chmod(lay.state_dir, 0o750)
    steps.append(Step(f"created {lay.state_dir} (buffer, pki/ certificates, status socket)"))

    progress("enable")
    if systemd_running(root):
        ok, out = _systemctl(["daemon-reload"], root)
        steps.append(Step("systemctl daemon-reload", ok, out))
        ok, out = _systemctl(["enable", *(["--now"] if start else []), UNIT_NAME], root)
        steps.append(Step(f"systemctl enable{' --now' if start else ''} {UNIT_NAME}", ok, out))
    elif root.resolve() != Path("/") and shutil.which("systemctl"):
        ok, out = _systemctl(["enable", UNIT_NAME], root)  # offline: creates the wants/ symlink under root
        steps.append(Step(f"systemctl --root={root} enable {UNIT_NAME}", ok, out))
    else:
        steps.append(Step("systemctl skipped", False, "systemd is not running here: run "
                                                     f"`systemctl daemon-reload && systemctl enable --now {UNIT_NAME}` "
                                                     "on the target system"))
    return steps


def uninstall(root: Path, *, purge: bool = False, progress: Callable[[str], None] = lambda _: None) -> list[Step]:
    """Disable and remove the unit; keep config and buffer unless `purge` (buffered events die with it)."""
    lay = Layout(root)
    steps: list[Step] = []
    progress("disable")
    if systemd_running(root):
        ok, out = _systemctl(["disable", "--now", UNIT_NAME], root)
        steps.append(Step(f"systemctl disable --now {UNIT_NAME}", ok, out))
    elif root.resolve() != Path("/") and shutil.which("systemctl") and lay.unit.exists():
        ok, out = _systemctl(["disable", UNIT_NAME], root)
        steps.append(Step(f"systemctl --root={root} disable {UNIT_NAME}", ok, out))
    else:
        steps.append(Step("systemctl skipped", False, "systemd is not running here"))
    progress("unit file")
    for path in (lay.dropin_dir / SERIAL_DROPIN, lay.unit):
        if path.exists():
            path.unlink()
            steps.append(Step(f"removed {path}"))
    if lay.dropin_dir.is_dir() and not any(lay.dropin_dir.iterdir()):
        lay.dropin_dir.rmdir()
    if systemd_running(root):
        ok, out = _systemctl(["daemon-reload"], root)
        steps.append(Step("systemctl daemon-reload", ok, out))
    progress("data")
    if purge:
        for d in (lay.config_dir, lay.state_dir, lay.root / "var/lib/edge-agent"):
            if d.is_symlink():
                d.unlink()
            elif d.exists():
                shutil.rmtree(d)
            else:
                continue
            steps.append(Step(f"removed {d}"))
    else:
        steps.append(Step(f"kept {lay.config_dir} and {lay.state_dir} (use --purge to delete them, "
                          "buffered events included)"))
    return steps
