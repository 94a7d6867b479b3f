"""Chapter 6's LRN experiment: where LRN acts, and none / LRN / constant k^-beta / BatchNorm at two input scales.

PYTHONPATH=/work/main python3 experiment.py            (full: 3 seeds)
ALEXNET_QUICK=1 PYTHONPATH=/work/main python3 experiment.py
"""
import json
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from alexnet_lib.device import describe  # noqa: E402
from alexnet_lib.notebook import QUICK, pick  # noqa: E402
from alexnet_lib.plots import plot_seed_runs  # noqa: E402
from common import K, acts_stats, batch_of, build, data, lrn_inputs, raw_scale, train  # noqa: E402

torch.set_num_threads(1)  # shared 2-core machine: one process per seed, one thread each
SEEDS = pick([0, 1, 2], [0])
PART = os.environ.get("LRN_SEED")      # run only this seed and save its part; 'merge' combines the parts
MERGE = len(sys.argv) > 1 and sys.argv[1] == "merge"
if PART is not None:
    SEEDS = [int(PART)]
N_TRAIN, N_TEST = pick(3000, 256), pick(2000, 256)
EPOCHS, WIDTH, LR, BATCH = pick(2, 1), 0.25, 0.01, 64
ARMS = [("normalised", "none"), ("normalised", "LRN"), ("normalised", "constant"),
        ("raw", "none"), ("raw", "LRN"), ("raw", "constant"), ("raw", "BatchNorm")]
lines = []


def out(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    lines.append(s)


t_start, c_start = time.perf_counter(), time.process_time()
out("hardware:", describe())
out(f"mode: {'QUICK' if QUICK else 'full'}; torch threads {torch.get_num_threads()}")
out(f"alexnet_small(width={WIDTH}) 28 px, {N_TRAIN} train / {N_TEST} test images, {EPOCHS} epochs, lr {LR}, "
    f"batch {BATCH}, SGD momentum 0.9 wd 5e-4, fp32, seeds {SEEDS}")
train_data, test_data = data(N_TRAIN, N_TEST)
views = {"normalised": test_data, "raw": raw_scale(test_data)}
probe = {s: batch_of(d, 256) for s, d in views.items()}
out(f"input std: normalised {probe['normalised'].std():.2f}, raw (0..255 minus mean) {probe['raw'].std():.1f}")


def stats_rows(model, scale, when):
    for name, a in lrn_inputs(model, probe[scale]).items():
        s = acts_stats(a)
        layer = {"features.2": "conv1", "features.6": "conv2"}.get(name, name)
        out(f"  {scale:<10} {when:<8} {layer}: a rms {a.pow(2).mean().sqrt():7.3f}  alpha*sum/k median "
            f"{100 * s['median']:8.4f} %  99th pct {100 * s['p99']:8.4f} %  >1%: {100 * s['gt1']:5.1f} %"
            f"  >10%: {100 * s['gt10']:5.1f} %")


out("\nWhere LRN acts (divisor k + alpha*sum(a^2) vs k, over all elements of 256 test images):")
for scale in views:
    stats_rows(build("LRN", WIDTH, SEEDS[0]), scale, "init")

runs, models, times = {}, {}, {}
out("\nTraining runs:")
if MERGE:  # the parts written by one process per seed
    parts = [json.load(open(f"part_{seed}.json")) for seed in SEEDS]
    from alexnet_lib.train import History
    for p in parts:
        for key, (h, cpu, wall) in p["runs"].items():
            scale, arm = key.split("/")
            runs.setdefault((scale, arm), []).append(History.from_dict(h))
            times.setdefault((scale, arm), []).append((cpu, wall))
    for seed, p in zip(SEEDS, parts):
        for line in p["train_lines"]:
            out(line)
    out("\nWhere LRN acts after training (seed %d):" % SEEDS[0])
    for line in parts[0]["trained_lines"]:
        out(line)
else:
    train_lines = []
    for scale, arm in ARMS:
        for seed in SEEDS:
            m, h, cpu, wall = train(arm, scale, WIDTH, seed, train_data, test_data, EPOCHS, LR, BATCH)
            runs.setdefault((scale, arm), []).append(h)
            models[scale, arm, seed] = m
            times.setdefault((scale, arm), []).append((cpu, wall))
            out(f"  {scale:<10} {arm:<9} seed {seed}: test top-1 {100 * h.test_top1[-1]:6.2f} %  top-5 "
                f"{100 * h.test_top5[-1]:6.2f} %  cpu {cpu:5.1f} s  wall {wall:5.1f} s")
            train_lines.append(lines[-1])
    n0 = len(lines)
    out("\nWhere LRN acts after training (seed %d):" % SEEDS[0])
    for scale in views:
        stats_rows(models[scale, "LRN", SEEDS[0]], scale, "trained")
    trained_lines = lines[n0 + 1:]
    if PART is not None:
        json.dump(dict(runs={f"{s}/{a}": (hs[0].to_dict(), *times[s, a][0]) for (s, a), hs in runs.items()},
                       train_lines=train_lines, trained_lines=trained_lines), open(f"part_{PART}.json", "w"))
        out(f"part {PART} done: wall {time.perf_counter() - t_start:.1f} s, cpu {time.process_time() - c_start:.1f} s")
        sys.exit(0)


def ms(v):
    t = torch.tensor(v, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(t) > 1 else float("nan"))


out(f"\n{'inputs':<10} {'arm':<9} {'per seed top-1 (%)':<24} {'mean ± std':>14} {'top-5 mean':>10} {'cpu s/run':>9}")
summary = {}
for (scale, arm), hs in runs.items():
    top1 = [100 * h.test_top1[-1] for h in hs]
    m, s = ms(top1)
    summary[f"{scale}/{arm}"] = dict(top1=top1, top5=[100 * h.test_top5[-1] for h in hs],
                                     cpu=[c for c, _ in times[scale, arm]], wall=[w for _, w in times[scale, arm]])
    out(f"{scale:<10} {arm:<9} {' '.join(f'{v:6.2f}' for v in top1):<24} {m:6.2f} ± {s:5.2f} "
        f"{ms(summary[f'{scale}/{arm}']['top5'])[0]:10.2f} {np.mean([c for c, _ in times[scale, arm]]):9.1f}")

out("\nPaired differences, same seed (top-1 points):")
for scale, a, b in [("normalised", "LRN", "constant"), ("normalised", "LRN", "none"),
                    ("normalised", "constant", "none"), ("raw", "LRN", "constant"), ("raw", "LRN", "none"),
                    ("raw", "constant", "none"), ("raw", "BatchNorm", "none")]:
    d = [100 * (x.test_top1[-1] - y.test_top1[-1]) for x, y in zip(runs[scale, a], runs[scale, b])]
    out(f"  {scale:<10} {a} - {b}: {' '.join(f'{v:+6.2f}' for v in d)}   mean {np.mean(d):+.2f}")

# Figure: where LRN acts (conv1) and the raw-scale training curves.
fig, ax = plt.subplots(figsize=(6, 3.2))
for scale in views:
    pairs = [("init", build("LRN", WIDTH, SEEDS[0]))]
    if (scale, "LRN", SEEDS[0]) in models:
        pairs.append(("trained", models[scale, "LRN", SEEDS[0]]))
    for when, model in pairs:
        a = lrn_inputs(model, probe[scale])["features.2"]
        from common import window_term
        rel = (window_term(a) / K).flatten().clamp_min(1e-9).log10().numpy()
        ax.hist(rel, bins=120, range=(-9, 1), histtype="step", density=True, label=f"{scale}, {when}")
for v in (-2, -1):
    ax.axvline(v, color="k", lw=0.6, ls=":")
ax.set(xlabel="log10(alpha * sum(a^2) / k) after conv1", ylabel="density", title="Where LRN acts (conv1)")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig("where_lrn_acts.png", dpi=90)
fig = plot_seed_runs({f"{s}/{a}": hs for (s, a), hs in runs.items()}, metrics=("step_loss", "test_top1"),
                     figsize=(11, 3.6), title="alexnet_small, Fashion-MNIST: mean over seeds (band: min-max)")
fig.savefig("runs.png", dpi=90)

out(f"\ntotal: wall {time.perf_counter() - t_start:.1f} s, cpu {time.process_time() - c_start:.1f} s")
suffix = "_quick" if QUICK else ""
open(f"results{suffix}.txt", "w").write("\n".join(lines) + "\n")
json.dump(summary, open(f"results{suffix}.json", "w"), indent=1)
