"""Benchmark probe, on PYTHONPATH only while bench measures start-up: at exit, every Python
process of the bundle writes the modules it had imported (its argv on the first line) to
$TETHER_BENCH_MODULES/<pid>.txt. The import floor is built from these lists."""

import atexit
import os
import sys

_DIR = os.environ.get("TETHER_BENCH_MODULES")


def _dump() -> None:
    if not _DIR:
        return
    try:
        with open(os.path.join(_DIR, f"{os.getpid()}.txt"), "w") as f:
            f.write(" ".join(sys.argv) + "\n")
            f.write("\n".join(sorted(m for m in sys.modules if m != "sitecustomize")))
    except OSError:
        pass


if _DIR:
    atexit.register(_dump)
