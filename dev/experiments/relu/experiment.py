"""Figure 1 re-measured under the paper's conditions (chapter 3, section 3.4), and one modern ingredient.

Four-layer conv net (alexnet_lib.activations.four_layer_net), N(0, 0.01^2) weights and zero biases
(init_weights(net, "paper")), SGD momentum 0.9, batch 128, no normalisation, no regularisation, 10,000
Fashion-MNIST training images. Learning rate swept per activation on seed 0, then seeds 1, 2 at the chosen
rate. Control: the same with He initialisation (one change), its own sweep.

    PYTHONPATH=/work/main python3 experiment.py main      # paper init  -> main.pt
    PYTHONPATH=/work/main python3 experiment.py control   # He init     -> control.pt
    PYTHONPATH=/work/main python3 experiment.py report    # -> results.txt, figure.png
"""
import math
import sys
import time
from pathlib import Path

import torch
from alexnet_lib.activations import (
    four_layer_net,
    init_weights,
    running_mean,
    steps_to_error,
    train_error_curve,
)
from alexnet_lib.data import DeviceLoader, load_dataset
from alexnet_lib.device import describe

N_TRAIN, BATCH, WINDOW, SEEDS = 10_000, 128, 25, (0, 1, 2)
SETUPS = {  # name: (init, learning rates swept on seed 0, steps per run)
    "main": ("paper", (0.01, 0.03, 0.1, 0.3), 400),
    "control": ("he", (0.003, 0.01, 0.03), 200),
}
THRESHOLDS = (0.30, 0.25, 0.20, 0.15)
THRESHOLD = 0.20


def run(train, act, init, lr, seed, steps):
    torch.manual_seed(seed)
    net = init_weights(four_layer_net(act), init)
    batches = DeviceLoader(train, BATCH, shuffle=True, seed=seed, drop_last=True)
    t0 = time.process_time()
    errors = train_error_curve(net, batches, steps, lr)
    return errors, time.process_time() - t0


def sweep_key(errors):
    s = steps_to_error(errors, THRESHOLD, WINDOW)
    return (s if s is not None else math.inf, running_mean(errors, WINDOW)[-1].item())


def measure(name):
    init, lrs, steps = SETUPS[name]
    train = load_dataset("fashion-mnist").subset(N_TRAIN, seed=0)
    curves, cpu = {}, {}
    for act in ("relu", "tanh"):
        for lr in lrs:
            curves[act, lr, 0], cpu[act, lr, 0] = run(train, act, init, lr, 0, steps)
            print(name, act, lr, sweep_key(curves[act, lr, 0]), flush=True)
        best = min(lrs, key=lambda lr: sweep_key(curves[act, lr, 0]))
        for seed in SEEDS[1:]:
            curves[act, best, seed], cpu[act, best, seed] = run(train, act, init, best, seed, steps)
    torch.save({"curves": curves, "cpu": cpu}, f"{name}.pt")


def report():
    out = [f"hardware: {describe('cpu')}", ""]
    figs = {}
    for name, (init, lrs, steps) in SETUPS.items():
        d = torch.load(f"{name}.pt")
        curves, cpu = d["curves"], d["cpu"]
        total_steps = sum(len(v) for v in curves.values())
        out.append(f"== {name}: init '{init}', {steps} steps per run, lr sweep {lrs} on seed 0, "
                   f"selection by steps to {THRESHOLD:.0%} (then lowest final error)")
        out.append(f"   CPU time (1 thread, shared machine): {sum(cpu.values()):.0f} s for {total_steps} steps, "
                   f"{1000 * sum(cpu.values()) / total_steps:.0f} ms/step")
        best = {}
        for act in ("relu", "tanh"):
            for lr in lrs:
                e = curves[act, lr, 0]
                st = {th: steps_to_error(e, th, WINDOW) for th in THRESHOLDS}
                out.append(f"   sweep {act} lr {lr:<5}: steps to " + ", ".join(
                    f"{th:.0%} {s if s else '-'}" for th, s in st.items())
                    + f"; final running error {running_mean(e, WINDOW)[-1].item():.3f}")
            best[act] = min(lrs, key=lambda lr: sweep_key(curves[act, lr, 0]))
        out.append(f"   chosen: {best}")
        for th in THRESHOLDS:
            rows = []
            for seed in SEEDS:
                r = steps_to_error(curves["relu", best["relu"], seed], th, WINDOW)
                t = steps_to_error(curves["tanh", best["tanh"], seed], th, WINDOW)
                rows.append((r, t, t / r if r and t else None))
            ratios = torch.tensor([x for *_, x in rows if x is not None])
            stat = (f"mean {ratios.mean():.2f}x +- {ratios.std():.2f} (std over {len(ratios)} seeds)"
                    if len(ratios) > 1 else "n/a")
            per_seed = ", ".join(f"s{s}: {r or '-'}/{t or '-'} ({f'{x:.2f}x' if x else '-'})"
                                 for s, (r, t, x) in zip(SEEDS, rows))
            out.append(f"   {th:.0%}: steps ReLU/tanh per seed {per_seed}; speed-up tanh/ReLU {stat}")
        figs[name] = (curves, best)
        out.append("")
    text = "\n".join(out)
    Path("results.txt").write_text(text + "\n")
    print(text)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
    for ax, (name, (curves, best)) in zip(axes, figs.items()):
        for act, style, col in (("relu", "-", "tab:blue"), ("tanh", "--", "tab:orange")):
            for i, seed in enumerate(SEEDS):
                sm = running_mean(curves[act, best[act], seed], WINDOW)
                ax.plot(range(1, len(sm) + 1), sm, style, color=col, lw=1.2,
                        label=f"{act} (lr {best[act]})" if i == 0 else None)
        ax.axhline(THRESHOLD, color="k", ls=":", lw=1)
        ax.set(title=f"init '{SETUPS[name][0]}'", xlabel="step (batch of 128)", ylim=(0, 1))
        ax.legend()
    axes[0].set_ylabel("training error (running mean)")
    fig.tight_layout()
    fig.savefig("figure.png", dpi=80)


if __name__ == "__main__":
    torch.set_num_threads(1)
    report() if sys.argv[1] == "report" else measure(sys.argv[1])
