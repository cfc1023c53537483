"""`edge-agent` command line (typer app): what a technician types on the line PC.

`edge-agent run --config PATH` is usually dispatched by edge_agent/cli.py before this
module (and typer) is imported; the `run` command here does the same through the
same function. Exit codes: 0 ok, 1 runtime failure, 2 bad config or bad arguments.
Bad input never shows a traceback: `ConfigError` becomes its messages on stderr.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from edge_agent.cli import EXIT_CONFIG, load_or_report, run_command, setup_logging
from edge_agent.config import Config
from edge_agent.errors import EdgeAgentError

app = typer.Typer(help="Edge data-collection agent: PLCs -> machine facts -> MES.", no_args_is_help=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML config file")]


def _load(path: Path) -> Config:
    cfg = load_or_report(path)
    if cfg is None:
        raise typer.Exit(EXIT_CONFIG)
    return cfg


def _logging(verbose: bool) -> None:
    setup_logging(verbose)


@app.command()
def validate(path: Annotated[Path, typer.Argument(help="config file to check")]) -> None:
    """Check a config file; print every problem with file, line and field."""
    cfg = _load(path)
    typer.echo(f"{path}: ok ({len(cfg.machines)} machine(s), {len(cfg.devices)} device(s), {len(cfg.tags)} tag(s))")


@app.command()
def run(config: ConfigOption, verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run the agent: poll devices, derive events, buffer them, forward them."""
    code = run_command(config, verbose)
    if code:
        raise typer.Exit(code)


@app.command()
def simulate(config: ConfigOption, verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
             cycle_time: Annotated[float, typer.Option(help="seconds per part")] = 1.0) -> None:
    """Serve simulated machines on the device endpoints named in the config."""
    from edge_agent.simulator import Simulation, serve

    cfg = _load(config)
    _logging(verbose)
    sim = Simulation(cfg)
    for m in sim.machines.values():
        m.cycle_time = cycle_time
    try:
        asyncio.run(serve(cfg, sim))
    except KeyboardInterrupt:
        pass


@app.command()
def demo(seconds: Annotated[float, typer.Option(help="stop after this long (0 = until Ctrl-C)")] = 0) -> None:
    """The embedded default: a simulated press, a local mosquitto and the agent; prints forwarded events."""
    from edge_agent.demo import run_demo

    _logging(False)
    try:
        asyncio.run(run_demo(seconds or None))
    except KeyboardInterrupt:
        pass
    except EdgeAgentError as e:
        typer.echo(f"edge-agent: {e}", err=True)
        raise typer.Exit(1) from None


@app.command()
def scan(
    device: Annotated[str, typer.Argument(help="name of a Modbus device in the config")],
    config: ConfigOption,
    range_: Annotated[str, typer.Option("--range", help="registers A-B inclusive, as the device counts (0-99, 40001-40100)")],
    unit: Annotated[int | None, typer.Option(help="unit id (default: the device's)")] = None,
    table: Annotated[str | None, typer.Option(help="hr or ir (default hr; 3xxxx/4xxxx ranges name it)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Read a Modbus register range and print it as u16, i16, hex, ASCII and 32-bit values in each byte order."""
    from drivers.modbus.scan import parse_range, render_json, render_text
    from drivers.modbus.scan import scan as run_scan

    cfg = _load(config)
    dev = next((d for d in cfg.devices if d.name == device), None)
    if dev is None or not dev.protocol.startswith("modbus"):
        names = ", ".join(d.name for d in cfg.devices if d.protocol.startswith("modbus")) or "none"
        typer.echo(f"edge-agent: no Modbus device {device!r} in {config} (Modbus devices: {names})", err=True)
        raise typer.Exit(EXIT_CONFIG)
    if table is not None and table not in ("hr", "ir"):
        typer.echo(f"edge-agent: --table must be hr or ir, not {table!r}", err=True)
        raise typer.Exit(EXIT_CONFIG)
    try:
        tbl, start, end = parse_range(range_, dev, table)
    except ValueError as e:
        typer.echo(f"edge-agent: {e}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    _logging(False)
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if total > 125:
            start_, end_ = ("\r", "" if done < total else "\n") if tty else ("", "\n")
            sys.stderr.write(f"{start_}scanned {done}/{total} registers{end_}")
            sys.stderr.flush()

    try:
        rows = asyncio.run(run_scan(dev, unit=dev.unit if unit is None else unit, table=tbl, start=start, end=end,
                                    progress=progress))
    except KeyboardInterrupt:
        raise typer.Exit(1) from None
    except EdgeAgentError as e:
        typer.echo(f"edge-agent: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(render_json(rows) if as_json else render_text(rows))


@app.command()
def browse(
    device: Annotated[str, typer.Argument(help="name of an OPC UA device in the config")],
    config: ConfigOption,
    path: Annotated[str | None, typer.Option(help="start below this: browse names like Press/Line3, or a node id")] = None,
    depth: Annotated[int, typer.Option(min=1, max=10, help="levels to descend")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """List an OPC UA server's objects and variables (node id with namespace URI, type, value) to pick tags."""
    cfg = _load(config)
    dev = next((d for d in cfg.devices if d.name == device), None)
    if dev is None or dev.protocol != "opcua":
        names = ", ".join(d.name for d in cfg.devices if d.protocol == "opcua") or "none"
        typer.echo(f"edge-agent: no OPC UA device {device!r} in {config} (OPC UA devices: {names})", err=True)
        raise typer.Exit(EXIT_CONFIG)
    from drivers.opcua.browse import browse as run_browse
    from drivers.opcua.browse import render_json, render_text

    _logging(verbose)
    try:
        entries = asyncio.run(run_browse(dev, path, depth, pki_dir=cfg.pki_dir))
    except KeyboardInterrupt:
        raise typer.Exit(1) from None
    except EdgeAgentError as e:
        typer.echo(f"edge-agent: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(render_json(entries) if as_json else render_text(entries))


# technician commands: init, tags, status, service (edge_agent/cli_ops.py)
from edge_agent.cli_ops import register as _register_ops  # noqa: E402

_register_ops(app)


def _register_buffer(app: typer.Typer) -> None:
    """`edge-agent buffer stats|export|purge` (edge_agent/buffer_cli.py)."""
    from edge_agent.buffer_cli import app as buffer_app

    app.add_typer(buffer_app, name="buffer")


_register_buffer(app)

# MES commands from a shell: order set|clear, downtime classify (edge_agent/cli_mes.py)
from edge_agent.cli_mes import register as _register_mes  # noqa: E402

_register_mes(app)


def main() -> None:
    app()
