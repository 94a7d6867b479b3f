"""Activation functions and what they do to gradients (paper, Section 3.1 "ReLU Nonlinearity").

The paper replaces the saturating non-linearities of its time, ``tanh(x)`` and the logistic sigmoid
``1 / (1 + exp(-x))``, by the rectified linear unit ``max(0, x)`` (Nair & Hinton, 2010), and reports
that a four-layer convolutional network with ReLUs reaches 25% training error on CIFAR-10 six times
faster than the same network with tanh units (Figure 1). This module holds what chapter 3 measures:

- :func:`activation` and :func:`derivative`: the four functions and their closed-form derivatives
  (checked against autograd by :func:`autograd_derivative`);
- :func:`deep_stack` and :func:`gradient_norms`: the norm of the weight gradient of every layer of a deep
  stack at initialisation, for an activation and an initialisation (drawn by
  :func:`alexnet_lib.plots.plot_gradient_norms`);
- :func:`four_layer_net`, :func:`train_error_curve` and :func:`steps_to_error`: a small four-layer
  convolutional network (three conv layers, one fully connected layer), its per-step training error,
  and the number of steps it takes to reach an error threshold, to re-measure Figure 1;
- :func:`dead_units` and :func:`dead_fraction`: ReLU units that never fire on a batch of inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import choice, integer, number
from .device import autocast
from .layers import capture_outputs
from .models import make_activation

__all__ = [
    "ACTIVATIONS",
    "COLOURS",
    "INITS",
    "LEAKY_SLOPE",
    "activation",
    "derivative",
    "autograd_derivative",
    "init_weights",
    "deep_stack",
    "gradient_norms",
    "four_layer_net",
    "train_error_curve",
    "diverged",
    "running_mean",
    "steps_to_error",
    "dead_units",
    "dead_fraction",
]

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu")
INITS = ("default", "xavier", "he", "paper")
LEAKY_SLOPE = 0.01  # the slope models.py uses for "leaky_relu" (PyTorch's default)

_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, LEAKY_SLOPE),
}


def _check(name: str, arg: str = "name") -> str:
    if not isinstance(name, str) or name not in _FUNCTIONS:
        raise ValueError(f"{arg} must be one of the activations {list(ACTIVATIONS)}, got {name!r}")
    return name


def _tensor(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; "
                        f"e.g. {name}=torch.linspace(-5, 5, 101)")
    return x


def _module(model, name: str = "model") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {model!r:.80} ({type(model).__name__})")
    return model


def _stack_args(depth, init, width, kind) -> None:
    """The arguments :func:`deep_stack`, :func:`gradient_norms` and :func:`plot_gradient_norms` share."""
    integer(depth, "depth", hint="the number of hidden layers, e.g. depth=20")
    integer(width, "width", hint="features (linear) or channels (conv) per layer, e.g. width=256")
    choice(init, "init", INITS)
    choice(kind, "kind", ("linear", "conv"))


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function ``name`` ('sigmoid', 'tanh', 'relu', 'leaky_relu') as a function."""
    return _FUNCTIONS[_check(name)]


def derivative(name: str, x: torch.Tensor) -> torch.Tensor:
    """Closed-form derivative of activation ``name`` at ``x``.

    sigmoid: s(x) (1 - s(x)); tanh: 1 - tanh(x)^2; relu: 1 for x > 0 else 0 (the value 0 at x = 0 is
    the convention autograd uses); leaky_relu: 1 for x > 0 else ``LEAKY_SLOPE``.
    """
    _check(name)
    _tensor(x)
    if name == "sigmoid":
        s = torch.sigmoid(x)
        return s * (1 - s)
    if name == "tanh":
        return 1 - torch.tanh(x) ** 2
    if name == "relu":
        return (x > 0).to(x.dtype)
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, LEAKY_SLOPE))


def autograd_derivative(name: str, x: torch.Tensor) -> torch.Tensor:
    """Derivative of activation ``name`` at every element of ``x``, computed by autograd.

    Each output depends only on its own input, so the gradient of the *sum* of the outputs is the
    element-wise derivative.
    """
    _check(name)
    x = _tensor(x).detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(activation(name)(x).sum(), x)
    return grad


def init_weights(module: nn.Module, init: str = "default") -> nn.Module:
    """(Re)initialise every Conv2d and Linear layer of ``module`` in place; returns ``module``.

    - ``'default'``: PyTorch's default, weights U(-b, b) with b = 1/sqrt(fan_in), i.e. variance
      1 / (3 fan_in) (left as constructed; biases keep their default too);
    - ``'xavier'``: Glorot & Bengio (2010), N(0, 2 / (fan_in + fan_out)), biases 0;
    - ``'he'``: He et al. (2015), N(0, 2 / fan_in), made for ReLUs, biases 0;
    - ``'paper'``: AlexNet's N(0, 0.01^2) weights (Section 5), biases 0 (the paper sets the biases of
      conv2, conv4, conv5 and the hidden FC layers to 1; ``get_model('alexnet_small', init='paper')`` does).
    """
    _module(module, "module")
    choice(init, "init", INITS)
    if init == "default":
        return module
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if init == "xavier":
                nn.init.xavier_normal_(m.weight)
            elif init == "he":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def deep_stack(activation: str = "relu", depth: int = 20, init: str = "default", width: int = 256,
               kind: str = "linear", num_classes: int = 10, seed: int = 0) -> nn.Sequential:
    """``depth`` hidden layers, each followed by ``activation``, then a linear read-out.

    ``kind='linear'``: Linear(width, width) layers on inputs of ``width`` features. ``kind='conv'``:
    3x3 convolutions with ``width`` channels and padding 1 (the first takes 3 channels), then a global
    average pool before the read-out. Weights are drawn with ``seed`` and ``init`` (:func:`init_weights`).
    """
    _check(activation, "activation")
    _stack_args(depth, init, width, kind)
    integer(num_classes, "num_classes", hint="e.g. num_classes=10")
    integer(seed, "seed", minimum=0, hint="e.g. seed=0")
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(depth):
        if kind == "linear":
            layers.append(nn.Linear(width, width))
        else:
            layers.append(nn.Conv2d(3 if i == 0 else width, width, 3, padding=1))
        layers.append(make_activation(activation))
    if kind == "conv":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    layers.append(nn.Linear(width, num_classes))
    return init_weights(nn.Sequential(*layers), init)


def gradient_norms(activation: str = "relu", depth: int = 20, init: str = "default", width: int = 256,
                   kind: str = "linear", batch: int = 64, image_size: int = 8, seed: int = 0) -> torch.Tensor:
    """Norm of the weight gradient of each hidden layer of :func:`deep_stack` at initialisation.

    One batch of standard-normal inputs (``batch`` x ``width`` features, or ``batch`` x 3 x
    ``image_size`` x ``image_size`` images for ``kind='conv'``) with random labels goes forward and
    the cross-entropy loss goes backward. Returns a tensor of ``depth`` Frobenius norms
    ``||dL/dW_l||``, layer 1 (next to the input) first. Deterministic for a given ``seed``.
    """
    _check(activation, "activation")
    _stack_args(depth, init, width, kind)
    integer(batch, "batch", hint="images per batch, e.g. batch=64")
    integer(image_size, "image_size", hint="e.g. image_size=8")
    model = deep_stack(activation, depth, init, width, kind, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    shape = (batch, width) if kind == "linear" else (batch, 3, image_size, image_size)
    x = torch.randn(shape, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    loss = F.cross_entropy(model(x), y)
    hidden = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))][:depth]
    grads = torch.autograd.grad(loss, [m.weight for m in hidden])
    return torch.stack([gr.norm() for gr in grads])


# One colour per activation, shared by the chapter's figures (alexnet_lib.plots.plot_gradient_norms).
COLOURS = {"sigmoid": "tab:purple", "tanh": "tab:orange", "relu": "tab:blue", "leaky_relu": "tab:green"}


def four_layer_net(activation: str = "relu", channels: Sequence[int] = (16, 32, 64), num_classes: int = 10,
                   in_channels: int = 1) -> nn.Sequential:
    """A four-layer convolutional net (three conv layers, one fully connected) for 28 px images.

    conv 5x5 -> act -> maxpool 3/2 (28 -> 13), conv 5x5 -> act -> maxpool 3/2 (13 -> 6), conv 3x3 ->
    act -> maxpool 3/2 (6 -> 2), then a linear layer to ``num_classes``. Pooling is the paper's
    overlapping 3/2. No dropout, no normalisation; PyTorch's default initialisation, so the ReLU and
    the tanh versions differ only in their activation.
    """
    _check(activation, "activation")
    if not isinstance(channels, Sequence) or len(channels) != 3:
        raise ValueError(f"channels must be three channel counts (conv1, conv2, conv3), got {channels!r}; "
                         "e.g. channels=(16, 32, 64)")
    c1, c2, c3 = (integer(c, f"channels[{i}]", hint="e.g. channels=(16, 32, 64)")
                  for i, c in enumerate(channels))
    integer(num_classes, "num_classes", hint="e.g. num_classes=10")
    integer(in_channels, "in_channels", hint="image channels: 1 for grey, 3 for RGB")
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 5, padding=2), make_activation(activation), nn.MaxPool2d(3, 2),
        nn.Conv2d(c1, c2, 5, padding=2), make_activation(activation), nn.MaxPool2d(3, 2),
        nn.Conv2d(c2, c3, 3, padding=1), make_activation(activation), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Linear(c3 * 2 * 2, num_classes),
    )


def train_error_curve(model: nn.Module, batches, steps: int, lr: float, momentum: float = 0.9,
                      amp_dtype: torch.dtype | None = None) -> list[float]:
    """Train ``model`` for ``steps`` SGD steps and return the training error of every mini-batch.

    The error of a step is the fraction of its mini-batch misclassified by the forward pass that the
    step then learns from (before the update), the running training error that cuda-convnet printed
    and the paper's Figure 1 plots. Plain SGD with ``momentum``, no weight decay, no schedule (the
    paper's Figure 1 runs used no regularisation). ``batches``: an iterable of ``(images, labels)``
    (e.g. a shuffling :class:`~alexnet_lib.data.DeviceLoader`), iterated again as often as needed;
    its ``set_epoch(e)`` is called before pass ``e`` if it has one. ``amp_dtype``: e.g.
    ``torch.bfloat16`` to run the forward pass under autocast (``alexnet_lib.device.autocast_dtype``).
    A run whose learning rate is too high can diverge: the steps go on, and the errors recorded after the
    weights became NaN are those of NaN logits; check the model with :func:`diverged` afterwards.
    """
    _module(model)
    integer(steps, "steps", hint="SGD steps to run, e.g. steps=300")
    number(lr, "lr", minimum=0, min_open=True, hint="e.g. lr=0.01")
    number(momentum, "momentum", minimum=0, maximum=1, max_open=True, hint="e.g. momentum=0.9")
    if amp_dtype is not None and not isinstance(amp_dtype, torch.dtype):
        raise TypeError(f"amp_dtype must be a torch.dtype or None, got {amp_dtype!r}; e.g. torch.bfloat16")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True); nothing to train")
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    device_type = next(iter(params)).device.type
    model.train()
    errors: list[torch.Tensor] = []
    epoch = 0
    while len(errors) < steps:
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        n_before = len(errors)
        for x, y in batches:
            with autocast(device_type, amp_dtype):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            errors.append((logits.detach().argmax(1) != y).float().mean())
            if len(errors) == steps:
                break
        if len(errors) == n_before:
            raise ValueError("batches yielded no batch")
        epoch += 1
    return torch.stack(errors).tolist()


def running_mean(values: Sequence[float], window: int = 25) -> torch.Tensor:
    """Mean of the last ``window`` values at every step (fewer at the start): smooths per-step errors."""
    window = integer(window, "window", hint="steps averaged, e.g. window=25")
    v = torch.as_tensor(values, dtype=torch.float64)
    c = torch.cat([torch.zeros(1, dtype=torch.float64), v.cumsum(0)])
    idx = torch.arange(1, len(v) + 1)
    lo = (idx - window).clamp_min(0)
    return (c[idx] - c[lo]) / (idx - lo)


def steps_to_error(errors: Sequence[float], threshold: float, window: int = 25) -> int | None:
    """First step (1-based) at which the running mean of ``window`` per-step training errors is at or
    below ``threshold``, counting only steps with a full window; None if it never gets there."""
    number(threshold, "threshold", hint="a training error in [0, 1], e.g. threshold=0.25")
    window = integer(window, "window", hint="steps averaged, e.g. window=25")
    smooth = running_mean(errors, window)[window - 1:]
    hit = (smooth <= threshold).nonzero()
    return int(hit[0]) + window if len(hit) else None


@torch.no_grad()
def diverged(model: nn.Module) -> bool:
    """True if any parameter or buffer of ``model`` is NaN or infinite: its training diverged."""
    _module(model)
    return not all(bool(torch.isfinite(t).all()) for t in (*model.parameters(), *model.buffers())
                   if t.is_floating_point())


@torch.no_grad()
def dead_units(model: nn.Module, x: torch.Tensor, kinds: tuple[type[nn.Module], ...] = (nn.ReLU,)
               ) -> dict[str, tuple[int, int]]:
    """ReLU units of ``model`` that output 0 for every input in the batch ``x``.

    A unit is a feature of a fully connected layer, or a whole channel (kernel map) of a
    convolutional layer: a kernel is shared by all positions, so it receives no gradient only when its
    output is 0 at every position of every image. Returns ``{layer name: (dead, total)}`` for every
    module of the given ``kinds``, in the order they run. The model runs in eval mode.
    """
    _module(model)
    _tensor(x)
    if isinstance(kinds, type):
        kinds = (kinds,)
    if not isinstance(kinds, tuple) or not all(isinstance(k, type) and issubclass(k, nn.Module)
                                               for k in kinds):
        raise TypeError(f"kinds must be a tuple of nn.Module classes, got {kinds!r}; e.g. kinds=(nn.ReLU,)")
    with capture_outputs(model, kinds) as outputs:
        model(x)
    bad = [name for name, out in outputs.items() if not bool(torch.isfinite(out).all())]
    if bad:
        raise ValueError(f"the outputs of module(s) {', '.join(bad)} (names as in model.named_modules()) "
                         "contain NaN or inf on x, so which units are dead is undefined (NaN is not 0); if "
                         "the model was trained, its training diverged: check diverged(model) first")
    counts = {}
    for name, out in outputs.items():
        fired = out > 0
        fired = fired.flatten(2).any(2) if fired.dim() > 2 else fired  # (N, C)
        fired = fired.any(0)
        counts[name] = (int((~fired).sum()), fired.numel())
    return counts


def dead_fraction(model: nn.Module, x: torch.Tensor) -> float:
    """Fraction of all ReLU units of ``model`` (see :func:`dead_units`) that never fire on the batch ``x``."""
    counts = dead_units(model, x)
    total = sum(t for _, t in counts.values())
    return sum(d for d, _ in counts.values()) / total if total else 0.0
