"""Re-execute chapters in full mode, store their outputs, and record how long each took.

    python tools/run_notebooks.py          # every chapter, one after the other (`make notebooks`)
    python tools/run_notebooks.py 03 07    # some chapters (file-name prefixes)

Each chapter runs in a fresh kernel, as `jupyter nbconvert --execute --inplace` would, one at a time (two
chapters at once on a 2-core machine slow each other down and change nothing else). The wall time, the
machine and the load average before and after go to ``bench/results/notebook_times.json`` (merged with the
chapters not re-run), so the book's claim that the whole book re-runs in about an hour is a measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
RESULTS = ROOT / "bench" / "results" / "notebook_times.json"


def run(path: Path) -> float:
    import nbformat
    from nbconvert.preprocessors import ExecutePreprocessor

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    executor = ExecutePreprocessor(timeout=3600, store_widget_state=True)
    executor.preprocess(nb, {"metadata": {"path": str(NOTEBOOKS)}})
    wall = time.perf_counter() - t0
    nbformat.write(nb, path)
    return wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chapters", nargs="*", help="file-name prefixes, e.g. 03 07 (default: every chapter)")
    args = ap.parse_args(argv)
    if os.environ.get("ALEXNET_QUICK", "0") not in ("", "0"):
        ap.error("ALEXNET_QUICK is set: stored outputs must come from full runs; unset it")
    paths = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    if args.chapters:
        paths = [p for p in paths if any(p.name.startswith(c) for c in args.chapters)]
        if not paths:
            names = [p.name for p in sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))]
            ap.error(f"no chapter matches {args.chapters}; the chapters are {names}")
    sys.path.insert(0, str(ROOT))
    from alexnet_lib.device import describe

    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"chapters": {}}
    for path in paths:
        load0 = os.getloadavg()
        print(f"{path.name}: running (load average {load0[0]:.2f})", flush=True)
        wall = run(path)
        doc["chapters"][path.name] = dict(
            wall_s=round(wall, 1), load_average_start=[round(x, 2) for x in load0],
            load_average_end=[round(x, 2) for x in os.getloadavg()], machine=describe(),
            date=datetime.date.today().isoformat())
        print(f"{path.name}: {wall / 60:.1f} min", flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    total = sum(c["wall_s"] for c in doc["chapters"].values())
    print(f"all recorded chapters together: {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
