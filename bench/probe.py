"""`python -m bench.probe run --config ...`: the agent's own CLI, plus a note of sys.modules at exit.

Used to check that only the drivers a config uses are imported. Writes the sorted
module names to $BENCH_MODULES_OUT when the agent exits (SIGTERM stops it cleanly).
"""

from __future__ import annotations

import atexit
import os
import sys


def _dump() -> None:
    out = os.environ.get("BENCH_MODULES_OUT")
    if out:
        with open(out, "w") as f:
            f.write("\n".join(sorted(sys.modules)))


if __name__ == "__main__":
    atexit.register(_dump)
    from edge_agent.cli import main

    sys.argv[0] = "edge-agent"
    main()
