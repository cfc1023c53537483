"""`edge-agent` command line entry point (the console script and `python -m edge_agent`).

Exit codes: 0 ok, 1 runtime failure, 2 bad config or bad arguments.
Bad input never shows a traceback: `ConfigError` becomes its messages on stderr.

`edge-agent run --config PATH [-v]` is what systemd starts and what stays resident for
months on a Raspberry Pi, so it is dispatched here before typer, click and the
technician sub-commands (edge_agent/cli_app.py and its sub-apps) are imported: they cost
≈ 6 MB of resident memory that the daemon never uses. Every other command line (and a
`run` line this does not recognise, such as `run --help` or a missing `--config`) goes to
the typer app, which also has a `run` command calling the same `run_command` below, so
help, usage errors and behaviour are the same either way.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

EXIT_CONFIG = 2


def main() -> None:
    parsed = _parse_run(sys.argv[1:])
    if parsed is not None:
        code = run_command(*parsed)
        sys.exit(code)
    from edge_agent.cli_app import app

    app()


def _parse_run(args: list[str]) -> tuple[Path, bool] | None:
    """(config, verbose) for `run --config PATH [-v]` in the forms click accepts; None for anything else."""
    if not args or args[0] != "run":
        return None
    config: str | None = None
    verbose = False
    i = 1
    while i < len(args):
        a = args[i]
        if a in ("--verbose", "-v"):
            verbose = True
        elif a in ("--config", "-c"):
            if config is not None or i + 1 >= len(args):
                return None
            i += 1
            config = args[i]
        elif a.startswith("--config="):
            if config is not None:
                return None
            config = a[len("--config="):]
        elif a.startswith("-c") and not a.startswith("--") and len(a) > 2:
            if config is not None:
                return None
            config = a[2:]
        else:
            return None  # --help, unknown options, extra arguments: typer says what it says
        i += 1
    if not config:
        return None
    return Path(config), verbose


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_or_report(path: Path, *, compact: bool = False) -> Any:
    """The config, or None after printing its problems (FILE:LINE: field: message) to stderr.

    `compact`: parse in a short-lived child process (edge_agent/memory.py), for the daemon.
    """
    from edge_agent.config import load_config
    from edge_agent.errors import ConfigError
    from edge_agent.memory import load_config_compact

    try:
        return (load_config_compact if compact else load_config)(path)
    except ConfigError as e:
        for line in e.problems:
            _err(line)
        return None


def setup_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("pymodbus", "asyncua", "snap7"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL if not verbose else logging.INFO)


def run_command(config: Path, verbose: bool) -> int:
    """`edge-agent run`: poll devices, derive events, buffer them, forward them. Returns the exit code."""
    cfg = load_or_report(config, compact=True)  # before anything starts a thread
    if cfg is None:
        _err(f"event=config_error config={config} action=exit exit_code={EXIT_CONFIG}")
        return EXIT_CONFIG
    import asyncio

    from edge_agent.daemon import run_agent
    from edge_agent.errors import EdgeAgentError

    setup_logging(verbose)
    try:
        asyncio.run(run_agent(cfg, config_path=config))
    except KeyboardInterrupt:
        pass
    except EdgeAgentError as e:
        _err(f"edge-agent: {e}")
        return 1
    return 0


def __getattr__(name: str) -> Any:
    """`edge_agent.cli.app` (and the other names the typer app module defines) still resolve here."""
    if name.startswith("__"):
        raise AttributeError(name)
    from edge_agent import cli_app

    try:
        return getattr(cli_app, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
