"""Layers that AlexNet uses and PyTorch defines differently.

Local response normalisation (paper, Section 3.3)::

    b[i] = a[i] / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a[j]^2) ** beta

with k = 2, n = 5, alpha = 1e-4, beta = 0.75, the sum running over n adjacent channels at the same
position. ``torch.nn.LocalResponseNorm`` computes the same thing with ``alpha / n`` in place of
``alpha`` (it averages the squares instead of summing them), so the paper's layer equals
``nn.LocalResponseNorm(size=n, alpha=alpha * n, beta=beta, k=k)``. ``LocalResponseNorm`` below takes
the paper's alpha and writes the formula out, so the code reads like the paper.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .checks import integer, number

__all__ = ["LocalResponseNorm", "eval_mode", "torch_lrn_equivalent"]


def _lrn_args(size, alpha, beta, k) -> tuple[int, float, float, float]:
    """The paper's LRN constants, checked: n >= 1 channels, alpha >= 0, beta >= 0, k > 0 (k = 0 could
    divide by zero)."""
    return (integer(size, "size", hint="size is the number of adjacent channels summed, e.g. size=5"),
            number(alpha, "alpha", minimum=0, hint="the paper uses alpha=1e-4"),
            number(beta, "beta", minimum=0, hint="the paper uses beta=0.75"),
            number(k, "k", minimum=0, min_open=True, hint="the paper uses k=2"))


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``with eval_mode(model):`` runs the block with the model in eval mode (dropout off, BatchNorm on
    its running statistics) and restores its train/eval mode afterwards, also when the block raises."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {model!r:.80} ({type(model).__name__})")
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class LocalResponseNorm(nn.Module):
    """The paper's LRN: divide by (k + alpha * sum of squares over ``size`` adjacent channels) ** beta.

    ``alpha`` is the paper's alpha (the coefficient of the *sum*); PyTorch's module takes alpha / size.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        size, alpha, beta, k = _lrn_args(size, alpha, beta, k)
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"LocalResponseNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")
        # Sum of squares over a window of `size` channels centred on each channel (zero beyond the edges):
        # pad the channel axis, then a 1-D sliding sum along it.
        sq = x.pow(2).unsqueeze(1)  # (N, 1, C, ...)
        half = self.size // 2
        sq = F.pad(sq.flatten(3) if x.dim() > 3 else sq, (0, 0, half, (self.size - 1) - half))
        window_sum = F.avg_pool2d(sq, (self.size, 1), stride=1) * self.size
        window_sum = window_sum.squeeze(1).view_as(x)
        return x / (self.k + self.alpha * window_sum).pow(self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


def torch_lrn_equivalent(size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> nn.Module:
    """``torch.nn.LocalResponseNorm`` configured to compute the paper's formula (alpha multiplied by n)."""
    size, alpha, beta, k = _lrn_args(size, alpha, beta, k)
    return nn.LocalResponseNorm(size=size, alpha=alpha * size, beta=beta, k=k)
