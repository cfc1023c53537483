"""`edge-agent status`: what the running daemon reports about itself over a local unix socket.

The daemon listens on `status.socket` (default `<buffer file>.status.sock`, i.e.
/var/lib/edge-agent/buffer.db.status.sock under systemd). A client connects and reads one
JSON document; nothing is sent the other way, so there is nothing to parse or abuse. The
socket is only as readable as the state directory (root and the service's group).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.config import Config
from edge_agent.model import rfc3339

log = logging.getLogger("edge_agent.status")

SYSTEMD_STATE_DIR = Path("/var/lib/edge-agent")


def socket_path(cfg: Config) -> Path:
    if cfg.status.socket is not None:
        return cfg.status.socket
    buf = cfg.buffer.resolved_path()
    return buf.with_name(buf.name + ".status.sock")


def candidate_paths(cfg: Config) -> list[Path]:
    """Where a client looks: the configured path, and the systemd state directory for a relative buffer."""
    paths = [socket_path(cfg)]
    if cfg.status.socket is None and not cfg.buffer.path.is_absolute():
        paths.append(SYSTEMD_STATE_DIR / (cfg.buffer.path.name + ".status.sock"))
    return list(dict.fromkeys(paths))


async def snapshot(supervisor: Any) -> dict[str, Any]:
    """Everything maintenance wants at a glance; secrets never appear (errors are redacted)."""
    from edge_agent.metrics import machine_state, output_retries

    agent = supervisor.agent
    cfg = supervisor.cfg
    now = time.time()
    out: dict[str, Any] = {
        "version": __version__, "pid": os.getpid(), "started": rfc3339(supervisor.started),
        "uptime_s": round(now - supervisor.started, 1), "config": str(supervisor.config_path or ""),
        "plant": cfg.plant.model_dump(), "reloads": supervisor.reloads,
        "ready": bool(agent is not None and agent.ready.is_set()),
        "devices": [], "machines": [], "buffer": None, "outputs": [],
        "samples_per_second": round(supervisor.metrics.samples_per_second(), 2),
    }
    if agent is None:
        return out
    out["health"] = await supervisor.health() or "ok"
    for d in agent.drivers:
        h = d.health
        out["devices"].append({
            "name": d.device.name, "protocol": d.device.protocol, "connected": h.connected,
            "last_ok": rfc3339(h.last_ok) if h.last_ok else None,
            "last_ok_age_s": round(now - h.last_ok, 1) if h.last_ok else None,
            "reads": h.reads, "errors": h.errors, "last_error": _redact(h.last_error, cfg),
        })
    for machine, deriver in agent.derivers.items():
        out["machines"].append({"id": machine, "state": machine_state(deriver)})
    stats = None
    if agent.buffer.sync is not None:
        try:
            async with asyncio.timeout(5.0):
                stats = await agent.buffer.stats()
        except TimeoutError:
            out["buffer"] = {"error": "buffer writer did not answer within 5s"}
        except Exception as e:  # noqa: BLE001 -- closing during a reload or a stop
            out["buffer"] = {"error": f"buffer unavailable: {e}"}
    if stats is not None:
        oldest = stats.get("oldest_ts")
        out["buffer"] = {
            "path": str(cfg.buffer.resolved_path()), "depth": stats["depth"],
            "oldest": rfc3339(oldest) if oldest else None,
            "oldest_age_s": round(now - oldest, 1) if oldest else 0.0,
            "bytes": stats["bytes"], "max_bytes": stats["max_bytes"], "last_seq": stats["last_seq"],
        }
    cursors = (stats or {}).get("cursors", {})
    for o in agent.outputs:
        last = getattr(o, "last_delivery", None)
        out["outputs"].append({
            "name": o.name, "connected": bool(getattr(o, "connected", False)),
            "delivered": getattr(o, "delivered", 0), "retries": output_retries(o, supervisor.metrics._retry_handler.counts),
            "last_error": _redact(getattr(o, "last_error", None), cfg),
            "last_delivery": rfc3339(last) if last else None,
            "last_delivery_age_s": round(now - last, 1) if last else None, "acked_seq": cursors.get(o.name),
        })
    return out


def _redact(text: str | None, cfg: Config) -> str | None:
    if not text:
        return text
    for secret in secrets_of(cfg):
        text = text.replace(secret, "***")
    return text


def secrets_of(cfg: Any) -> list[str]:
    """Every SecretStr value in a config (passwords), to keep them out of logs and reports."""
    from pydantic import BaseModel, SecretStr

    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if len(secret) >= 3:
                found.append(secret)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    walk(cfg)
    return found


class RedactSecrets(logging.Filter):
    """Replaces configured passwords in every log line, whatever code logged it."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            if any(s in text for s in self.secrets):
                for s in self.secrets:
                    text = text.replace(s, "***")
                record.msg, record.args = text, None
        return True


# ---------------------------------------------------------------- server


async def serve_status(supervisor: Any) -> None:
    """One JSON document per connection on the unix socket, until cancelled."""
    path = socket_path(supervisor.cfg)
    if len(os.fsencode(path)) > 107:
        log.error("event=status_unavailable socket=%s error=%r", path, "path longer than 107 bytes")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()  # left over from a killed agent; a live one would hold the buffer too
    async with asyncio.TaskGroup() as tg:
        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            tg.create_task(_answer(supervisor, writer), name="status-request")

        try:
            server = await asyncio.start_unix_server(accept, path)
        except OSError as e:
            log.error("event=status_unavailable socket=%s error=%r", path, e.strerror or str(e))
            return
        log.info("event=status_listening socket=%s", path)
        try:
            async with server:
                await asyncio.Event().wait()
        finally:
            server.close()
            try:
                path.unlink()
            except FileNotFoundError:
                pass


async def _answer(supervisor: Any, writer: asyncio.StreamWriter) -> None:
    try:
        async with asyncio.timeout(10.0):
            body = json.dumps(await snapshot(supervisor)).encode() + b"\n"
            writer.write(body)
            await writer.drain()
    except (TimeoutError, ConnectionError) as e:
        log.debug("event=status_request_failed error=%r", str(e))
    except Exception as e:  # noqa: BLE001 -- one bad request must never take the agent down with it
        log.warning("event=status_request_failed error=%r", repr(e))
    finally:
        writer.close()


# ---------------------------------------------------------------- client


class NotRunning(Exception):
    pass


def query(paths: list[Path], timeout: float = 10.0) -> tuple[Path, dict[str, Any]]:
    """Ask the daemon (blocking; the CLI has no loop of its own to protect)."""
    errors = []
    for path in paths:
        if not path.exists():
            errors.append(f"{path}: no such socket")
            continue
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(path))
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
            return path, json.loads(b"".join(chunks))
        except (OSError, ValueError) as e:
            errors.append(f"{path}: {e}")
    raise NotRunning("; ".join(errors))


def render(report: dict[str, Any]) -> None:
    """Tables for a terminal (rich); plain text when piped."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    p = report["plant"]
    health = report.get("health", "starting")
    console.print(f"edge-agent {report['version']} pid {report['pid']} up {_age(report['uptime_s'])} "
                  f"- {p['site']}/{p['area']}/{p['line']} - health: "
                  f"{'[green]ok[/]' if health == 'ok' else f'[red]{health}[/]'}"
                  f"{'' if report['ready'] else ' (starting)'}", highlight=False)
    t = Table("device", "protocol", "connected", "last read", "reads", "errors", "last error", title="Devices",
              title_justify="left")
    for d in report["devices"]:
        t.add_row(d["name"], d["protocol"], "[green]yes[/]" if d["connected"] else "[red]no[/]",
                  f"{_age(d['last_ok_age_s'])} ago" if d["last_ok_age_s"] is not None else "never",
                  str(d["reads"]), str(d["errors"]), d["last_error"] or "")
    console.print(t)
    t = Table("machine", "state", title="Machines", title_justify="left")
    for m in report["machines"]:
        t.add_row(m["id"], m["state"] or "unknown")
    console.print(t)
    b = report.get("buffer") or {}
    if "depth" in b:
        console.print(f"Buffer: {b['depth']} event(s) waiting, oldest {_age(b['oldest_age_s'])} old, "
                      f"{b['bytes'] / 1e6:.1f} of {b['max_bytes'] / 1e6:.0f} MB, last seq {b['last_seq']} "
                      f"({b['path']})", highlight=False)
    elif b:
        console.print(f"Buffer: [red]{b.get('error')}[/]")
    t = Table("output", "connected", "delivered", "last delivery", "acked seq", "retries", "last error",
              title="Outputs", title_justify="left")
    for o in report["outputs"]:
        t.add_row(o["name"], "[green]yes[/]" if o["connected"] else "[red]no[/]", str(o["delivered"]),
                  f"{_age(o['last_delivery_age_s'])} ago" if o["last_delivery_age_s"] is not None else "never",
                  str(o["acked_seq"]), str(o.get("retries", "")), o.get("last_error") or "")
    console.print(t)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
