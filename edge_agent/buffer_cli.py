"""`edge-agent buffer stats|export|purge`: what a technician needs to look into the buffer.

They open the SQLite file next to a running agent (WAL lets readers and one writer
share it). `purge` deletes events for good and commits a `gap` event (reason
`purged`) that names what was deleted, so the MES sees the loss instead of silence.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from buffer import Buffer

app = typer.Typer(help="Inspect, export or purge the store-and-forward buffer.", no_args_is_help=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML config file")]


def _open(config: Path) -> Buffer:
    from edge_agent.cli_app import _load

    cfg = _load(config)
    path = cfg.buffer.resolved_path()
    if not path.exists():
        typer.echo(f"edge-agent: no buffer at {path} (has the agent run with this config?)", err=True)
        raise typer.Exit(1)
    return Buffer(path, max_bytes=cfg.buffer.max_bytes, durability=cfg.buffer.durability, max_age=cfg.buffer.max_age,
                  gap_topic=f"{cfg.line_root}/event/gap")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _size(n: int) -> str:
    for unit in ("GB", "MB", "kB"):
        f = {"GB": 1e9, "MB": 1e6, "kB": 1e3}[unit]
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{n} B"


def render_stats(s: dict[str, Any]) -> str:
    lines = [
        f"buffer      {s['path']} ({s['durability']} durability)",
        f"depth       {s['depth']} event(s)" + (f"  [{', '.join(f'{t}: {n}' for t, n in sorted(s['by_type'].items()))}]"
                                              if s["by_type"] else ""),
        f"oldest      {_age(s['oldest_age_s'])} ago" if s["depth"] else "oldest      -",
        f"size        {_size(s['bytes'])} used of {_size(s['max_bytes'])} cap; files {_size(s['file_bytes'])}"
        + (f"; age cap {_age(s['max_age_s'])}" if s["max_age_s"] else ""),
        f"last seq    {s['last_seq']}",
    ]
    if s["cursors"]:
        lines.append("outputs     " + "; ".join(f"{o}: acked up to seq {c}, {s['unacked'].get(o, 0)} waiting"
                                               for o, c in sorted(s["cursors"].items())))
    else:
        lines.append("outputs     none registered yet")
    dead = s["dead_letters"]
    lines.append("dead letters " + (", ".join(f"{o}: {n}" for o, n in sorted(dead.items())) if dead else "none")
                 + ("  (see: edge-agent buffer export --dead-letters)" if dead else ""))
    return "\n".join(lines)


@app.command()
def stats(config: ConfigOption,
          as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Depth, oldest event, bytes, each output's cursor and dead letters."""
    b = _open(config)
    try:
        s = b.stats()
    finally:
        b.close()
    s.pop("metrics", None)  # counters of this CLI process, not of the agent
    typer.echo(json.dumps(s, indent=2) if as_json else render_stats(s))


@app.command()
def export(
    config: ConfigOption,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write (default: stdout)")] = None,
    dead_letters: Annotated[bool, typer.Option("--dead-letters", help="export the dead-letter table instead")] = False,
) -> None:
    """Every buffered event (or dead letter) as JSON lines, oldest first; progress on stderr."""
    b = _open(config)
    total = b.count(dead_letters=dead_letters)
    tty = sys.stderr.isatty()
    done, last = 0, 0.0
    try:
        with open(output, "w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout) as out:
            for record in b.export(dead_letters=dead_letters):
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
                done += 1
                if time.monotonic() - last > 0.5 or done == total:
                    last = time.monotonic()
                    start, end = ("\r", "" if done < total else "\n") if tty else ("", "\n")
                    sys.stderr.write(f"{start}exported {done}/{total}{end}")
                    sys.stderr.flush()
    finally:
        b.close()
    if total == 0:
        sys.stderr.write("exported 0/0\n")


@app.command()
def purge(
    config: ConfigOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    dead_letters: Annotated[bool, typer.Option("--dead-letters", help="purge only the dead-letter table")] = False,
) -> None:
    """Delete every buffered event (recorded in a gap event) or every dead letter. Asks first unless --yes."""
    b = _open(config)
    try:
        n = b.count(dead_letters=dead_letters)
        what = f"{n} dead letter(s)" if dead_letters else f"{n} buffered event(s) not yet delivered to every output"
        if n == 0:
            typer.echo(f"nothing to purge in {b.path}")
            return
        if not yes and not typer.confirm(f"Delete {what} from {b.path}? This cannot be undone"):
            typer.echo("aborted; nothing deleted")
            raise typer.Exit(1)
        deleted = b.purge(dead_letters=dead_letters)
    finally:
        b.close()
    typer.echo(f"deleted {deleted} {'dead letter(s)' if dead_letters else 'event(s); a gap event records them'}")
