"""Layers that AlexNet uses and PyTorch defines differently.

Local response normalisation (paper, Section 3.3)::

    b[i] = a[i] / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a[j]^2) ** beta

with k = 2, n = 5, alpha = 1e-4, beta = 0.75, the sum running over n adjacent channels at the same
position (n/2 an integer division; for an even n the formula read literally would sum n + 1 channels, and
this module, like PyTorch's, sums the n channels from i - n/2 to i + n/2 - 1).
``torch.nn.LocalResponseNorm`` computes the same thing with ``alpha / n`` in place of ``alpha`` (it
averages the squares instead of summing them), so the paper's layer equals
``nn.LocalResponseNorm(size=n, alpha=alpha * n, beta=beta, k=k)``. ``LocalResponseNorm`` below takes
the paper's alpha and writes the formula out, so the code reads like the paper.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .checks import integer, number

__all__ = ["LocalResponseNorm", "capture_outputs", "eval_mode", "torch_lrn_equivalent"]


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


@contextlib.contextmanager
def capture_outputs(model: nn.Module, modules_or_kinds, clone: bool = True, inputs: bool = False):
    """``with capture_outputs(model, nn.ReLU) as out: model(x)`` records what chosen layers compute.

    ``modules_or_kinds``: a module class or a tuple/list of classes (every submodule of those kinds), or
    submodules of ``model`` / their names in ``model.named_modules()`` (one, or a list). ``out`` maps each
    chosen module's name to its output (detached) of its latest run inside the block, or with
    ``inputs=True`` to its first input. ``clone=True`` copies it as the module returns: without the copy
    a later in-place operation (``nn.ReLU(inplace=True)`` after a convolution) overwrites what was
    recorded. The block runs with the model in eval mode (as :func:`eval_mode`); mode and hooks are
    restored and removed when it ends, also when it raises.
    """
    names = _select(model, modules_or_kinds)
    out: dict[str, object] = {}

    def record(name):
        def hook(_m, args, output):
            t = args[0] if inputs else output
            if isinstance(t, torch.Tensor):
                t = t.detach().clone() if clone else t.detach()
            out[name] = t
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n in names]
    try:
        with eval_mode(model):
            yield out
    finally:
        for h in handles:
            h.remove()


def _select(model: nn.Module, chosen) -> set[str]:
    """The names in ``model.named_modules()`` of the modules ``chosen`` by class, object or name."""
    named = dict(model.named_modules())
    kinds = tuple(chosen) if isinstance(chosen, (tuple, list)) else (chosen,)
    if kinds and all(isinstance(k, type) for k in kinds):  # module classes: every module of those kinds
        return {n for n, m in named.items() if isinstance(m, kinds)}
    if isinstance(chosen, (str, nn.Module)):
        chosen = [chosen]
    names = {id(m): n for n, m in named.items()}
    picked = set()
    for c in chosen:
        if isinstance(c, nn.Module) and id(c) in names:
            picked.add(names[id(c)])
        elif isinstance(c, str) and c in named:
            picked.add(c)
        else:
            what = f"a {type(c).__name__}" if isinstance(c, nn.Module) else repr(c)
            shown = ", ".join(repr(n) for n in list(named)[1:9])
            raise ValueError(f"capture_outputs: {what} is not a module of the model; pass module classes "
                             f"(e.g. nn.Conv2d), submodules of the model, or their names ({shown}, ...)")
    return picked
