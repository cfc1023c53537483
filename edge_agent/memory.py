"""Keeping the daemon's resident memory small (issue 8: 1k tags <= 50 MB, 10k tags <= 120 MB).

Parsing and validating a config is by far the most garbage the agent ever makes: the
YAML node tree with a line mark per node, the `{path: line}` map kept for error
messages, pydantic's intermediate data. For a 10,000-tag file the peak is ≈ 47 MB
of Python objects of which ≈ 8 MB stay alive (the `Config`), and because survivors
and garbage were allocated interleaved, CPython's allocator can give back almost
none of the rest: RSS stays ≈ 39 MB above what it was before the load, for the life
of the process (`gc.collect()` + `malloc_trim(0)` get back ≈ 1 MB of it; measured).

`load_config_compact` therefore parses in a short-lived forked child and hands the
validated `Config` back pickled; unpickling allocates only the objects that stay, in
one go. Measured (fresh interpreter with the agent's imports, RSS after the load):
10,000 tags +39.4 MB -> +9.0 MB, 1,000 tags +3.7 MB -> +0 MB. The child exists for the
time of the parse (≈ 0.7 s for 10k tags) and costs that peak once, in its own process.

At start-up (`edge-agent run` before the event loop and the buffer thread exist) the
process has one thread and the child is a fork. A SIGHUP reload happens with threads
running, where forking is not safe: there the child is a fresh interpreter
(`python -m edge_agent.memory PATH`, for files of 64 kB and more; smaller ones are parsed
in-process); a reload of the 10k-tag config took the agent from 86 to 142 MiB in-process,
to 102 MiB this way. Whatever goes wrong in the child other than a config error (no
fork on this platform, the fork fails, the child dies, a value that does not pickle)
falls back to parsing in this process, so the result and the errors
(`FILE:LINE: field: message`) are always exactly those of `load_config`.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

_OK, _CONFIG_ERROR, _OTHER = b"o", b"c", b"x"
# With threads running, a config file smaller than this is parsed in-process: a fresh
# interpreter costs ≈ 0.4 s, and what a small file leaves behind is small (a 62 kB
# 1,000-tag file: +3.7 MB; the 709 kB 10,000-tag file: +39 MB).
SUBPROCESS_MIN_BYTES = 64 * 1024


def load_config_compact(path: str | Path) -> Any:
    """`edge_agent.config.load_config(path)`, parsed in a forked child (see the module doc)."""
    from edge_agent.config import load_config

    if not hasattr(os, "fork"):
        return load_config(path)
    if threading.active_count() > 1:  # forking a threaded process is not safe (a SIGHUP reload)
        if _size(path) < SUBPROCESS_MIN_BYTES:
            return load_config(path)
        return _load_in_subprocess(path)
    try:
        rfd, wfd = os.pipe()
    except OSError:
        return load_config(path)
    try:
        pid = os.fork()
    except OSError:
        os.close(rfd)
        os.close(wfd)
        return load_config(path)
    if pid == 0:  # the child: parse, write one tagged pickle, leave without running atexit hooks
        code = 0
        try:
            os.close(rfd)
            payload = _payload(path)
            with os.fdopen(wfd, "wb") as out:
                out.write(payload)
        except BaseException:  # noqa: BLE001 -- nothing may escape a forked child
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        with os.fdopen(rfd, "rb") as inp:
            data = inp.read()
    finally:
        _reap(pid)
    return _result(data, path)


def _result(data: bytes, path: str | Path) -> Any:
    from edge_agent.config import load_config
    from edge_agent.errors import ConfigError

    kind, body = data[:1], data[1:]
    if kind == _OK:
        try:
            return pickle.loads(body)
        except Exception:  # noqa: BLE001 -- fall back to the in-process parse
            return load_config(path)
    if kind == _CONFIG_ERROR:
        raise ConfigError(pickle.loads(body))
    return load_config(path)  # the child failed otherwise (or died): the same parse, here


def _reap(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return


def _size(path: str | Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # load_config says what is wrong with it


def _load_in_subprocess(path: str | Path) -> Any:
    """The same, in a fresh interpreter (`python -m edge_agent.memory PATH`): for a process that
    has threads (a reload while the agent runs), where fork is not safe. Slower to start
    (the child imports pydantic), which a reload can afford."""
    from edge_agent.config import load_config

    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    try:
        proc = subprocess.run([sys.executable, "-m", "edge_agent.memory", os.fspath(path)], stdin=subprocess.DEVNULL,
                              capture_output=True, env=env, timeout=600, check=False)
    except (OSError, subprocess.SubprocessError):
        return load_config(path)
    return _result(proc.stdout if proc.returncode == 0 else b"", path)


def _payload(path: str | Path) -> bytes:
    """What a child sends back: one tag byte, then the pickled Config or the config's problems."""
    from edge_agent.config import load_config
    from edge_agent.errors import ConfigError

    try:
        return _OK + pickle.dumps(load_config(path), protocol=pickle.HIGHEST_PROTOCOL)
    except ConfigError as e:
        return _CONFIG_ERROR + pickle.dumps(list(e.problems), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 -- the parent parses again and raises it itself
        return _OTHER


def _child_main(path: str) -> None:
    sys.stdout.buffer.write(_payload(path))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    _child_main(sys.argv[1])
