"""Convolution arithmetic: output sizes, receptive fields, per-layer tables and input-size checks.

Output size of a convolution or pooling along one axis (input i, kernel k, stride s, padding p,
dilation d)::

    o = floor((i + 2p - d(k - 1) - 1) / s) + 1

With ``ceil_mode=True`` (pooling) the floor becomes a ceiling, except that the last window must start
inside the input or its left padding (PyTorch's rule). Receptive field r and jump j (the distance in input
pixels between neighbouring outputs) grow layer by layer as ``r_out = r_in + d(k - 1) * j_in`` and
``j_out = j_in * s`` (Araujo et al. 2019).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .checks import boolean, integer, optional_integer
from .layers import eval_mode

__all__ = [
    "conv_output_size",
    "pool_output_size",
    "InputTooSmallError",
    "LayerShape",
    "trace_sizes",
    "diagnose_input",
    "check_input_size",
    "receptive_fields",
    "ReceptiveField",
    "LayerRow",
    "LayerTable",
    "layer_table",
    "forward_flops",
    "train_flops",
]

FORMULA = "o = floor((i + 2p - d(k-1) - 1) / s) + 1"


class InputTooSmallError(ValueError):
    """An input that shrinks to nothing (or to the wrong size) somewhere inside a model."""


def _formula(i: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """The output-size formula itself, unchecked: <= 0 when no window fits."""
    span = i + 2 * p - d * (k - 1) - 1
    o = (math.ceil(span / s) if ceil_mode else math.floor(span / s)) + 1
    if ceil_mode and o > 0 and (o - 1) * s >= i + p:  # last window would start in the right padding
        o -= 1
    return o


def _geometry_args(i, k, s, p, d, ceil_mode) -> tuple[int, int, int, int, int, bool]:
    return (integer(i, "i", hint="i is the input size in pixels along one axis, e.g. i=224"),
            integer(k, "k", hint="k is the kernel size, e.g. k=3"),
            integer(s, "s", hint="s is the stride, e.g. s=1"),
            integer(p, "p", minimum=0, hint="p is the zero padding on each side, e.g. p=0"),
            integer(d, "d", hint="d is the dilation (1 = an ordinary kernel), e.g. d=1"),
            boolean(ceil_mode, "ceil_mode"))


def conv_output_size(i: int, k: int, s: int = 1, p: int = 0, d: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a convolution/pooling along one axis (input i, kernel k, stride s, padding p,
    dilation d): ``floor((i + 2p - d(k-1) - 1) / s) + 1``.

    Refuses (``ValueError``) sizes, kernels, strides and dilations below 1 and negative padding. When the
    padded input is smaller than the dilated kernel no window fits: that raises
    :class:`InputTooSmallError` (a ``ValueError``) which shows the arithmetic and the smallest input that
    works.
    """
    i, k, s, p, d, ceil_mode = _geometry_args(i, k, s, p, d, ceil_mode)
    o = _formula(i, k, s, p, d, ceil_mode)
    if o < 1:
        rounding = "ceil" if ceil_mode else "floor"
        smallest = next(n for n in range(1, d * (k - 1) + 2) if _formula(n, k, s, p, d, ceil_mode) >= 1)
        raise InputTooSmallError(
            f"input i={i} is too small for kernel k={k} with dilation d={d} and padding p={p}: the padded "
            f"input has {i + 2 * p} pixels but the dilated kernel spans d(k-1)+1 = {d * (k - 1) + 1}, so "
            f"{FORMULA.replace('floor', rounding)} gives "
            f"{rounding}(({i} + {2 * p} - {d * (k - 1)} - 1) / {s}) + 1 = {o}: no window fits. "
            f"Use i >= {smallest}, more padding or a smaller kernel/dilation."
        )
    return o


def pool_output_size(i: int, k: int, s: int | None = None, p: int = 0, d: int = 1,
                     ceil_mode: bool = False) -> int:
    """Pooling uses the same formula; PyTorch's default stride is the kernel size (``s=None``)."""
    k = integer(k, "k", hint="k is the kernel size, e.g. k=3")
    return conv_output_size(i, k, k if s is None else s, p, d, ceil_mode)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _module(value, name: str = "model") -> nn.Module:
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {value!r:.80} ({type(value).__name__}); "
                        f"e.g. {name}=get_model('alexnet')")
    return value


def _size(value, name: str = "input_size") -> tuple[int, int]:
    """An image size given as one int (square) or an (height, width) pair, each >= 1."""
    hint = f"give the image size in pixels, e.g. {name}=224 or {name}=(224, 224)"
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be one int or a (height, width) pair, got {value!r}; {hint}")
        return integer(value[0], f"{name}[0]", hint=hint), integer(value[1], f"{name}[1]", hint=hint)
    size = integer(value, name, hint=hint)
    return size, size


def _geometry(m: nn.Module):
    """(kernel, stride, padding, dilation, ceil_mode) per axis for layers that change spatial size."""
    if isinstance(m, nn.Conv2d):
        if isinstance(m.padding, str):
            raise ValueError(f"padding={m.padding!r} is not supported by the arithmetic helpers")
        return _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation), False
    if isinstance(m, nn.MaxPool2d):
        return _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding), _pair(m.dilation), \
            m.ceil_mode
    if isinstance(m, nn.AvgPool2d):
        return _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding), (1, 1), m.ceil_mode
    return None


@dataclass
class LayerShape:
    name: str
    layer: nn.Module
    size_in: tuple[int, int]
    size_out: tuple[int, int]


def _named_leaves(module: nn.Module):
    for name, m in module.named_modules():
        if not list(m.children()):
            yield name, m


def trace_sizes(layers: nn.Module, input_size: int | tuple[int, int]) -> list[LayerShape]:
    """Spatial size before and after each layer of a sequential stack, computed from the formula alone.

    Stops after the first layer whose output would be empty (size <= 0).
    """
    _module(layers, "layers")
    h, w = _size(input_size)
    rows = []
    for name, m in _named_leaves(layers):
        g = _geometry(m)
        if g is not None:
            (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil = g
            out = (_formula(h, kh, sh, ph, dh, ceil), _formula(w, kw, sw, pw, dw, ceil))
        elif isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            out = tuple(o if o is not None else s for o, s in zip(_pair(m.output_size), (h, w)))
        else:
            out = (h, w)
        rows.append(LayerShape(name, m, (h, w), out))
        h, w = out
        if h <= 0 or w <= 0:
            break
    return rows


def diagnose_input(layers: nn.Module, input_size, *, model_name: str = "model", suggestion: str = "",
                   prefix: str = "") -> InputTooSmallError | None:
    """Return an error naming the first layer an input of ``input_size`` is too small for (or None)."""
    for row in trace_sizes(layers, input_size):
        if min(row.size_out) <= 0:
            (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil = _geometry(row.layer)
            i = row.size_in[0] if row.size_out[0] <= 0 else row.size_in[1]
            k, s, p, d = (kh, sh, ph, dh) if row.size_out[0] <= 0 else (kw, sw, pw, dw)
            o = _formula(i, k, s, p, d, ceil)
            rounding = "ceil" if ceil else "floor"
            h, w = _size(input_size)
            return InputTooSmallError(
                f"{model_name}: input {h}x{w} is too small. "
                f"Layer '{prefix}{row.name}' ({type(row.layer).__name__}, kernel {k}, stride {s}, padding {p}"
                f"{f', dilation {d}' if d != 1 else ''}) receives a {row.size_in[0]}x{row.size_in[1]} map, "
                f"and {FORMULA.replace('floor', rounding)} gives "
                f"{rounding}(({i} + {2 * p} - {d * (k - 1)} - 1) / {s}) + 1 = {o}. "
                f"{suggestion}".strip()
            )
    return None


def _features(model: nn.Module) -> tuple[nn.Module, str]:
    layers = getattr(model, "features", model)
    return layers, ("features." if layers is not model else "")


def check_input_size(model: nn.Module, input_size) -> tuple[int, int]:
    """Raise :class:`InputTooSmallError` if ``input_size`` collapses inside ``model.features``.

    Returns the spatial size of the feature maps the classifier receives.
    """
    _module(model)
    layers, prefix = _features(model)
    err = diagnose_input(layers, input_size, model_name=type(model).__name__,
                         suggestion=getattr(model, "suggestion", ""), prefix=prefix)
    if err is not None:
        raise err
    return trace_sizes(layers, input_size)[-1].size_out


@dataclass
class ReceptiveField:
    name: str
    kind: str
    size: int  # output size along one axis
    jump: int  # input pixels between neighbouring outputs
    rf: int  # receptive field of one output, in input pixels
    start: float  # centre of the first output's receptive field, in input pixel coordinates


def receptive_fields(model: nn.Module, input_size: int) -> list[ReceptiveField]:
    """Receptive field and jump after every conv/pool layer of ``model.features`` (one axis).

    Adaptive pooling (``alexnet_small``'s resize to 3x3) has no fixed kernel and is not listed. An input
    that shrinks to nothing inside the model raises :class:`InputTooSmallError` naming the layer.
    """
    check_input_size(model, integer(input_size, "input_size", hint="e.g. input_size=224"))
    layers, prefix = _features(model)
    size, jump, rf, start = input_size, 1, 1, 0.5
    rows = [ReceptiveField("input", "input", size, jump, rf, start)]
    for name, m in _named_leaves(layers):
        g = _geometry(m)
        if g is None:
            continue
        (k, _), (s, _), (p, _), (d, _), ceil = g
        k_eff = d * (k - 1) + 1
        size = _formula(size, k, s, p, d, ceil)
        start = start + ((k_eff - 1) / 2 - p) * jump
        rf = rf + (k_eff - 1) * jump
        jump = jump * s
        rows.append(ReceptiveField(prefix + name, type(m).__name__, size, jump, rf, start))
    return rows


# --- counting FLOPs -----------------------------------------------------------------------------------

def _probe(model: nn.Module, input_size, in_channels, *, batch: int = 1,
           name: str = "input_size") -> torch.Tensor:
    """A zero batch for ``model`` on its own device, after checking the arguments (``name``: what the
    caller calls ``input_size``) and that the input does not collapse inside the model."""
    _module(model)
    h, w = _size(input_size, name)
    in_channels = optional_integer(in_channels, "in_channels", hint="e.g. in_channels=3 (RGB) or 1 (grey)")
    in_channels = in_channels or getattr(model, "in_channels", 3)
    check_input_size(model, (h, w))
    param = next(model.parameters(), None)
    return torch.zeros(batch, in_channels, h, w, device=param.device if param is not None else "cpu")


def _count_flops(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Run ``x`` through ``model`` once (eval mode, restored afterwards; no gradients) under
    ``FlopCounterMode``; returns ``{module path: FLOPs}``, with ``'Global'`` holding the total.

    FlopCounterMode counts convolutions and matrix products (a multiply-add = 2 FLOPs); element-wise
    layers (ReLU, pooling, normalisation) count 0. Paths are ``TypeName.child.grandchild``."""
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return {k: int(sum(v.values())) for k, v in counter.get_flop_counts().items()}


def forward_flops(model: nn.Module, image_size: int | tuple[int, int],
                  in_channels: int | None = None) -> float:
    """Forward-pass FLOPs per image (a multiply-add counts 2), counted by ``FlopCounterMode``.

    Counts convolutions and matrix multiplications (what dominates AlexNet); element-wise layers
    (ReLU, pooling, normalisation) are left out. ``in_channels`` defaults to ``model.in_channels``.
    """
    x = _probe(model, image_size, in_channels, batch=2, name="image_size")
    return _count_flops(model, x).get("Global", 0) / len(x)


def train_flops(model: nn.Module, image_size: int | tuple[int, int],
                in_channels: int | None = None) -> float:
    """FLOPs of one training step per image: forward + backward ~ 3 x forward (backward computes the
    gradients with respect to both the inputs and the weights, each as costly as the forward pass)."""
    return 3 * forward_flops(model, image_size, in_channels)


# --- per-layer tables ---------------------------------------------------------------------------------

@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]  # per image, (C, H, W) or (F,)
    params: int
    flops: int  # forward FLOPs per image, as counted by torch's FlopCounterMode (a multiply-add = 2)
    # Bytes per image (float32) of the tensor this layer newly allocates for its output; 0 when the output
    # shares its input's storage (in-place ReLU, Flatten's view, Dropout in eval mode).
    activation_bytes: int
    shares_input: bool = False  # the output is (a view of) the input's storage

    @property
    def output_bytes(self) -> int:
        """Bytes per image (float32) of the output tensor, whether or not it shares storage."""
        return 4 * math.prod(self.output_shape)

    @property
    def is_conv(self) -> bool:
        return self.kind == "Conv2d"

    @property
    def is_linear(self) -> bool:
        return self.kind == "Linear"


def _fmt(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


class LayerTable:
    """Per-layer output shape, parameters, FLOPs and activation memory of a model at one input size.

    The memory column counts each *distinct* tensor once: the bytes per image (float32) a layer allocates
    for its output, "shared" where the output reuses its input's storage (an in-place ReLU, Flatten's
    view, Dropout in eval mode), which costs no memory. Its total is the memory of all the distinct
    activation tensors of one forward pass (all alive at once only when training keeps them for the
    backward pass). Renders as an HTML table in a notebook and as text in a terminal (``print(table)``).
    """

    columns = ("layer", "type", "output shape", "params", "FLOPs", "new activation memory")
    note = ("new activation memory: float32 bytes per image of each distinct tensor; "
            "'shared': reuses its input's storage, 0 bytes")

    def __init__(self, model_name: str, input_shape: tuple[int, ...], rows: list[LayerRow]):
        self.model_name, self.input_shape, self.rows = model_name, input_shape, rows

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_flops(self) -> int:
        return sum(r.flops for r in self.rows)

    @property
    def total_activation_bytes(self) -> int:
        """Bytes per image of the distinct activation tensors (outputs sharing storage counted once)."""
        return sum(r.activation_bytes for r in self.rows)

    @property
    def total_output_bytes(self) -> int:
        """Sum of every layer's output size, counting shared storage again for each layer (an overcount)."""
        return sum(r.output_bytes for r in self.rows)

    def share(self, kind: str) -> dict[str, float]:
        """Fraction of parameters and FLOPs in layers of one type, e.g. ``share("Conv2d")``."""
        rows = [r for r in self.rows if r.kind == kind]
        return {"params": sum(r.params for r in rows) / max(1, self.total_params),
                "flops": sum(r.flops for r in rows) / max(1, self.total_flops)}

    def _cells(self, r: LayerRow) -> list[str]:
        memory = "shared" if r.shares_input else f"{r.activation_bytes / 2**10:,.1f} KiB"
        return [r.name, r.kind, "x".join(map(str, r.output_shape)), f"{r.params:,}", _fmt(r.flops), memory]

    def _total_cells(self) -> list[str]:
        return ["total", "", "", f"{self.total_params:,}", _fmt(self.total_flops),
                f"{self.total_activation_bytes / 2**20:,.2f} MiB"]

    def __str__(self) -> str:
        body = [list(self.columns)] + [self._cells(r) for r in self.rows] + [self._total_cells()]
        widths = [max(len(row[i]) for row in body) for i in range(len(self.columns))]
        line = lambda row: "  ".join(c.ljust(w) if i < 3 else c.rjust(w)  # noqa: E731
                                     for i, (c, w) in enumerate(zip(row, widths)))
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        title = f"{self.model_name}, input {'x'.join(map(str, self.input_shape))}"
        return "\n".join([title, line(body[0]), rule, *map(line, body[1:-1]), rule, line(body[-1]),
                          self.note])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(c)}</th>" for c in self.columns)
        rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in self._cells(r)) + "</tr>"
                       for r in self.rows)
        total = "".join(f"<td><b>{esc(c)}</b></td>" for c in self._total_cells())
        caption = f"{esc(self.model_name)}, input {'x'.join(map(str, self.input_shape))}"
        return (f"<table><caption>{caption}</caption><thead><tr>{head}</tr></thead>"
                f"<tbody>{rows}<tr>{total}</tr></tbody>"
                f"<tfoot><tr><td colspan=\"{len(self.columns)}\">{esc(self.note)}</td></tr></tfoot></table>")


def _storage(t) -> int | None:
    return t.untyped_storage().data_ptr() if isinstance(t, torch.Tensor) else None


def layer_table(model: nn.Module, input_size: int | tuple[int, int],
                in_channels: int | None = None) -> LayerTable:
    """Run one image through ``model`` and tabulate every leaf layer.

    FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products;
    ReLU, pooling and normalisation are not counted). Activation memory counts distinct tensors: a layer
    whose output shares storage with its input (in-place ReLU, Flatten, eval-mode Dropout) adds 0 bytes.
    The model runs in eval mode on its own device, and its training mode is restored afterwards.
    """
    x = _probe(model, input_size, in_channels)
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    seen: dict[str, tuple[tuple[int, ...], bool]] = {}

    def record(_m, inputs, out, n):
        shared = _storage(out) in {_storage(t) for t in inputs}
        seen[n] = (tuple(out.shape[1:]), shared)

    hooks = [m.register_forward_hook(lambda m, i, out, n=n: record(m, i, out, n)) for n, m in leaves]
    try:
        counts = _count_flops(model, x)
    finally:
        for hk in hooks:
            hk.remove()
    prefix = type(model).__name__
    rows = []
    for n, m in leaves:
        if n not in seen:
            continue
        shape, shared = seen[n]
        rows.append(LayerRow(
            name=n, kind=type(m).__name__, output_shape=shape,
            params=sum(p.numel() for p in m.parameters(recurse=False)),
            flops=counts.get(f"{prefix}.{n}", 0),
            activation_bytes=0 if shared else 4 * math.prod(shape),
            shares_input=shared,
        ))
    return LayerTable(prefix, tuple(x.shape[1:]), rows)
