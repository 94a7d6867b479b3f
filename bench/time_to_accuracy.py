"""Time to accuracy: train an alexnet_lib recipe to a Fashion-MNIST test accuracy (fast: 90%, stretch: 93%).

    python -m bench.time_to_accuracy                  # the recipe alexnet_lib.speed.FAST_RECIPE
    python -m bench.time_to_accuracy --epochs 4 --width 0.375 --lr 0.2   # a variation
    python -m bench.time_to_accuracy --seeds 0 1 2    # the recipe with three seeds (mean and spread)
    python -m bench.time_to_accuracy --recipe stretch --seeds 0 1 2   # 93% (speed.STRETCH_RECIPE)
    python -m bench.time_to_accuracy --ablation       # the recipe, then one change at a time
    python -m bench.time_to_accuracy --ablation --seeds 0 1 2 --n-train 10000   # as chapter 8 runs it

Prints the settings, the test accuracy after every epoch (fit's progress lines), the wall time of
training + evaluation, the budget (the time the tutorial loop needs for ``--budget-images`` images,
measured before every run and after the last; each run is compared with the mean of the two
measurements around it), the total including data loading, the process CPU time, and the load average
of the machine before and after (other processes on the same cores slow the wall clock down). With
``--ablation`` it prints a table of every variant (alexnet_lib.speed.ABLATIONS) and seed, and for each
variant the paired per-seed difference to the row it is compared with (speed.ABLATION_COMPARE), with a
verdict only where the 95% confidence interval of the difference excludes zero.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys

# Waiting OpenMP threads sleep instead of spinning: on a CPU shared with other processes a spinning
# thread burns the time slice the thread it waits for needs (several times slower with 2 threads on a
# busy 2-core machine); on an idle machine it costs next to nothing. Set OMP_WAIT_POLICY=ACTIVE to undo.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):  # run as `python bench/time_to_accuracy.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from alexnet_lib.device import cpu_name  # noqa: E402
from alexnet_lib.speed import (  # noqa: E402
    ABLATION_COMPARE,
    RECIPES,
    ablation_summary,
    ablation_table,
    recipe_ablation,
    recipe_model,
    time_to_accuracy,
    tutorial_seconds,
    vary_recipe,
    whitening_conv,
)
from bench import load_average, run_metadata  # noqa: E402

MODEL_OPTIONS = ("width", "hidden", "dropout", "norm")  # the recipe's model settings; the rest go to fit
NOT_RECIPE = ("recipe", "target", "time_limit", "threads", "device", "json", "n_train", "n_test", "ablation",
              "seeds", "budget_images", "budget_steps", "init")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", choices=RECIPES, default="fast",
                   help="fast: speed.FAST_RECIPE (target 90%%); stretch: speed.STRETCH_RECIPE (target 93%%)")
    p.add_argument("--target", type=float, default=None, help="test accuracy (default: the recipe's)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="also count the runs that reach the target within this many seconds of training "
                        "+ evaluation (default: 210, 3.5 minutes, for the stretch recipe)")
    p.add_argument("--model", default=None)
    for opt in ("epochs", "batch-size", "image-size", "seed"):
        p.add_argument(f"--{opt}", type=int, default=None)
    for opt in ("lr", "weight-decay", "label-smoothing", "width", "dropout"):
        p.add_argument(f"--{opt}", type=float, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--norm", default=None, help="batch, lrn or none")
    p.add_argument("--optimizer", default=None, help="sgd or adamw")
    p.add_argument("--schedule", default=None, help="onecycle, cosine, step, plateau or none")
    p.add_argument("--precision", default=None, help="auto, bf16, fp16 or fp32")
    p.add_argument("--init", choices=("none", "whiten"), default=None,
                   help="whiten: set the first convolution from the training images by patch whitening "
                        "(speed.whiten_first_conv); none: the model's own initialisation (default: as the "
                        "recipe)")
    p.add_argument("--n-train", type=int, default=None, help="train on a subset (quick checks)")
    p.add_argument("--n-test", type=int, default=None, help="evaluate on a subset (quick checks)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write the result to this file")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train the recipe (with --ablation: every variant) once per seed (overrides "
                        "--seed), e.g. --seeds 0 1 2")
    p.add_argument("--budget-images", type=int, default=None,
                   help="compare each run with the time the tutorial loop needs for this many images of "
                        "alexnet_small at 32 px, measured before every run and after the last (default: "
                        "6000 for the fast recipe, 0 = not measured for the stretch recipe)")
    p.add_argument("--budget-steps", type=int, default=8, help="timed steps of each budget measurement")
    p.add_argument("--ablation", action="store_true",
                   help="train the recipe, then with one ingredient changed at a time (speed.ABLATIONS)")
    a = p.parse_args(argv)

    if a.ablation and a.recipe != "fast":
        p.error("--ablation varies the fast recipe (speed.ABLATIONS); leave out --recipe")
    if a.threads:
        torch.set_num_threads(a.threads)
    model, fit = {}, {}
    for key, value in vars(a).items():
        if value is None or key in NOT_RECIPE:
            continue
        value = None if value == "none" else value
        if key == "model":
            model["name"] = value
        else:
            (model if key in MODEL_OPTIONS else fit)[key] = value
    base, default_target = RECIPES[a.recipe]
    recipe = vary_recipe(base, model=model, fit=fit,
                         **({} if a.init is None else dict(init=None if a.init == "none" else a.init)))
    if recipe.get("init") == "whiten":  # refused before any data is read (Fashion-MNIST: 1 channel)
        try:
            model = recipe_model(vary_recipe(recipe, init=None, model=dict(in_channels=1)))
        except (TypeError, ValueError) as e:
            p.error(str(e))
        try:
            whitening_conv(model)
        except ValueError as e:
            p.error(f"the recipe's init 'whiten' (patch whitening): {e}")
    a.target = default_target if a.target is None else a.target
    if a.time_limit is None and a.recipe == "stretch":
        a.time_limit = 210.0
    if a.budget_images is None:
        a.budget_images = 6000 if a.recipe == "fast" else 0
    print(f"cpu: {cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print("recipe:", json.dumps(recipe))
    # fit prints one line per epoch; its progress bar goes to stderr, shown only on a terminal.
    quiet_bar = contextlib.nullcontext() if sys.stderr.isatty() else contextlib.redirect_stderr(io.StringIO())
    kw = dict(target=a.target, device=a.device, n_train=a.n_train, n_test=a.n_test)
    meta = run_metadata(a.device)
    if a.ablation:
        with quiet_bar:
            results = recipe_ablation(base=recipe, seeds=a.seeds, progress=False, **kw)
        print(ablation_table(results))
        if a.json:
            runs = {name: [dict({k: v for k, v in r.items() if k != "history"},
                                **({"history": r["history"].to_dict()} if "history" in r else {}))
                           for r in rs] for name, rs in results.items()}
            with open(a.json, "w") as f:
                json.dump(dict(meta=dict(meta, load_average_end=load_average()), compare=ABLATION_COMPARE,
                               runs=runs, summary=ablation_summary(results)), f, indent=1)
        return 0
    # The budget is measured before every run and after the last, and each run is compared with the
    # mean of the two measurements around it: this machine's speed drifts by 10-30% within minutes.
    def measure_budget():
        return tutorial_seconds(a.budget_images, steps=a.budget_steps, device=a.device)

    budgets = [measure_budget()] if a.budget_images else []
    runs, per_run = [], []
    for seed in a.seeds if a.seeds is not None else [recipe["fit"].get("seed", 0)]:
        with quiet_bar:
            runs.append(time_to_accuracy(vary_recipe(recipe, fit=dict(seed=seed)), progress=True, **kw))
        report(runs[-1], a.target)
        if budgets:
            budgets.append(measure_budget())
            per_run.append(around := (budgets[-2]["seconds"] + budgets[-1]["seconds"]) / 2)
            t = runs[-1]["time_to_target_s"]
            print(f"budget around this run: {around:.1f} s (the tutorial loop's {a.budget_images:,} images "
                  f"at {budgets[-2]['img_s']:.1f} and {budgets[-1]['img_s']:.1f} img/s before and after); "
                  + ("not reached" if t is None else f"{t / around:.0%} of it used"), flush=True)
    budget = None
    if budgets:
        within = [r["time_to_target_s"] is not None and r["time_to_target_s"] <= s
                  for r, s in zip(runs, per_run)]
        seconds = statistics.mean(b["seconds"] for b in budgets)
        budget = dict(seconds=seconds, per_run=per_run, measurements=budgets, within=within)
        print(f"budget: the tutorial loop needs {seconds:.1f} s for {a.budget_images:,} images of "
              f"alexnet_small at 32 px (the mean of {len(budgets)} measurements, "
              f"{min(b['seconds'] for b in budgets):.1f}-{max(b['seconds'] for b in budgets):.1f} s); "
              f"{sum(within)} of {len(runs)} runs reached {a.target:.0%} within the budget measured "
              f"around them")
    limit = None
    if a.time_limit is not None:
        reached = [r["time_to_target_s"] is not None and r["time_to_target_s"] <= a.time_limit for r in runs]
        limit = dict(seconds=a.time_limit, within=reached)
        print(f"time limit: {sum(reached)} of {len(runs)} runs reached {a.target:.0%} within "
              f"{a.time_limit:.0f} s of training + evaluation")
    if len(runs) > 1:
        accs = [100 * r["accuracy"] for r in runs]
        secs = [r["train_eval_s"] for r in runs]
        mean, sd = statistics.mean, statistics.stdev
        reached = sum(r["reached"] is not None for r in runs)
        print(f"{len(runs)} seeds: test accuracy {mean(accs):.2f}% +- {sd(accs):.2f} (min {min(accs):.2f}%), "
              f"training + evaluation {mean(secs):.1f} s +- {sd(secs):.1f}; target reached by {reached}")
    if a.json:
        out = [dict({k: v for k, v in r.items() if k != "history"}, history=r["history"].to_dict())
               for r in runs]
        with open(a.json, "w") as f:
            json.dump(dict(meta=dict(meta, load_average_end=load_average()), runs=out, budget=budget,
                           time_limit=limit), f, indent=1)
    return 0 if all(r["reached"] is not None for r in runs) else 1


def report(r: dict, target: float) -> None:
    """The lines that one run prints."""
    h = r["history"]
    print(f"seed {r['recipe']['fit'].get('seed', 0)}: test accuracy per epoch:",
          ", ".join(f"{x:.2%}" for x in h.test_top1))
    print(f"final test accuracy {r['accuracy']:.2%} after {len(h)} epochs ({r['n_train']:,} training and "
          f"{r['n_test']:,} test images); "
          f"training + evaluation {r['train_eval_s']:.1f} s wall"
          + (f" (with the {r['recipe']['init']} init before training, {r['init_s']:.2f} s)"
             if r.get("init_s") else "") +
          f"; total with data loading and the model's set-up {r['total_s']:.1f} s; process CPU time "
          f"{r['cpu_s']:.1f} s")
    if r["reached"] is not None:
        print(f"target {target:.0%} reached after epoch {r['reached']} at {r['time_to_target_s']:.1f} s "
              f"(training + evaluation)")
    else:
        print(f"target {target:.0%} NOT reached")
    print(f"load average (1, 5, 15 min) before {r['load_before']}, after {r['load_after']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
