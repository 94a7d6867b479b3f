"""Matplotlib figures of the book, in chapter order. Each function draws what it is handed and returns the
Figure; what the figures show is computed elsewhere (:mod:`~alexnet_lib.analysis` for predictions and
feature maps, :mod:`~alexnet_lib.activations` for gradients, :mod:`~alexnet_lib.speed` for the ladder).

================  ===========================================================================================
chapter           figures
================  ===========================================================================================
1 arithmetic      :func:`draw_conv_windows`
2 LeNet, AlexNet  :func:`show_images`, :func:`show_feature_maps`, :func:`plot_history` (also chapters 5, 7)
3 ReLU            :func:`plot_gradient_norms`
4, 5 overfitting  :func:`plot_overfitting`
6 LRN, BatchNorm  :func:`show_lrn_effect`, :func:`plot_seed_runs`
7 full training   :func:`show_filters`, :func:`plot_confusion`, :func:`plot_per_class_accuracy`,
                  :func:`show_neighbours`, :func:`show_topk`
8 training fast   :func:`plot_ladder`, :func:`plot_epoch_time`
any               :class:`LivePlot`: loss and accuracy redrawn after every epoch of ``fit`` in a notebook
================  ===========================================================================================
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from torch import nn

from .activations import ACTIVATIONS, COLOURS, INITS, gradient_norms
from .arithmetic import InputTooSmallError, conv_output_size
from .checks import choice, integer
from .layers import LocalResponseNorm

__all__ = ["LivePlot", "draw_conv_windows", "plot_confusion", "plot_epoch_time", "plot_gradient_norms",
           "plot_history", "plot_ladder", "plot_overfitting", "plot_per_class_accuracy", "plot_seed_runs",
           "show_feature_maps", "show_filters", "show_images", "show_lrn_effect", "show_neighbours",
           "show_topk"]


# --- chapter 1: convolution arithmetic ------------------------------------------------------------

def draw_conv_windows(i: int, k: int, s: int = 1, p: int = 0, d: int = 1, ax=None, title: bool = True):
    """Where a k x k window (stride s, padding p, dilation d) lands on an i x i input, and the output grid.

    Left: the padded input (padding cells grey and dashed). The taps of the windows that produce output
    (0, 0), (0, 1) and the last output are filled blue, orange and green; a dot marks the centre of every
    window position; input cells that no window reads are hatched. Right: the o x o output, with the
    same three cells coloured. The title evaluates ``o = floor((i + 2p - d(k-1) - 1) / s) + 1``.
    """
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    n = i + 2 * p
    span = d * (k - 1)
    try:
        o = conv_output_size(i, k, s, p, d)
    except InputTooSmallError:  # no window fits: draw the input, and the title shows the arithmetic
        o = (n - span - 1) // s + 1
    for r in range(n):
        for c in range(n):
            pad = not (p <= r < p + i and p <= c < p + i)
            ax.add_patch(Rectangle((c, r), 1, 1, facecolor="#e8e8e8" if pad else "white",
                                   edgecolor="#9a9a9a" if pad else "black", linestyle="--" if pad else "-",
                                   linewidth=0.6 if pad else 0.8))
    colours = ["tab:blue", "tab:orange", "tab:green"]
    shown = [(0, 0), (0, 1), (o - 1, o - 1)] if o >= 2 else [(0, 0)] if o == 1 else []
    if o >= 1:
        read = {t * s + u * d for t in range(o) for u in range(k)}
        unread = [x for x in range(p, p + i) if x not in read]
        for r in range(p, p + i):
            for c in range(p, p + i):
                if r in unread or c in unread:
                    ax.add_patch(Rectangle((c, r), 1, 1, facecolor="none", edgecolor="tab:red", hatch="xxx",
                                           linewidth=0))
        for (a, b), colour in zip(shown, colours):
            for u in range(k):
                for v in range(k):
                    ax.add_patch(Rectangle((b * s + v * d, a * s + u * d), 1, 1, facecolor=colour, alpha=0.45,
                                           edgecolor="none"))
            ax.add_patch(Rectangle((b * s, a * s), span + 1, span + 1, facecolor="none", edgecolor=colour,
                                   linewidth=1.6))
        centres = [t * s + span / 2 + 0.5 for t in range(o)]
        xs = [c for _ in centres for c in centres]
        ys = [r for r in centres for _ in centres]
        ax.scatter(xs, ys, s=max(2.0, 60.0 / max(o, 1)), color="black", zorder=3)
        x0, y0 = n + 1.5, (n - o) / 2
        for r in range(o):
            for c in range(o):
                colour = next((col for (a, b), col in zip(shown, colours) if (a, b) == (r, c)), "white")
                ax.add_patch(Rectangle((x0 + c, y0 + r), 1, 1, facecolor=colour, edgecolor="black",
                                       alpha=0.45 if colour != "white" else 1, linewidth=0.8))
        ax.text(x0 + o / 2, y0 + o + 0.4, f"output {o}×{o}", ha="center", va="top", fontsize=8)
        right = x0 + o
    else:
        right = n
    label = f"input {i}×{i}" + (f", padding {p}" if p else "")
    ax.text(n / 2, n + 0.4, label, ha="center", va="top", fontsize=8)
    ax.set_xlim(-0.3, right + 0.3)
    ax.set_ylim(n + 1.6, -0.3)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        head = f"i={i}, k={k}, s={s}, p={p}, d={d}"
        expr = f"o = ⌊({i} + {2 * p} − {span} − 1) / {s}⌋ + 1 = {o}"
        if o <= 0:
            expr += f"\n(window of {span + 1} px does not fit in {n} px)"
        ax.set_title(f"{head}\n{expr}", fontsize=9)
    return ax.figure


# --- chapter 2: images, feature maps, training curves (also chapters 5 and 7) ----------------------

def _to_hwc(img: torch.Tensor):
    img = img.detach().float().cpu()
    if img.dim() == 3 and img.shape[0] in (1, 3):
        img = img.permute(1, 2, 0)
    if img.dtype == torch.uint8 or img.max() > 1.5:
        img = img / 255.0
    return img.squeeze(-1).clamp(0, 1).numpy()


def show_images(images, titles=None, ncols: int = 8, size: float = 1.4, cmap: str = "gray", suptitle=None):
    """Grid of images given as (N, C, H, W) / (N, H, W) tensors (uint8 or floats in [0, 1])."""
    n = len(images)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3 * (titles is not None)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, img) in enumerate(zip(axes.flat, images)):
        ax.imshow(_to_hwc(img), cmap=cmap)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_feature_maps(maps: torch.Tensor, n: int = 16, ncols: int = 8, title: str | None = None,
                      size: float = 1.2, cmap: str = "viridis"):
    """The first ``n`` channels of one image's feature maps (C, H, W)."""
    maps = maps[:n]
    nrows = math.ceil(len(maps) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, maps):
        ax.imshow(m.numpy(), cmap=cmap)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _finish_curves(fig, axes, title: str | None, integer_x=lambda ax: True):
    """The common end of the training-curve figures: integer epoch ticks (where ``integer_x(ax)``), a
    light grid and a small legend on every axis, the title, a tight layout. Returns the Figure."""
    for ax in axes:
        if integer_x(ax):
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(histories: dict, metrics=("loss", "accuracy"), x: str = "epoch", test: bool = True,
                 train: bool = True, title: str | None = None, figsize=None, axes=None):
    """Training curves of several runs, one colour per run: ``plot_history({"LeNet-5": h1, "AlexNet": h2})``.

    ``histories`` maps a label to a :class:`~alexnet_lib.train.History` (or its ``to_dict()``).
    ``metrics``: any of "loss" (cross-entropy) and "accuracy" (train accuracy and test top-1, in %),
    one panel each. Train curves are dashed, test curves solid (when the run had test data).
    ``x``: "epoch" or "time" (cumulative wall-clock seconds, which compares runs of different speed).
    Pass ``axes`` to draw into existing axes (one per metric). Returns the Figure.
    """
    if x not in ("epoch", "time"):
        raise ValueError(f"x must be 'epoch' or 'time', not {x!r}")
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for m in metrics:
        if m not in ("loss", "accuracy"):
            raise ValueError(f"metrics must be 'loss' and/or 'accuracy', not {m!r}")
    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=figsize or (5 * len(metrics), 3.5), squeeze=False)
        axes = list(axes.flat)
    else:
        axes = list(axes) if not isinstance(axes, plt.Axes) else [axes]
        fig = axes[0].figure
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, h) in enumerate(histories.items()):
        h = h if isinstance(h, dict) else h.to_dict()
        xs = h["epoch"] if x == "epoch" else h["wall_time"]
        colour = colours[i % len(colours)]
        for ax, m in zip(axes, metrics):
            tr = h["train_loss"] if m == "loss" else [100 * a for a in h["train_acc"]]
            te = h["test_loss"] if m == "loss" else [None if a is None else 100 * a for a in h["test_top1"]]
            if train:
                ax.plot(xs, tr, "o--", color=colour, alpha=0.7, ms=3,
                        label=f"{label} (train)" if test else label)
            if test and any(v is not None for v in te):
                ax.plot(xs, te, "o-", color=colour, ms=4, label=f"{label} (test)" if train else label)
    for ax, m in zip(axes, metrics):
        ax.set_xlabel("epoch" if x == "epoch" else "wall-clock time (s)")
        ax.set_ylabel("cross-entropy loss" if m == "loss" else "accuracy (%)")
    return _finish_curves(fig, axes[:len(metrics)], title, lambda ax: x == "epoch")


# --- chapter 3: ReLU ------------------------------------------------------------------------------

_STYLES = {"leaky_relu": dict(ls="--", marker="s", mfc="none")}  # so it stays visible over the ReLU curve


def plot_gradient_norms(activations: str | Sequence[str] = ACTIVATIONS, init: str = "default",
                        depth: int = 20, width: int = 256, kind: str = "linear", seed: int = 0, ax=None,
                        title: str | None = None):
    """Draw :func:`gradient_norms` against layer index (log scale) for one or more activations.

    Draws into ``ax`` if given, else into a new figure; returns the Figure.
    """
    import matplotlib.pyplot as plt

    # checked before any figure is made (the same checks and messages as alexnet_lib.activations)
    if isinstance(activations, str):
        activations = [activations]
    if not isinstance(activations, Sequence) or len(activations) == 0:
        raise ValueError(f"activations must be an activation name or a non-empty list of them "
                         f"(from {list(ACTIVATIONS)}), got {activations!r}")
    for name in activations:
        if not isinstance(name, str) or name not in ACTIVATIONS:
            raise ValueError(f"activations must be one of the activations {list(ACTIVATIONS)}, got {name!r}")
    integer(depth, "depth", hint="the number of hidden layers, e.g. depth=20")
    integer(width, "width", hint="features (linear) or channels (conv) per layer, e.g. width=256")
    choice(init, "init", INITS)
    choice(kind, "kind", ("linear", "conv"))
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.6))
    else:
        fig = ax.figure
    layers = torch.arange(1, depth + 1)
    for name in activations:
        norms = gradient_norms(name, depth, init, width, kind, seed=seed)
        style = {"ls": "-", "marker": "o", **_STYLES.get(name, {})}
        norms = torch.where(norms > 0, norms, torch.nan)  # a norm of exactly 0 (underflow) has no log
        ax.plot(layers, norms, ms=3, color=COLOURS.get(name), label=name, **style)
    ax.set_yscale("log")
    ax.set_xlabel("layer (1 = next to the input)")
    ax.set_ylabel(r"$\|\partial L / \partial W_l\|$")
    ax.set_xticks(range(1, depth + 1, max(1, math.ceil(depth / 10))))
    ax.set_title(title or f"{depth} {kind} layers, width {width}, init '{init}'", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --- chapters 4 and 5: dropout, data augmentation -------------------------------------------------

def plot_overfitting(runs: dict, title: str | None = None, figsize=(11, 3.5)):
    """Train vs test accuracy and their gap, per epoch, for several runs (chapters on regularisation).

    ``runs`` maps a label to a dict with lists ``train`` and ``test`` (accuracies as fractions, one per
    epoch; ``train`` measured in eval mode on training images) and optionally ``epoch``. Left panel:
    train (dashed) and test (solid) accuracy in %; right panel: the gap train - test in points.
    Returns the Figure.
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=figsize)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, r) in enumerate(runs.items()):
        tr, te = [100 * a for a in r["train"]], [100 * a for a in r["test"]]
        xs = r.get("epoch") or list(range(1, len(tr) + 1))
        c = colours[i % len(colours)]
        ax1.plot(xs, tr, "o--", color=c, ms=3, alpha=0.8, label=f"{label} (train)")
        ax1.plot(xs, te, "o-", color=c, ms=4, label=f"{label} (test)")
        ax2.plot(xs, [a - b for a, b in zip(tr, te)], "o-", color=c, ms=4, label=label)
    ax1.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax2.set(xlabel="epoch", ylabel="train - test (points)", title="generalisation gap")
    ax2.axhline(0, color="k", lw=0.6)
    return _finish_curves(fig, (ax1, ax2), title)


# --- chapter 6: LRN and BatchNorm -----------------------------------------------------------------

def show_lrn_effect(maps: torch.Tensor, k: float = 2.0, n: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                    channels=(0, 1, 2, 3), title: str | None = None, figsize=(12, 4.6)):
    """The paper's local response normalisation applied to one image's feature maps ``maps`` (C, H, W).

    Top row: the maps of ``channels`` before LRN; bottom row: after it, each column on one colour scale,
    so dividing everything by the same number shows as uniform dimming. Last column: the divisor
    ``(k + alpha * sum of squares over n channels) ** beta`` at the first channel shown (top), and the
    histogram of output / input over all channels and positions (bottom): one narrow spike at
    ``k ** -beta`` means LRN only rescales; a wide spread means the neighbours compete. Returns the Figure.
    """
    maps = maps.detach().float().cpu()
    lrn = LocalResponseNorm(size=int(n), alpha=float(alpha), beta=float(beta), k=float(k))
    with torch.no_grad():
        out = lrn(maps.unsqueeze(0))[0]
        sq = maps.pow(2).unsqueeze(0)
        divisor = maps / out.clamp_min(1e-30)  # = (k + alpha * window sum) ** beta where maps > 0
    channels = list(channels)
    fig, axes = plt.subplots(2, len(channels) + 1, figsize=figsize, squeeze=False)
    for col, c in enumerate(channels):
        hi = float(maps[c].max()) or 1.0
        for row, (img, what) in enumerate([(maps[c], "before"), (out[c], "after LRN")]):
            ax = axes[row, col]
            ax.imshow(img.numpy(), cmap="viridis", vmin=0, vmax=hi)
            ax.set_title(f"channel {c}: {what}\nmax {float(img.max()):.3g}", fontsize=8)
            ax.axis("off")
    c0 = channels[0]
    half = int(n) // 2
    lo, up = max(0, c0 - half), min(maps.shape[0] - 1, c0 + (int(n) - 1 - half))
    den = (k + alpha * sq[0, lo:up + 1].sum(0)).pow(beta)
    ax = axes[0, -1]
    # colour scale and histogram start at 0, so a divisor that barely varies looks constant, as it is
    im = ax.imshow(den.numpy(), cmap="magma", vmin=0, vmax=float(den.max()))
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.formatter.set_useOffset(False)
    bar.update_ticks()
    ax.set_title(f"divisor at channel {c0}\n(k + α Σ a²)^β", fontsize=8)
    ax.axis("off")
    ax = axes[1, -1]
    pos = maps > 0
    ratio = (1 / divisor[pos]).numpy() if pos.any() else []
    top = 1.05 * max(k ** -beta if k > 0 else 0.0, float(ratio.max()) if len(ratio) else 0.0, 1e-12)
    ax.hist(ratio, bins=40, range=(0, top), color="tab:blue")
    ax.set_xlim(0, top)
    ax.axvline(k ** -beta if k > 0 else 0, color="k", lw=0.8, ls="--", label="k^-β")
    ax.set_title("output / input", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.suptitle(title or f"LRN with k = {k:g}, n = {int(n)}, α = {alpha:.2g}, β = {beta:g}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_seed_runs(runs: dict, metrics=("train_loss", "test_top1"), figsize=None, title: str | None = None):
    """Mean (line) and spread (band: min to max) over seeds of per-epoch curves, one colour per setting.

    ``runs`` maps a label to a list of :class:`~alexnet_lib.train.History` (one per seed) or their dicts.
    ``metrics``: per-epoch History fields ("train_loss", "train_acc", "test_loss", "test_top1",
    "test_top5"); accuracies are drawn in %. A "step_loss" metric draws the per-step training loss,
    smoothed over ~1/5 epoch. Returns the Figure.
    """
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    fig, axes = plt.subplots(1, len(metrics), figsize=figsize or (5 * len(metrics), 3.5), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = {"train_loss": "train loss", "train_acc": "train accuracy (%)", "test_loss": "test loss",
             "test_top1": "test top-1 accuracy (%)", "test_top5": "test top-5 accuracy (%)",
             "step_loss": "training loss (per step, smoothed)"}
    for i, (label, hs) in enumerate(runs.items()):
        hs = [h if isinstance(h, dict) else h.to_dict() for h in hs]
        colour = colours[i % len(colours)]
        for ax, m in zip(axes.flat, metrics):
            if m == "step_loss":
                n = min(len(h["step_loss"]) for h in hs)
                per_epoch = n / max(len(hs[0]["epoch"]), 1)
                w = max(1, round(per_epoch / 5))
                ys = torch.tensor([h["step_loss"][:n] for h in hs], dtype=torch.float64)
                ys = torch.nn.functional.avg_pool1d(ys[:, None], w, stride=1)[:, 0]
                xs = (torch.arange(ys.shape[1]) + w) / per_epoch
            else:
                n = min(len(h[m]) for h in hs)
                scale = 100 if ("acc" in m or "top" in m) else 1
                ys = torch.tensor([[scale * v for v in h[m][:n]] for h in hs], dtype=torch.float64)
                xs = torch.tensor(hs[0]["epoch"][:n])
            mean = ys.mean(0)
            ax.plot(xs, mean, "-" if m == "step_loss" else "o-", color=colour, ms=4,
                    label=f"{label} ({len(hs)} seed{'s' if len(hs) > 1 else ''})")
            if len(hs) > 1:
                ax.fill_between(xs, ys.min(0).values, ys.max(0).values, color=colour, alpha=0.2)
    for ax, m in zip(axes.flat, metrics):
        ax.set_xlabel("epoch")
        ax.set_ylabel(names.get(m, m))
    metric_of = dict(zip(axes.flat, metrics))
    return _finish_curves(fig, metric_of, title, lambda ax: metric_of[ax] != "step_loss")


# --- chapter 7: full training ---------------------------------------------------------------------

def show_filters(conv: nn.Conv2d, ncols: int = 16, size: float = 0.8, title: str | None = None):
    """A conv layer's kernels as images, each scaled to [0, 1] (the paper's Figure 3 for conv1)."""
    w = conv.weight.detach().float().cpu()
    lo = w.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = w.flatten(1).max(1).values.view(-1, 1, 1, 1)
    w = (w - lo) / (hi - lo).clamp_min(1e-8)
    if w.shape[1] not in (1, 3):  # show the mean over input channels of deeper kernels
        w = w.mean(1, keepdim=True)
    return show_images(w, ncols=ncols, size=size, suptitle=title)


def plot_confusion(cm, classes, normalize: bool = True, ax=None, title: str | None = None,
                   cmap: str = "Blues"):
    """A confusion matrix ``cm[true, predicted]`` as a heat map with the numbers written in the cells.

    ``normalize``: show each row as % of that class's images (the diagonal is then the per-class
    accuracy); otherwise raw counts. Returns the Figure.
    """
    cm = torch.as_tensor(cm).double()
    shown = 100 * cm / cm.sum(1, keepdim=True).clamp_min(1) if normalize else cm
    k = len(classes)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.5 * k + 1.5))
    im = ax.imshow(shown.numpy(), cmap=cmap, vmin=0)
    hi = float(shown.max()) or 1.0
    for t in range(k):
        for p in range(k):
            v = float(shown[t, p])
            if v == 0:
                continue
            ax.text(p, t, f"{v:.0f}" if not normalize or v >= 1 else f"{v:.1f}", ha="center", va="center",
                    fontsize=7, color="white" if v > 0.6 * hi else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                       label="% of the true class" if normalize else "images")
    default = "confusion matrix (rows sum to 100%)" if normalize else "confusion matrix"
    ax.set_title(title or default, fontsize=10)
    ax.figure.tight_layout()
    return ax.figure


def plot_per_class_accuracy(acc, classes, ax=None, title: str | None = None):
    """Horizontal bars of per-class accuracy (fractions, e.g. ``analysis.per_class_accuracy(cm)``),
    with the mean over classes as a dashed line. Returns the Figure."""
    acc = torch.as_tensor(acc).double()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 0.3 * len(classes) + 1))
    order = list(range(len(classes)))[::-1]
    ax.barh([classes[i] for i in order], [100 * float(acc[i]) for i in order], color="tab:blue")
    for y, i in enumerate(order):
        ax.text(100 * float(acc[i]) + 0.5, y, f"{100 * float(acc[i]):.1f}", va="center", fontsize=7)
    ax.axvline(100 * float(acc.nanmean()), color="k", ls="--", lw=0.8, label="mean over classes")
    ax.set_xlim(0, 105)
    ax.set_xlabel("accuracy (%)")
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title or "per-class accuracy", fontsize=10)
    ax.figure.tight_layout()
    return ax.figure


def show_neighbours(queries, neighbours, query_titles=None, neighbour_titles=None, size: float = 1.2,
                    cmap: str = "gray", title: str | None = None):
    """The paper's Figure 4 layout: one row per query image (first column, framed) followed by its
    nearest neighbours. ``queries``: (Q, C, H, W) or (Q, H, W); ``neighbours``: (Q, k, C, H, W) or
    (Q, k, H, W) (uint8 or floats in [0, 1]). Titles: a list per query / a list of lists. Returns the Figure.
    """
    q, k = len(queries), len(neighbours[0])
    fig, axes = plt.subplots(q, k + 1, figsize=(size * (k + 1) + 0.3, (size + 0.35) * q + 0.3),
                             squeeze=False)
    for r in range(q):
        for c in range(k + 1):
            ax = axes[r, c]
            img = queries[r] if c == 0 else neighbours[r][c - 1]
            ax.imshow(_to_hwc(torch.as_tensor(img)), cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            t = (query_titles[r] if query_titles is not None else "query") if c == 0 else \
                (neighbour_titles[r][c - 1] if neighbour_titles is not None else "")
            ax.set_title(str(t), fontsize=7)
            for s in ax.spines.values():
                s.set_visible(c == 0)
                s.set_color("tab:red")
                s.set_linewidth(2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_topk(image, predictions, true_label: str | None = None, cmap: str = "gray", figsize=(7, 2.4)):
    """One image and a bar chart of its top-k predictions ``[(class name, probability), ...]``
    (e.g. ``analysis.top_k(probs, classes, 5)``); the true class, if given, is drawn in green.
    Returns the Figure."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=figsize, gridspec_kw=dict(width_ratios=[1, 2.2]))
    ax1.imshow(_to_hwc(torch.as_tensor(image)), cmap=cmap)
    ax1.axis("off")
    ax1.set_title(f"true: {true_label}" if true_label is not None else "input", fontsize=9)
    names = [n for n, _ in predictions][::-1]
    probs = [100 * p for _, p in predictions][::-1]
    colours = ["tab:green" if n == true_label else "tab:blue" for n in names]
    ax2.barh(names, probs, color=colours)
    for y, p in enumerate(probs):
        ax2.text(p + 1, y, f"{p:.1f}%", va="center", fontsize=8)
    ax2.set_xlim(0, 115)
    ax2.set_xlabel("probability (%)")
    ax2.set_title(f"top-{len(predictions)} predictions", fontsize=9)
    ax2.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


# --- chapter 8: training fast ---------------------------------------------------------------------

def plot_ladder(result, labels: dict | None = None, title: str | None = None, figsize=(11, 3.6)):
    """Bar charts of a speed ladder (``alexnet_lib.speed.ladder``'s result): training images/s of each
    rung, annotated with its gain over the previous rung and over the first, and its model FLOP
    utilisation (achieved GFLOP/s / measured peak in the rung's precision), by wall clock and, when the
    result has it, per CPU-second (which other processes on the same cores disturb less). Returns the
    Figure."""
    names = list(result.results)
    labels = labels or {}
    ticks = [labels.get(n, n) for n in names]
    rates = [result.rate(n) for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=figsize, gridspec_kw=dict(width_ratios=[3, 2]))
    colours = ["tab:gray" if result.precision[n] == "fp32" else "tab:orange" for n in names]
    ax1.bar(range(len(names)), rates, color=colours)
    for i, (n, r) in enumerate(zip(names, rates)):
        step = "" if i == 0 else f"x{result.ratio(n, names[i - 1]):.2f} step\n"
        ax1.text(i, r, f"{step}x{result.ratio(n, names[0]):.2f} total", ha="center", va="bottom", fontsize=7)
    ax1.set_xticks(range(len(names)), ticks, fontsize=7)
    ax1.set_ylabel("training images / s")
    ax1.set_ylim(0, max(rates) * 1.3)
    ax1.set_title(title or f"{result.model} at {result.image_size} px, batch {result.batch_size}", fontsize=9)
    pos = range(len(names))
    ax2.bar([i - 0.2 for i in pos], [100 * result.mfu(n) for n in names], width=0.4, color=colours,
            label="by wall clock")
    if hasattr(result, "mfu_cpu") and getattr(result, "peak_cpu", None):
        ax2.bar([i + 0.2 for i in pos], [100 * result.mfu_cpu(n) for n in names], width=0.4, color=colours,
                alpha=0.45, hatch="//", label="per CPU-second")
        ax2.legend(fontsize=7, loc="lower right")
    ax2.set_xticks(pos, [t.replace("\n", " ") for t in ticks], fontsize=7, rotation=30, ha="right")
    ax2.set_ylabel("model FLOP utilisation (%)")
    low = sorted({result.precision[n] for n in names} - {"fp32"})  # bf16, or fp16 on a GPU without bf16
    key = "grey: fp32" + "".join(f", orange: {p}" for p in low)
    ax2.set_title(f"achieved / peak FLOP/s ({key})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_epoch_time(seconds: dict, title: str | None = None, ax=None, figsize=(8, 2.6)):
    """Horizontal bars of predicted (or measured) seconds per epoch, ``{label: seconds}``, on a log
    scale, each annotated as minutes:seconds. Returns the Figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    labels, values = list(seconds), [max(float(v), 1e-3) for v in seconds.values()]
    ax.barh(labels[::-1], values[::-1], color="tab:blue")
    for y, v in enumerate(values[::-1]):
        if v < 60:
            text = f"{v:.1f} s"
        elif v < 3600:
            text = f"{int(v // 60)} min {int(v % 60):02d} s"
        else:
            text = f"{int(v // 3600)} h {int(v % 3600 // 60):02d} min"
        ax.text(v * 1.08, y, text, va="center", fontsize=8)
    ax.set_xscale("log")
    lo, hi = min(values) / 2, max(values) * 6
    ax.set_xlim(lo, hi)
    marks = [(1, "1 s"), (10, "10 s"), (60, "1 min"), (600, "10 min"), (3600, "1 h"), (36000, "10 h"),
             (86400, "1 day"), (864000, "10 days")]
    marks = [(t, lab) for t, lab in marks if lo <= t <= hi]
    ax.set_xticks([t for t, _ in marks], [lab for _, lab in marks])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("time per epoch (log scale)")
    ax.tick_params(labelsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# --- any chapter: training curves, live -----------------------------------------------------------

class LivePlot:
    """Loss and accuracy curves redrawn after every epoch in a notebook; does nothing elsewhere.

    An ``on_epoch_end(model, history)`` callback: ``fit(model, train, test, ..., on_epoch_end=LivePlot())``.
    The figure is one image, replaced in place after each epoch (no pile of figures in the output).
    """

    def __init__(self):
        self.handle = None
        try:
            from IPython import get_ipython
            self.enabled = get_ipython() is not None
        except ImportError:
            self.enabled = False

    def __call__(self, model: nn.Module, history) -> None:
        self.update(history)

    def update(self, h) -> None:
        """Redraw the figure from ``h``, a :class:`~alexnet_lib.train.History`."""
        if not self.enabled:
            return
        from IPython.display import Image, display
        from matplotlib.figure import Figure  # not pyplot: no global state, works with any backend

        fig = Figure(figsize=(10, 3.5), layout="tight")
        ax1, ax2 = fig.subplots(1, 2)
        per_epoch = len(h.step_loss) / max(len(h), 1)
        ax1.plot([(i + 1) / per_epoch for i in range(len(h.step_loss))], h.step_loss, lw=0.5, alpha=0.4,
                 label="train (step)")
        ax1.plot(h.epoch, h.train_loss, "o-", label="train")
        if h.test_loss[-1] is not None:
            ax1.plot(h.epoch, h.test_loss, "o-", label="test")
            ax2.plot(h.epoch, [100 * a for a in h.test_top1], "o-", label="test top-1")
        ax2.plot(h.epoch, [100 * a for a in h.train_acc], "o-", label="train")
        ax1.set(xlabel="epoch", ylabel="loss")
        ax2.set(xlabel="epoch", ylabel="accuracy (%)")
        ax1.legend(), ax2.legend()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72)
        image = Image(data=buf.getvalue(), format="png")
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)
