"""Training images/s of a tutorial-style loop vs alexnet_lib's fit, their ratio, and the model FLOP
utilisation (MFU) against a peak measured in the same run (the best of a large matmul and a large 3x3
convolution, fp32 and bf16; both are printed).

    python -m bench.throughput                        # alexnet_d2l@224 and alexnet_small@32, batch 128
    python -m bench.throughput --ladder               # every rung: tutorial -> preloaded -> ... -> fit
    python -m bench.throughput --ladder --compile     # and kept_memory under torch.compile, two modes
    python -m bench.throughput --models alexnet_small@28:width=0.5,norm=batch --batch-size 256

The loops are interleaved (rounds of a fixed number of steps of each loop after a warm-up), so machine
load hits them alike; every ratio is the median over rounds of the per-round ratio, printed with the
range of the rounds, and `fit` is called faster or slower than another rung only when every round agrees
and the median lies farther from 1 than half that range (otherwise: within noise). The peaks are the
median over rounds of short bursts of a large matmul and convolution. On a GPU the same command keeps the
data on the device, uses bf16 autocast and no per-step host sync in fit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

# Waiting OpenMP threads sleep instead of spinning: on a CPU shared with other processes a spinning
# thread burns the time slice the thread it waits for needs (several times slower with 2 threads on a
# busy 2-core machine); on an idle machine it costs next to nothing. Set OMP_WAIT_POLICY=ACTIVE to undo.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):  # run as `python bench/throughput.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from alexnet_lib.device import bf16_hardware, cpu_name  # noqa: E402
from alexnet_lib.speed import COMPILED_RUNGS, RUNGS, ladder  # noqa: E402
from bench import load_average as _load_end  # noqa: E402
from bench import run_metadata  # noqa: E402

DEFAULT_MODELS = ["alexnet_d2l@224", "alexnet_small@32"]


def parse_model(spec: str) -> tuple[str, int, dict]:
    """'alexnet_small@28:width=0.5,norm=batch' -> ('alexnet_small', 28, {'width': 0.5, 'norm': 'batch'})."""
    name, _, rest = spec.partition("@")
    size, _, kw = rest.partition(":")
    if not name or not (size or "224").isdigit():
        raise ValueError(f"bad model {spec!r}: write name@size[:kw=v,...], e.g. alexnet_small@32:width=0.5")
    kwargs = {}
    for item in filter(None, kw.split(",")):
        k, eq, v = item.partition("=")
        if not eq:
            raise ValueError(f"bad option {item!r} in {spec!r}: write name@size[:kw=v,...]")
        try:
            kwargs[k] = json.loads(v)
        except json.JSONDecodeError:
            kwargs[k] = v
    return name, int(size or 224), kwargs


def rungs_to_measure(every: bool, compile: bool) -> list[str]:
    """The rungs of ``--ladder`` (else tutorial and fit), with the compiled ones before fit if asked."""
    rungs = list(RUNGS if every else ("tutorial", "fit"))
    if compile:
        rungs[-1:-1] = COMPILED_RUNGS
    return rungs


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="name@size[:kw=v,...]")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="measured steps per loop per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps per loop first")
    p.add_argument("--warmup-rounds", type=int, default=1, help="then unmeasured rounds of every loop")
    p.add_argument("--ladder", action="store_true",
                   help="measure every rung of the ladder (the compiled ones too with --compile), not only "
                   "tutorial and fit")
    p.add_argument("--compile", action="store_true",
                   help="also measure the rungs " + " and ".join(COMPILED_RUNGS) + " (kept_memory under "
                   "torch.compile; they compile in their warm-up steps, whose time is printed, with an empty "
                   "Inductor cache unless TORCHINDUCTOR_CACHE_DIR is set)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader workers of the tutorial loop (default 0 on CPU, 4 on a GPU)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--verbose", action="store_true", help="print every round")
    a = p.parse_args(argv)
    try:
        specs = [(spec, *parse_model(spec)) for spec in a.models]
    except ValueError as e:
        p.error(str(e))

    rungs = rungs_to_measure(a.ladder, a.compile)
    cache = None if not a.compile else "empty" if "TORCHINDUCTOR_CACHE_DIR" not in os.environ else "given"
    with contextlib.ExitStack() as stack:
        if cache == "empty":
            # compile from scratch, as on a fresh machine: an empty cache of Inductor's for this run only
            # (the rungs' processes inherit the variable); otherwise an earlier run's cache shortens it
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="inductor-cache-"))
            stack.callback(os.environ.pop, "TORCHINDUCTOR_CACHE_DIR")
        return _run(a, specs, rungs, cache)


def _run(a, specs, rungs, cache: str | None) -> int:
    meta = run_metadata(a.device)
    t0 = time.perf_counter()
    print(f"cpu: {cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
          f"bf16 computed by: {bf16_hardware(a.device)}; load average at start: {load_average()}")
    out = []
    for spec, name, size, kw in specs:
        dev = torch.device(a.device) if a.device else None
        gpu = torch.cuda.is_available() if dev is None else dev.type == "cuda"
        workers = a.num_workers if a.num_workers is not None else (4 if gpu else 0)
        r = ladder(name, size, a.batch_size, rungs=rungs, steps=a.steps, rounds=a.rounds, warmup=a.warmup,
                   warmup_rounds=a.warmup_rounds,
                   device=a.device, num_workers=workers, verbose=a.verbose, **kw)
        print()
        print(r.table())
        cpu_ratio = r.results["fit"].cpu_rate / r.results["tutorial"].cpu_rate
        print(f"=> {spec}: fit {r.rate('fit'):.1f} img/s vs tutorial {r.rate('tutorial'):.1f} img/s: "
              f"RATIO {r.ratio('fit'):.2f}x (per CPU-second {cpu_ratio:.2f}x); MFU fit {r.mfu('fit'):.1%} of "
              f"{r.precision['fit']} peak, tutorial {r.mfu('tutorial'):.1%} of fp32 peak (per CPU-second: "
              f"{r.mfu_cpu('fit'):.1%} and {r.mfu_cpu('tutorial'):.1%}) [{r.seconds:.0f} s]")
        best = r.ceiling(r.precision["fit"])
        bound = best / r.rate("tutorial")
        print(f"   ceiling: a loop at 100% of the {r.precision['fit']} peak would train {best:.1f} img/s, "
              f"{bound:.2f}x the tutorial loop; fit reached {r.ratio('fit') / bound:.0%} of it")
        versus = {rung: r.compare("fit", rung) for rung in r.results if rung != "fit"}
        width = max(map(len, versus), default=0)
        for rung, c in versus.items():
            print(f"   fit vs {rung:<{width}} {c['median']:.2f}x (rounds {c['low']:.2f}-{c['high']:.2f}): "
                  f"{c['verdict']}")
        compiled = {k: r.compare(k, "kept_memory") for k in COMPILED_RUNGS
                    if k in r.results and "kept_memory" in r.results}
        for rung, c in compiled.items():
            print(f"   {rung} (mode {COMPILED_RUNGS[rung]}) vs kept_memory {c['median']:.2f}x (rounds "
                  f"{c['low']:.2f}-{c['high']:.2f}): {c['verdict']}; its {a.warmup} warm-up steps, compiling "
                  f"included, took {r.results[rung].warmup_s:.1f} s")
        print(flush=True)
        out.append(dict(spec=spec, model=name, image_size=size, kwargs=kw, batch_size=a.batch_size,
                        device=r.device, threads=r.threads, train_flops_per_image=r.train_flops,
                        peak_gflops=r.peak, peak_gflop_per_cpu_s=r.peak_cpu,
                        ratio_fit_vs_tutorial=r.ratio("fit"), cpu_ratio=cpu_ratio,
                        fit_vs=versus, compiled_vs_kept_memory=compiled, peak_rounds=r.peak_rounds,
                        ceiling_img_s=best, ceiling_ratio=best / r.rate("tutorial"),
                        loops={k: dict(img_s=v.rate, rates=v.rates, img_per_cpu_s=v.cpu_rate, cores=v.cpus,
                                       gflops=r.gflops(k), mfu=r.mfu(k), mfu_cpu=r.mfu_cpu(k),
                                       precision=r.precision[k], faults_per_step=v.faults_per_step,
                                       warmup_s=v.warmup_s, compile=COMPILED_RUNGS.get(k))
                               for k, v in r.results.items()}))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average at end: {load_average()}")
    if a.json:
        meta.update(seconds=round(time.perf_counter() - t0), load_average_end=_load_end(), ladder=a.ladder,
                    compile=a.compile, inductor_cache=cache,
                    steps=a.steps, rounds=a.rounds, warmup=a.warmup, warmup_rounds=a.warmup_rounds)
        with open(a.json, "w") as f:
            json.dump(dict(meta=meta, results=out), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
