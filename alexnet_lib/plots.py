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
