"""Matplotlib figures shared by several chapters. Each function returns the Figure it draws."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from torch import nn

__all__ = ["show_images", "feature_maps", "show_feature_maps", "show_filters"]


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


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor, kinds=(nn.Conv2d,)) -> dict[str, torch.Tensor]:
    """Outputs of every layer of the given kinds for one batch ``x``, keyed by layer name."""
    out: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: out.__setitem__(n, o.detach().float().cpu()))
             for n, m in model.named_modules() if isinstance(m, kinds)]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return out


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


def show_filters(conv: nn.Conv2d, ncols: int = 16, size: float = 0.8, title: str | None = None):
    """A conv layer's kernels as images, each scaled to [0, 1] (the paper's Figure 3 for conv1)."""
    w = conv.weight.detach().float().cpu()
    lo = w.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = w.flatten(1).max(1).values.view(-1, 1, 1, 1)
    w = (w - lo) / (hi - lo).clamp_min(1e-8)
    if w.shape[1] not in (1, 3):  # show the mean over input channels of deeper kernels
        w = w.mean(1, keepdim=True)
    return show_images(w, ncols=ncols, size=size, suptitle=title)


def draw_conv_windows(i: int, k: int, s: int = 1, p: int = 0, d: int = 1, ax=None, title: bool = True):
    """Where a k x k window (stride s, padding p, dilation d) lands on an i x i input, and the output grid.

    Left: the padded input (padding cells grey and dashed). The taps of the windows that produce output
    (0, 0), (0, 1) and the last output are filled blue, orange and green; a dot marks the centre of every
    window position; input cells that no window reads are hatched. Right: the o x o output, with the
    same three cells coloured. The title evaluates ``o = floor((i + 2p - d(k-1) - 1) / s) + 1``.
    """
    from matplotlib.patches import Rectangle

    from .arithmetic import conv_output_size

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    n = i + 2 * p
    o = conv_output_size(i, k, s, p, d)
    span = d * (k - 1)
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


__all__ += ["draw_conv_windows"]


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
        if x == "epoch":
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_history"]


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
    for ax in (ax1, ax2):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_overfitting"]
