"""Benchmarks of the book: training throughput (``python -m bench.throughput``) and time to accuracy
(``python -m bench.time_to_accuracy``). The measuring code lives in :mod:`alexnet_lib.speed`; the results
they write with ``--json`` under ``bench/results/`` are what ``tools/readme_bench.py`` turns into the
README's speed section."""

from __future__ import annotations

import datetime
import os
import sys


def load_average() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_metadata(device=None) -> dict:
    """What produced a result: the machine (alexnet_lib.device.describe), the date, the command line and
    the load average at the start (other processes on the cores slow the wall clock down)."""
    from alexnet_lib.device import describe

    return dict(describe(device), date=datetime.date.today().isoformat(), cores=os.cpu_count(),
                command="python -m " + " ".join([sys.modules["__main__"].__spec__.name if getattr(
                    sys.modules["__main__"], "__spec__", None) else sys.argv[0], *sys.argv[1:]]),
                load_average_start=load_average())
