"""Rewrite the README's speed section from the benchmarks' committed results, so it cannot drift.

    python tools/readme_bench.py            # rewrite README.md between the bench-results markers
    python tools/readme_bench.py --check    # exit 1 if README.md is not what the results say (a test)

Reads ``bench/results/throughput.json`` (``python -m bench.throughput --ladder --compile --json ...``),
``bench/results/time_to_accuracy.json`` (``python -m bench.time_to_accuracy --seeds 0 1 2 --json ...``)
and ``bench/results/time_to_accuracy_stretch.json`` (the same with ``--recipe stretch``); ``make bench``
writes all three and then runs this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"


def _machine(meta: dict) -> str:
    return (f"{meta['cpu']}, bf16 computed by {meta['bf16 hardware']}, device {meta['device']}, "
            f"torch {meta['torch']}, load average (1, 5, 15 min) at the start {meta['load_average_start']}"
            + (f" and at the end {meta['load_average_end']}" if "load_average_end" in meta else "")
            + " (the kernel's damped averages of threads running, waiting to run or in uninterruptible "
            "sleep; the benchmark's own threads count too: at the end, and at the start when another "
            f"benchmark ran just before), {meta['date']}")


def throughput_section(doc: dict) -> list[str]:
    meta, results = doc["meta"], doc["results"]
    lines = [f"`{meta['command']}` on {_machine(meta)}:", "",
             "| | tutorial loop | `fit` | ratio | ceiling | `fit` vs the fastest other rung "
             "| bf16/fp32 peak |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        tut, fit = r["loops"]["tutorial"], r["loops"]["fit"]
        peak = r["peak_gflops"]
        bf16 = f"{peak['bf16'] / peak['fp32']:.2f}x" if "bf16" in peak else "no bf16"
        lines.append(
            f"| `{r['model']}` at {r['image_size']} px, batch {r['batch_size']} "
            f"| {tut['img_s']:.1f} img/s ({tut['mfu']:.0%} of the {tut['precision']} peak) "
            f"| {fit['img_s']:.1f} img/s ({fit['mfu']:.0%} of the {fit['precision']} peak) "
            f"| {r['ratio_fit_vs_tutorial']:.2f}x | {r['ceiling_ratio']:.2f}x ("
            f"{r['ratio_fit_vs_tutorial'] / r['ceiling_ratio']:.0%} of it reached) | {_versus(r)} | {bf16} |")
    compiled = [_compiled(r, meta.get("warmup")) for r in results
                if any(v.get("compile") for v in r["loops"].values())]
    if compiled:
        cache = _CACHE_TEXT.get(meta.get("inductor_cache"), "")
        lines += ["", "`torch.compile` (the `kept_memory` loop with the model compiled; compiling happens in "
                  f"the warm-up steps, which are not timed{cache}): " + "; ".join(compiled) + "."]
    return lines


_CACHE_TEXT = {  # meta['inductor_cache'] of bench/throughput.py --compile
    "empty": ", with an Inductor cache empty at the start of the run (the rungs share it, so a later compile "
             "can reuse kernels of an earlier one)",
    "given": ", with the Inductor cache in TORCHINDUCTOR_CACHE_DIR"}


def _ratio(c: dict, of: str) -> str:
    return f"{c['median']:.2f}x {of} (rounds {c['low']:.2f}-{c['high']:.2f}: {c['verdict']})"


def _compiled(r: dict, warmup: int | None) -> str:
    """Each compiled rung of one model (the rungs whose loop records a compile mode): its images/s, its
    speed over kept_memory, fit's over it, and how long its warm-up steps took."""
    each = []
    for k, v in r["loops"].items():
        if not v.get("compile"):
            continue
        text = f"`{k}` (mode {v['compile']}) {v['img_s']:.1f} img/s"
        if c := r.get("compiled_vs_kept_memory", {}).get(k):
            text += f", {_ratio(c, 'the speed of `kept_memory`')}"
        if c := r.get("fit_vs", {}).get(k):
            text += f", `fit` {_ratio(c, 'its speed')}"
        if v.get("warmup_s") is not None:
            steps = f"{warmup} warm-up steps" if warmup else "warm-up steps"
            text += f", its {steps} with the compiling {v['warmup_s']:.0f} s"
        each.append(text)
    return f"on `{r['model']}` at {r['image_size']} px " + ", and ".join(each)


def _versus(r: dict) -> str:
    """fit against the rung (other than fit) with the highest median images/s: the per-round median
    ratio, the range of the rounds and the benchmark's verdict."""
    others = {k: v for k, v in r["loops"].items() if k != "fit"}
    if "fit_vs" not in r or not others:
        return "n/a"
    best = max(others, key=lambda k: others[k]["img_s"])
    c = r["fit_vs"][best]
    return f"{c['median']:.2f}x `{best}` ({c['low']:.2f}-{c['high']:.2f}: {c['verdict']})"


def stretch_section(doc: dict) -> list[str]:
    return accuracy_section(doc, name="stretch recipe")


def accuracy_section(doc: dict, name: str = "fast recipe") -> list[str]:
    meta, runs = doc["meta"], doc["runs"]
    recipe = runs[0]["recipe"]
    fit, model = recipe["fit"], recipe["model"]
    per_seed = ", ".join(f"{100 * r['accuracy']:.2f}% in {r['train_eval_s']:.1f} s "
                         f"(seed {r['recipe']['fit']['seed']})" for r in runs)
    accs = [100 * r["accuracy"] for r in runs]
    spread = (f"; mean {statistics.mean(accs):.2f}% +- {statistics.stdev(accs):.2f} (standard deviation)"
              if len(runs) > 1 else "")
    reached = sum(r["reached"] is not None for r in runs)
    kw = ", ".join(f"{k}={v}" for k, v in model.items() if k != "name")
    return [f"`{meta['command']}` on {_machine(meta)}: the {name} (`{model['name']}({kw})` at "
            f"{fit['image_size']} px, {fit['optimizer']} lr {fit['lr']} with schedule {fit['schedule']}, "
            f"label smoothing {fit['label_smoothing']}, batch {fit['batch_size']}, {fit['epochs']} epochs"
            f"{_INIT_TEXT[recipe.get('init')]}) "
            f"reached {per_seed} of training plus evaluation{_init_time(runs)}{spread}; {reached} of "
            f"{len(runs)} runs reached "
            f"{runs[0]['target']:.0%}."
            + _limit(doc.get("time_limit"), runs) + _budget(doc.get("budget"), runs)]


_INIT_TEXT = {None: "", "whiten": ", the first convolution initialised by patch whitening"}


def _init_time(runs: list) -> str:
    """How much of the timed span building the model and its init took (results from before init_s have
    none)."""
    times = [r.get("init_s") for r in runs]
    if not all(times):
        return ""
    span = f"{min(times):.2f}-{max(times):.2f}" if len(times) > 1 else f"{times[0]:.2f}"
    return f" (counting the model's set-up and patch whitening before training, {span} s)"


def _limit(limit: dict | None, runs: list) -> str:
    if not limit:
        return ""
    return (f" Time limit {limit['seconds']:.0f} s of training plus evaluation: {sum(limit['within'])} of "
            f"{len(runs)} runs reached {runs[0]['target']:.0%} within it.")


def _budget(budget: dict | None, runs: list) -> str:
    """The sentence comparing the runs with the tutorial loop's time, measured in the same run (around
    each run where the result has ``per_run``)."""
    if not budget:
        return ""
    b = budget["measurements"][0]
    target = f"{runs[0]['target']:.0%}"
    per_run = budget.get("per_run") or [budget["seconds"]] * len(runs)
    times = ", ".join(("not reached" if r["time_to_target_s"] is None else f"{r['time_to_target_s']:.1f} s")
                      + f" (budget {s:.1f} s)" for r, s in zip(runs, per_run))
    where = ("measured before every run and after the last, each run compared with the mean of the two "
             "measurements around it" if "per_run" in budget else "measured before and after the runs")
    n = len(budget["measurements"])
    ms = [m["seconds"] for m in budget["measurements"] if "seconds" in m]
    spread = f", {min(ms):.1f}-{max(ms):.1f} s" if len(ms) > 1 else ""
    steps = (f", each extrapolated from {b['steps']} timed steps of batch {b['batch_size']}"
             if "steps" in b else "")
    return (f" Budget: the time the tutorial loop needs for {b['n_images']:,} images of `{b['model']}` at "
            f"{b['image_size']} px, {where} ({n} measurement{'s' if n != 1 else ''}{steps}: mean "
            f"{budget['seconds']:.1f} s{spread}); time to {target} per seed: "
            f"{times} ({sum(budget['within'])} of {len(runs)} within the budget).")


def render() -> str:
    parts = [START, "<!-- generated by tools/readme_bench.py from bench/results/*.json: do not edit -->"]
    sections = (("throughput.json", throughput_section), ("time_to_accuracy.json", accuracy_section),
                ("time_to_accuracy_stretch.json", stretch_section))
    for name, section in sections:
        path = RESULTS / name
        parts += ["", *section(json.loads(path.read_text()))] if path.exists() else ["", f"(no {name} yet)"]
    return "\n".join(parts + ["", END])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only check; exit 1 if README.md is stale")
    a = p.parse_args(argv)
    return rewrite_block(ROOT / "README.md", START, END, render(), check=a.check,
                         stale="its speed section differs from bench/results/*.json: "
                               "run python tools/readme_bench.py")


def rewrite_block(path: Path, start: str, end: str, block: str, check: bool = False, stale: str = "") -> int:
    """Replace the text from ``start`` to ``end`` in ``path`` by ``block`` (which holds both markers); with
    ``check``, only compare and print ``stale`` when they differ. The exit status: 0, or 1 (missing
    markers, or stale under ``check``). tools/run_notebooks.py uses it for book/intro.md too."""
    text = path.read_text()
    if start not in text or end not in text:
        print(f"{path.name} has no {start} ... {end} block", file=sys.stderr)
        return 1
    head, rest = text.split(start, 1)
    new = head + block + rest.split(end, 1)[1]
    if check:
        if new != text:
            print(f"{path.name}: {stale}", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
