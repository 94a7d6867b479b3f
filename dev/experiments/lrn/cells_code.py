# ---- CELL 2 (replace) ----
# NBVAL_IGNORE_OUTPUT
import dataclasses
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alexnet_lib import LocalResponseNorm, count_parameters, get_model
from alexnet_lib.data import DeviceLoader, load_dataset
from alexnet_lib.layers import torch_lrn_equivalent
from alexnet_lib.notebook import QUICK, pick, report_environment
from alexnet_lib.plots import plot_seed_runs, show_lrn_effect
from alexnet_lib.train import fit

SEEDS = pick([0, 1, 2], [0])                        # every variant is trained once per seed
N_TRAIN, N_TEST = pick(3000, 256), pick(2000, 256)  # Fashion-MNIST subsets (stratified)
EPOCHS, WIDTH, LR, BATCH, IMAGE_SIZE = pick(2, 1), 0.25, 0.01, 64, 28
PRECISION = "fp32"  # LRN's increments (fractions of a percent of k) vanish in bf16: see the experiment

report_environment(model=f"alexnet_small(width={WIDTH}) at {IMAGE_SIZE} px",
                   variants="none, LRN, constant k^-beta (two input scales); BatchNorm",
                   seeds=SEEDS, train_images=N_TRAIN, test_images=N_TEST, epochs=EPOCHS, lr=LR,
                   batch_size=BATCH, optimizer="SGD, momentum 0.9, weight decay 5e-4",
                   training_precision=PRECISION,
                   load_average=" / ".join(f"{v:.1f}" for v in os.getloadavg()) + " (1 / 5 / 15 min)")


def fmt(values, digits=2):
    """A row of numbers as text, for printing."""
    values = values.detach().flatten().tolist() if torch.is_tensor(values) else list(values)
    return " ".join(f"{v:{digits + 5}.{digits}f}" for v in values)


# ---- CELL 18 (replace) ----
# NBVAL_IGNORE_OUTPUT
K, ALPHA, BETA = 2.0, 1e-4, 0.75   # the paper's constants, as in alexnet_lib's LRN layers


class Scale(nn.Module):
    """Multiply by a constant: an LRN whose divisor is frozen at its floor k^beta (the control)."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def build(variant, seed):
    """'none', 'LRN', 'constant' (each LRN layer replaced by x k^-beta) or 'BatchNorm'; same weights per seed."""
    norm = {"none": None, "LRN": "lrn", "constant": "lrn", "BatchNorm": "batch"}[variant]
    torch.manual_seed(seed)
    model = get_model("alexnet_small", norm=norm, width=WIDTH)
    if variant == "constant":
        for i, layer in enumerate(model.features):
            if isinstance(layer, LocalResponseNorm):
                model.features[i] = Scale(K ** -BETA)
    return model


def raw_scale(data):
    """The same images as centred raw pixel values, the paper's input: (x - mean) * 255 instead of / std."""
    return dataclasses.replace(data, std=tuple(1 / 255 for _ in data.std))


def lrn_inputs(model, images):
    """What the LRN layers receive (the ReLU outputs a of conv1 and conv2) for a batch of images."""
    seen = {}
    names = {}
    for name, mod in model.named_modules():
        if isinstance(mod, LocalResponseNorm):
            names[mod] = f"conv{len(names) + 1}"
    handles = [mod.register_forward_hook(lambda m, inp, out: seen.__setitem__(names[m], inp[0].detach()))
               for mod in names]
    with torch.no_grad():
        model.eval()(images)
    for h in handles:
        h.remove()
    return seen


def relative_increment(a):
    """alpha * sum of a^2 over each element's 5-channel window, divided by k: how far the divisor leaves k."""
    sq = F.pad(a.pow(2), (0, 0, 0, 0, 2, 2))                   # zero maps beyond the first and last channel
    window = sum(sq[:, j:j + a.shape[1]] for j in range(5))
    return ALPHA * window / K


def where_lrn_acts(model, images, label):
    for layer, a in lrn_inputs(model, images).items():
        r = relative_increment(a).flatten()
        print(f"{label:<22} {layer}: a rms {a.pow(2).mean().sqrt():7.3f}   median {100 * r.median():8.4f} %   "
              f"divisor > 1.01 k: {100 * (r > 0.01).double().mean():5.1f} %   > 1.1 k: "
              f"{100 * (r > 0.1).double().mean():5.1f} %")


train_data = load_dataset("fashion-mnist", train=True).subset(N_TRAIN, seed=0)
test_data = load_dataset("fashion-mnist", train=False).subset(N_TEST, seed=0)
SCALES = {"normalised": (train_data, test_data), "raw": (raw_scale(train_data), raw_scale(test_data))}
probe = {s: next(iter(DeviceLoader(te, batch_size=256, image_size=IMAGE_SIZE)))[0] for s, (_, te) in SCALES.items()}
for s, x in probe.items():
    print(f"{s} inputs: pixel standard deviation {x.std():.2f}")
print("\nHow far the divisor k + alpha * sum(a^2) rises above k, over every element of 256 test images:")
for s in SCALES:
    where_lrn_acts(build("LRN", SEEDS[0]), probe[s], f"{s} inputs, at init")


# ---- NEW CELL 18b (insert after 18) ----
# NBVAL_IGNORE_OUTPUT
VARIANTS = [("normalised", "none"), ("normalised", "LRN"), ("normalised", "constant"),
            ("raw", "none"), ("raw", "LRN"), ("raw", "constant"), ("raw", "BatchNorm")]
runs, models = {}, {}
for scale, variant in VARIANTS:
    train_set, test_set = SCALES[scale]
    runs[scale, variant] = []
    for seed in SEEDS:
        model = build(variant, seed)
        history = fit(model, train_set, test_set, epochs=EPOCHS, lr=LR, batch_size=BATCH,
                      image_size=IMAGE_SIZE, seed=seed, precision=PRECISION, progress=False)
        runs[scale, variant].append(history)
        models[scale, variant, seed] = model
        print(f"{scale:<10} {variant:<9} seed {seed}: test top-1 {history.test_top1[-1]:6.2%}, "
              f"{history.wall_time[-1]:.0f} s for {EPOCHS} epoch(s)")


# ---- CELL 19 (replace) ----
for scale in SCALES:
    fig = plot_seed_runs({v: hs for (s, v), hs in runs.items() if s == scale}, metrics=("step_loss", "test_top1"),
                         figsize=(11, 3.4), title=f"{scale} inputs: mean over seeds (band: min to max)")
    plt.show()


# ---- CELL 20 (replace) ----
# NBVAL_IGNORE_OUTPUT
def mean_std(values):
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(t) > 1 else float("nan"))


print(f"{'inputs':<10} {'variant':<9} {'top-1 per seed (%)':<22} {'top-1 (%)':>15} {'top-5 (%)':>15} "
      f"{'s / epoch':>9}")
for (scale, variant), hs in runs.items():
    top1, top5 = [100 * h.test_top1[-1] for h in hs], [100 * h.test_top5[-1] for h in hs]
    (m1, s1), (m5, s5) = mean_std(top1), mean_std(top5)
    seconds = np.mean([t for h in hs for t in h.epoch_time])
    print(f"{scale:<10} {variant:<9} {fmt(top1):<22} {m1:7.2f} ± {s1:5.2f} {m5:7.2f} ± {s5:5.2f} {seconds:9.1f}")
print(f"(mean ± standard deviation over {len(SEEDS)} seed(s), after {EPOCHS} epoch(s) on {N_TRAIN} images)\n")


def paired(scale, a, b):
    """Same seed, same initial weights, same batch order: a minus b in top-1 points, and a verdict."""
    d = [100 * (x.test_top1[-1] - y.test_top1[-1]) for x, y in zip(runs[scale, a], runs[scale, b])]
    m, s = mean_std(d)
    if len(d) < 2:
        verdict = "one seed: no conclusion"
    elif abs(m) > 2 * s and len({v > 0 for v in d}) == 1:
        verdict = f"{a} {'better' if m > 0 else 'worse'} in every seed, by more than twice the spread"
    else:
        verdict = "not distinguishable from the seed-to-seed spread"
    print(f"{scale:<10} {a + ' - ' + b:<21}: {fmt(d)}   mean {m:+6.2f}   -> {verdict}")
    return d


print("Paired differences in test top-1 (points), per seed:")
for scale, a, b in [("normalised", "LRN", "constant"), ("normalised", "LRN", "none"), ("raw", "LRN", "constant"),
                    ("raw", "LRN", "none"), ("raw", "constant", "none"), ("raw", "BatchNorm", "none")]:
    paired(scale, a, b)
print("\nPaper (ImageNet): LRN lowered the top-1 / top-5 error by 1.4 / 1.2 points; "
      "CIFAR-10, four-layer CNN: 13% -> 11% test error.")


# ---- CELL 22 (replace) ----
# NBVAL_IGNORE_OUTPUT
for s in SCALES:
    where_lrn_acts(models[s, "LRN", SEEDS[0]], probe[s], f"{s} inputs, trained")

fig, ax = plt.subplots(figsize=(7, 3.2))
for s in SCALES:
    for when, model in (("init", build("LRN", SEEDS[0])), ("trained", models[s, "LRN", SEEDS[0]])):
        r = relative_increment(lrn_inputs(model, probe[s])["conv1"]).flatten()
        ax.hist(r.clamp_min(1e-9).log10().numpy(), bins=100, range=(-9, 1), histtype="step", density=True,
                label=f"{s} inputs, {when}")
for v, text in ((-2, "1% of k"), (-1, "10% of k")):
    ax.axvline(v, color="k", lw=0.6, ls=":")
    ax.text(v, ax.get_ylim()[1] * 0.9, f" {text}", fontsize=8)
ax.set(xlabel=r"$\log_{10}(\alpha \sum a^2 / k)$ after conv1 (every element, 256 test images)", ylabel="density",
       title="Where LRN acts: how far its divisor leaves k")
ax.legend(fontsize=8, loc="upper left")
plt.show()
lrn_model = models["raw", "LRN", SEEDS[0]]   # used by the photo and the widget below
