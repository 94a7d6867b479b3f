"""Chapter 4's central experiment: does dropout reduce overfitting, and does it slow convergence?

One change between the arms: dropout p=0.5 (after FC6 and FC7, the paper's placement) vs p=0.
alexnet_small without BatchNorm (norm=None), FC layers 2048 wide, 500 training images (one fixed stratified
subset), AdamW at a constant lr, no weight decay, 3 seeds (seed = initialisation, data order, masks).
Usage: python experiment.py            (all runs, serially, then the table)
       python experiment.py SEED P     (one run, saved to runs/SEED_P.json)
       python experiment.py --table    (the table from runs/*.json)
"""
import json
import statistics as st
import sys
import time
from pathlib import Path

import torch

from alexnet_lib import get_model
from alexnet_lib.data import load_dataset
from alexnet_lib.device import describe
from alexnet_lib.notebook import pick
from alexnet_lib.train import evaluate, fit

N_TRAIN, N_CURVE = pick(500, 200), pick(500, 200)
EPOCHS, SEEDS = pick(40, 2), pick((0, 1, 2), (0,))
MODEL = dict(norm=None, width=0.25, hidden=2048)
FIT = dict(image_size=28, batch_size=64, optimizer="adamw", lr=5e-4, weight_decay=0.0, schedule=None)
LOSS_THRESHOLD = 0.2      # "converged": training loss (eval mode) first below this (0.1: reached by 2 of 6 runs in 40 epochs)

train_full = load_dataset("fashion-mnist", train=True)
test_full = load_dataset("fashion-mnist", train=False)
train = train_full.subset(N_TRAIN, seed=0)
curve = test_full.subset(N_CURVE, seed=0)
FINAL_TEST = pick(test_full, curve)


def run(seed, p):
    torch.manual_seed(seed)
    model = get_model("alexnet_small", dropout=p, **MODEL)
    tr = []
    c0, w0 = time.process_time(), time.perf_counter()
    h = fit(model, train, curve, epochs=EPOCHS, progress=False, seed=seed,
            on_epoch_end=lambda m, h: tr.append(evaluate(m, train, image_size=28)), **FIT)
    final = evaluate(model, FINAL_TEST, image_size=28)
    conv = next((i + 1 for i, r in enumerate(tr) if r["loss"] < LOSS_THRESHOLD), None)
    return dict(seed=seed, p=p, train_acc=[r["top1"] for r in tr], train_loss=[r["loss"] for r in tr],
                test_acc=h.test_top1, test_loss=h.test_loss, final=final, converged=conv,
                cpu_s=time.process_time() - c0, wall_s=time.perf_counter() - w0)


def table(runs):
    for r in runs:   # recomputed, so the threshold can be changed without retraining
        r["converged"] = next((i + 1 for i, x in enumerate(r["train_loss"]) if x < LOSS_THRESHOLD), None)
    lines = [f"{'p':>4} {'seed':>4} {'train acc':>9} {'test acc':>8} {'gap':>6} {'test loss':>9} "
             f"{'epochs to loss<' + str(LOSS_THRESHOLD):>18} {'cpu s':>6}"]
    for p in (0.5, 0.0):
        rs = [r for r in runs if r["p"] == p]
        for r in rs:
            lines.append(f"{p:>4} {r['seed']:>4} {r['train_acc'][-1]:>9.2%} {r['final']['top1']:>8.2%} "
                         f"{100 * (r['train_acc'][-1] - r['final']['top1']):>5.1f}p {r['final']['loss']:>9.3f} "
                         f"{str(r['converged'] or '>' + str(EPOCHS)):>18} {r['cpu_s']:>6.0f}")
        def ms(xs):
            return f"{st.mean(xs):.2f} +- {st.stdev(xs) if len(xs) > 1 else 0:.2f}"
        lines.append(f"{p:>4} mean train {ms([100 * r['train_acc'][-1] for r in rs])}  "
                     f"test {ms([100 * r['final']['top1'] for r in rs])}  "
                     f"gap {ms([100 * (r['train_acc'][-1] - r['final']['top1']) for r in rs])}  "
                     f"test loss {ms([r['final']['loss'] for r in rs])}")
    for s in sorted({r["seed"] for r in runs}):
        a = {r["p"]: r["converged"] for r in runs if r["seed"] == s}
        if a.get(0.5) and a.get(0.0):
            lines.append(f"seed {s}: convergence ratio (p=0.5 / p=0) = {a[0.5]}/{a[0.0]} = {a[0.5] / a[0.0]:.2f}")
        else:
            lines.append(f"seed {s}: epochs to converge p=0.5: {a.get(0.5)}, p=0: {a.get(0.0)} (None = not reached)")
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(int(__import__("os").environ.get("THREADS", "1")))
    Path("runs").mkdir(exist_ok=True)
    if len(sys.argv) == 3:
        r = run(int(sys.argv[1]), float(sys.argv[2]))
        Path(f"runs/{sys.argv[1]}_{sys.argv[2]}.json").write_text(json.dumps(r))
        print(json.dumps({k: v for k, v in r.items() if k not in ("train_acc", "train_loss", "test_acc", "test_loss")}))
        sys.exit()
    if sys.argv[1:] != ["--table"]:
        for s in SEEDS:
            for p in (0.5, 0.0):
                Path(f"runs/{s}_{p}.json").write_text(json.dumps(run(s, p)))
    runs = [json.loads(f.read_text()) for f in sorted(Path("runs").glob("*.json"))]
    print(describe())
    print(f"alexnet_small({MODEL}), {N_TRAIN} train images, {EPOCHS} epochs, {FIT}")
    print(table(runs))
