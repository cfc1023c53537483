"""Technician commands: `init`, `tags list|add|remove|read`, `status`, `service install|uninstall`.

Registered on the main typer app by `register(app)` (edge_agent/cli.py). Exit codes, for
scripts: 0 ok; 1 runtime failure (device unreachable, a tag read BAD, systemctl failed);
2 bad config or bad arguments; 3 the daemon is not running (status).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_agent.errors import ConfigError

EXIT_RUNTIME, EXIT_CONFIG, EXIT_NOT_RUNNING = 1, 2, 3

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML config file")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

tags_app = typer.Typer(help="List, add, remove and live-read the tags in a config file.", no_args_is_help=True)
service_app = typer.Typer(help="Install or remove the systemd service.", no_args_is_help=True)


def _fail(lines: list[str] | str, code: int) -> typer.Exit:
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(line, err=True)
    return typer.Exit(code)


def _load(path: Path):
    from edge_agent.cli_tags import validate_text

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise _fail(f"{path}: cannot read config: {e.strerror or e}", EXIT_CONFIG) from None
    try:
        return validate_text(text, str(path))
    except ConfigError as e:
        raise _fail(e.problems, EXIT_CONFIG) from None


def _console(err: bool = False):
    from rich.console import Console

    return Console(stderr=err)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# ---------------------------------------------------------------- init


def init(
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write")] = Path("config.yaml"),
    site: Annotated[str | None, typer.Option(help="plant site (ISA-95), e.g. augsburg")] = None,
    area: Annotated[str | None, typer.Option(help="area, e.g. assembly")] = None,
    line: Annotated[str | None, typer.Option(help="line, e.g. line3")] = None,
    machine: Annotated[str | None, typer.Option(help="machine id, e.g. press01")] = None,
    protocol: Annotated[str | None, typer.Option(help="modbus_tcp, opcua or s7")] = None,
    plc_host: Annotated[str | None, typer.Option("--plc-host", help="PLC address")] = None,
    plc_port: Annotated[int | None, typer.Option("--plc-port", help="PLC port (default per protocol)")] = None,
    broker: Annotated[str | None, typer.Option(help="MQTT broker host")] = None,
    broker_port: Annotated[int | None, typer.Option("--broker-port", help="MQTT broker port")] = None,
    username: Annotated[str | None, typer.Option(help="MQTT user; the password is read from $MQTT_PASSWORD")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented starter config (plant hierarchy, one device, broker) from flags or prompts.

    Values not given as flags are asked for when a terminal is attached, else defaulted.
    """
    from edge_agent.cli_tags import validate_text, write_atomic
    from edge_agent.init import PROTOCOLS, Answers, starter_config

    if output.exists() and not force:
        raise _fail(f"edge-agent: {output} exists; use --force to overwrite it", EXIT_RUNTIME)
    interactive = sys.stdin.isatty()
    d = Answers()

    def ask(value: Any, prompt: str, default: Any, kind: type = str) -> Any:
        if value is not None:
            return value
        return typer.prompt(prompt, default=default, type=kind) if interactive else default

    a = Answers(
        site=ask(site, "Site", d.site), area=ask(area, "Area", d.area), line=ask(line, "Line", d.line),
        machine=ask(machine, "Machine id", d.machine), protocol=ask(protocol, f"PLC protocol ({', '.join(PROTOCOLS)})",
                                                                    d.protocol),
        plc_host=ask(plc_host, "PLC address", d.plc_host), plc_port=plc_port,
        broker_host=ask(broker, "MQTT broker", d.broker_host),
        broker_port=ask(broker_port, "MQTT broker port", d.broker_port, int), broker_username=username,
    )
    if a.protocol not in PROTOCOLS:
        raise _fail(f"edge-agent: --protocol must be one of {', '.join(PROTOCOLS)}, not {a.protocol!r}", EXIT_CONFIG)
    text = starter_config(a)
    try:
        validate_text(text, str(output))
    except ConfigError as e:
        raise _fail(e.problems, EXIT_CONFIG) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(output, text)
    typer.echo(f"wrote {output}: check it with `edge-agent validate {output}`, read the tags live with "
               f"`edge-agent tags read --config {output}`")


# ---------------------------------------------------------------- tags


@tags_app.command("list")
def tags_list(config: ConfigOption,
              device: Annotated[str | None, typer.Option(help="only this device's tags")] = None,
              as_json: JsonOption = False) -> None:
    """List the tags in the config file."""
    from rich.table import Table

    from edge_agent.cli_tags import tag_rows

    rows = tag_rows(_load(config), device)
    if as_json:
        _print_json(rows)
        return
    t = Table("name", "device", "address", "type", "unit", "scale", "description")
    for r in rows:
        scale = f"x{r['scale']['gain']:g} + {r['scale']['offset']:g}" if r["scale"] else ""
        t.add_row(r["name"], r["device"], r["address"], r["type"], r["unit"] or "", scale, r["description"])
    _console().print(t)


@tags_app.command("add")
def tags_add(
    name: Annotated[str, typer.Argument(help="tag name (letters, digits, _ . -)")],
    config: ConfigOption,
    device: Annotated[str, typer.Option(help="device that owns the tag")],
    address: Annotated[str, typer.Option(help="address, e.g. hr:100, ns=2;s=Line.Speed, DB1.DBD4")],
    type_: Annotated[str, typer.Option("--type", help="data type, e.g. uint32, Double, REAL")],
    unit: Annotated[str | None, typer.Option(help="engineering unit")] = None,
    gain: Annotated[float | None, typer.Option(help="scale: value = raw * gain + offset")] = None,
    offset: Annotated[float | None, typer.Option(help="scale offset")] = None,
    description: Annotated[str | None, typer.Option(help="free text")] = None,
    as_json: JsonOption = False,
) -> None:
    """Add a tag to the config file, keeping comments and order; refused if the result does not validate."""
    from edge_agent.cli_tags import add_tag, write_atomic

    tag: dict[str, Any] = {"name": name, "device": device, "address": address, "type": type_, "unit": unit}
    if gain is not None or offset is not None:
        tag["scale"] = {"gain": 1.0 if gain is None else gain, "offset": 0.0 if offset is None else offset}
    if description:
        tag["description"] = description
    try:
        text = add_tag(config, tag)
    except ConfigError as e:
        raise _fail(e.problems, EXIT_CONFIG) from None
    except OSError as e:
        raise _fail(f"{config}: {e.strerror or e}", EXIT_CONFIG) from None
    write_atomic(config, text)
    if as_json:
        _print_json({"added": {k: v for k, v in tag.items() if v is not None}, "config": str(config)})
    else:
        typer.echo(f"added tag {name} to {config}")


@tags_app.command("remove")
def tags_remove(names: Annotated[list[str], typer.Argument(help="tag names")], config: ConfigOption,
                as_json: JsonOption = False) -> None:
    """Remove tags from the config file; refused while a machine's signals still use one."""
    from edge_agent.cli_tags import remove_tags, write_atomic

    try:
        text = remove_tags(config, names)
    except ConfigError as e:
        raise _fail(e.problems, EXIT_CONFIG) from None
    except OSError as e:
        raise _fail(f"{config}: {e.strerror or e}", EXIT_CONFIG) from None
    write_atomic(config, text)
    if as_json:
        _print_json({"removed": names, "config": str(config)})
    else:
        typer.echo(f"removed {', '.join(names)} from {config}")


@tags_app.command("read")
def tags_read(names: Annotated[list[str] | None, typer.Argument(help="tag names (default: all)")] = None,
              config: ConfigOption = Path("config.yaml"), as_json: JsonOption = False) -> None:
    """Read tags live from the PLC once: value, type, quality and read time. Exit 1 if any is not good."""
    from rich.progress import Progress, SpinnerColumn, TextColumn
    from rich.table import Table

    from edge_agent.cli_tags import read_tags
    from edge_agent.config import _suggest

    cfg = _load(config)
    names = names or []
    known = {t.name for t in cfg.tags}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise _fail([f"edge-agent: no tag {n!r} in {config}{_suggest(n, known)}" for n in unknown], EXIT_CONFIG)
    err = _console(err=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True,
                  disable=not err.is_terminal) as progress:
        devices = sorted({t.device for t in cfg.tags if not names or t.name in names})
        progress.add_task(f"reading from {', '.join(devices)}", total=None)
        rows = asyncio.run(read_tags(cfg, names))
    if as_json:
        _print_json(rows)
    else:
        t = Table("tag", "device", "value", "type", "quality", "read at", "error")
        for r in rows:
            q = r["quality"]
            colour = {"good": "green", "uncertain": "yellow"}.get(q, "red")
            t.add_row(r["name"], r["device"], repr(r["value"]) if isinstance(r["value"], str) else str(r["value"]),
                      r["type"] or "", f"[{colour}]{q}[/]", r["read_at"] or "", r["error"] or "")
        _console().print(t)
    if any(r["quality"] != "good" for r in rows):
        raise typer.Exit(EXIT_RUNTIME)


# ---------------------------------------------------------------- status


def status(config: ConfigOption = Path("/etc/edge-agent/config.yaml"),
           socket_path: Annotated[Path | None, typer.Option("--socket", help="status socket (default from config)")] = None,
           as_json: JsonOption = False) -> None:
    """Ask the running daemon: devices, last reads, errors, machine states, buffer, deliveries. Exit 3 if not running."""
    from edge_agent.status import NotRunning, candidate_paths, query, render

    paths = [socket_path] if socket_path else candidate_paths(_load(config))
    try:
        _, report = query(paths)
    except NotRunning as e:
        raise _fail(f"edge-agent: the daemon is not running or not reachable ({e})", EXIT_NOT_RUNNING) from None
    if as_json:
        _print_json(report)
    else:
        render(report)
    if report.get("health", "ok") != "ok":
        raise typer.Exit(EXIT_RUNTIME)


# ---------------------------------------------------------------- service


RootOption = Annotated[Path, typer.Option("--root", help="install under this directory instead of / (packaging, tests)")]


def _run_steps(fn, *args: Any, as_json: bool, **kwargs: Any) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn

    err = _console(err=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True,
                  disable=not err.is_terminal) as progress:
        task = progress.add_task("starting", total=None)
        steps = fn(*args, progress=lambda what: progress.update(task, description=what), **kwargs)
    if as_json:
        _print_json([{"step": s.what, "ok": s.done, "detail": s.detail} for s in steps])
    else:
        for s in steps:
            mark = "ok  " if s.done else "skip" if "skipped" in s.what or s.what == "warning" else "FAIL"
            typer.echo(f"{mark} {s.what}" + (f": {s.detail}" if s.detail else ""))
    if any(not s.done and "skipped" not in s.what and s.what != "warning" for s in steps):
        raise typer.Exit(EXIT_RUNTIME)


@service_app.command("install")
def service_install(
    root: RootOption = Path("/"),
    config: Annotated[Path | None, typer.Option("--config", "-c", help="config to install as /etc/edge-agent/config.yaml")] = None,
    exec_start: Annotated[str | None, typer.Option(help="ExecStart= command (default: this installation)")] = None,
    serial: Annotated[list[str] | None, typer.Option(help="allow a serial port for Modbus RTU (repeatable)")] = None,
    start: Annotated[bool, typer.Option("--start", help="also start it now")] = False,
    as_json: JsonOption = False,
) -> None:
    """Install the unit, /etc/edge-agent and the state directory, and enable the service.

    systemctl runs only where systemd is running (or offline with --root); otherwise that
    step is reported as skipped with the command to run on the target.
    """
    from edge_agent.init import Answers, starter_config
    from edge_agent.service import install

    try:
        _run_steps(install, root, exec_start=exec_start, config=config, starter=starter_config(Answers()),
                   serial=serial or [], start=start, as_json=as_json)
    except ConfigError as e:
        raise _fail(e.problems, EXIT_CONFIG) from None
    except PermissionError as e:
        raise _fail(f"edge-agent: {e} (run it with sudo)", EXIT_RUNTIME) from None


@service_app.command("uninstall")
def service_uninstall(
    root: RootOption = Path("/"),
    purge: Annotated[bool, typer.Option("--purge", help="also delete /etc/edge-agent and the state (the buffer!)")] = False,
    as_json: JsonOption = False,
) -> None:
    """Disable and remove the service; config and buffer stay unless --purge."""
    from edge_agent.service import uninstall

    try:
        _run_steps(uninstall, root, purge=purge, as_json=as_json)
    except PermissionError as e:
        raise _fail(f"edge-agent: {e} (run it with sudo)", EXIT_RUNTIME) from None


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("status")(status)
    app.add_typer(tags_app, name="tags")
    app.add_typer(service_app, name="service")
