"""`python -m bench.probe run --config ...`: the agent's own CLI, plus a note of sys.modules at exit.

Used to check that only the drivers a config uses are imported. Writes the sorted
module names to $BENCH_MODULES_OUT when the agent exits (SIGTERM stops it cleanly);
with $BENCH_GC_OUT, also every garbage collection's generation and duration.
"""

from __future__ import annotations

import atexit
import os
import sys

_gc: list[tuple[int, float]] = []  # (generation, seconds) of each collection


def _dump() -> None:
    out = os.environ.get("BENCH_MODULES_OUT")
    if out:
        with open(out, "w") as f:
            f.write("\n".join(sorted(sys.modules)))
    out = os.environ.get("BENCH_GC_OUT")
    if out:
        import json

        with open(out, "w") as f:
            json.dump(_gc, f)


def _watch_gc() -> None:
    import gc
    import time

    started = [0.0]

    def cb(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            _gc.append((info["generation"], time.perf_counter() - started[0]))

    gc.callbacks.append(cb)


if __name__ == "__main__":
    atexit.register(_dump)
    if os.environ.get("BENCH_GC_OUT"):
        _watch_gc()
    from edge_agent.cli import main

    sys.argv[0] = "edge-agent"
    main()
