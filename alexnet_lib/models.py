"""The AlexNet family and LeNet-5, one small ``nn.Module`` per variant.

Section numbers refer to Krizhevsky, Sutskever & Hinton (2012), "ImageNet Classification with Deep
Convolutional Neural Networks".

The 224 vs 227 question: the paper says the input is 224x224x3 and conv1 has 11x11 kernels with stride 4
and 96 output maps of 55x55. Without padding, (224 - 11) / 4 + 1 = 54.25, which is not an integer, so the
numbers do not fit; with a 227x227 input (as in Caffe) (227 - 11) / 4 + 1 = 55 exactly. This library keeps
224 inputs and pads conv1 by 2: floor((224 + 2*2 - 11) / 4) + 1 = 55. A 227 input with the same padding
gives 56 -> 27 -> 13 -> 6 after the three pools, so both sizes reach the 6x6x256 the classifier expects.

| name                | what it is                                                   | input    |
|---------------------|--------------------------------------------------------------|----------|
| alexnet             | the paper's network, two towers, LRN, paper init             | 224      |
| alexnet_torchvision | torchvision's single-tower 64-192-384-256-256 (loads its weights) | 224 |
| alexnet_half        | the 48-128-192-192-128 / FC 2048 variant of the seed tutorials | 224    |
| alexnet_d2l         | d2l.ai's 1-channel Fashion-MNIST AlexNet (FC input 6400)     | 224      |
| alexnet_small       | AlexNet's shape scaled to 28-32 px inputs                     | 28 or 32 |
| lenet5              | LeCun et al. (1998), classic or modern                        | 28       |
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from .arithmetic import InputTooSmallError, diagnose_input
from .checks import boolean, choice, integer, number
from .layers import LocalResponseNorm

__all__ = [
    "AlexNet",
    "AlexNetTorchvision",
    "AlexNetHalf",
    "AlexNetD2L",
    "AlexNetSmall",
    "LeNet5",
    "MODELS",
    "get_model",
    "list_models",
    "count_parameters",
    "make_activation",
]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
}
_NORMS = ("lrn", "batch", None)
_POOLINGS = ("overlapping", "non-overlapping")  # z = 3, s = 2 (Section 3.4) / z = s = 2
_INITS = ("paper", "kaiming", "torch")


def _activation_name(name) -> str:
    return choice(name, "activation", sorted(_ACTIVATIONS))


def _dropout(p) -> float:
    return number(p, "dropout", minimum=0, maximum=1, max_open=True,
                  hint="dropout is the probability of zeroing a unit, e.g. dropout=0.5 (0 = off)")


def _pooling(pooling) -> str:
    if not isinstance(pooling, str) or pooling not in _POOLINGS:
        raise ValueError(f"pooling must be 'overlapping' (3/2, the paper's Section 3.4) or 'non-overlapping' "
                         f"(2/2), got {pooling!r}")
    return pooling


def _check_choices(norm, activation, pooling) -> None:
    choice(norm, "norm", _NORMS)
    _activation_name(activation)
    _pooling(pooling)


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name: 'relu', 'tanh', 'sigmoid' or 'leaky_relu'."""
    return _ACTIVATIONS[_activation_name(name)]()


def _pool(pooling: str) -> nn.Module:
    # Section 3.4: overlapping pooling, z = 3 and s = 2; the traditional non-overlapping one is z = s = 2.
    if _pooling(pooling) == "overlapping":
        return nn.MaxPool2d(kernel_size=3, stride=2)
    return nn.MaxPool2d(kernel_size=2, stride=2)


def _conv_block(
    in_ch: int, out_ch: int, k: int, *, stride: int = 1, padding: int = 0, groups: int = 1,
    norm: str | None, activation: str, lrn: bool,
) -> list[nn.Module]:
    """conv -> [BN] -> activation -> [LRN]: LRN follows the ReLU (Section 3.3), BN precedes it."""
    choice(norm, "norm", _NORMS)
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=padding, groups=groups)]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(make_activation(activation))
    if norm == "lrn" and lrn:
        layers.append(LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))  # Section 3.3
    return layers


class _Checked(nn.Module):
    """The base of every model here, and the contract a model must keep to be used with
    :func:`~alexnet_lib.train.fit`, :func:`~alexnet_lib.train.evaluate`,
    :func:`~alexnet_lib.arithmetic.layer_table` (and ``check_input_size``, ``receptive_fields``):

    - ``features`` (``nn.Sequential``): the convolutional part; the arithmetic helpers trace its conv and
      pool layers to predict sizes, receptive fields and which layer an input is too small for;
    - ``classifier`` (``nn.Sequential``): the fully connected part, applied to ``features``' output;
    - ``in_channels`` (int): channels of the input images (3 for RGB, 1 for grey), used to build probes
      and to check batches;
    - ``default_input_size`` (int): the square input size the model is built for (224 here, set again
      only by models that differ); ``fit`` and ``evaluate`` resize images to it by default;
    - ``suggestion`` (str): one sentence appended to input-size errors, saying what to do instead.

    ``num_classes`` is kept too. ``forward`` runs ``features`` (``forward_features``) then ``classifier``,
    turning shape failures into errors that explain them. Subclasses check their arguments and call
    ``super().__init__(num_classes, in_channels)`` before building anything.
    """

    features: nn.Sequential
    classifier: nn.Sequential
    in_channels: int
    num_classes: int
    default_input_size: int = 224
    suggestion: str = "Resize the input to the model's default_input_size."

    def __init__(self, num_classes: int, in_channels: int):
        num_classes = integer(num_classes, "num_classes", hint="the number of classes to predict, e.g. 10")
        in_channels = integer(in_channels, "in_channels", hint="image channels: 3 for RGB, 1 for grey")
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects a batch of shape (N, {self.in_channels}, H, W), got "
                f"{tuple(x.shape)}. Build the model with in_channels={x.shape[1] if x.dim() == 4 else '?'}"
                " or convert the images."
            )
        try:
            f = self.forward_features(x)
        except RuntimeError as err:
            diagnosis = diagnose_input(self.features, tuple(x.shape[-2:]), model_name=type(self).__name__,
                                       suggestion=self.suggestion, prefix="features.")
            if diagnosis is not None:
                raise diagnosis from err
            raise
        try:
            return self.classifier(f)
        except RuntimeError as err:
            expected = next(m for m in self.classifier if isinstance(m, nn.Linear)).in_features
            raise InputTooSmallError(
                f"{type(self).__name__}: a {x.shape[-2]}x{x.shape[-1]} input gives features of shape "
                f"{tuple(f.shape[1:])} = {f[0].numel()} values, but the classifier expects {expected}. "
                f"Use {self.default_input_size}x{self.default_input_size} inputs. {self.suggestion}"
            ) from err


def _init_paper(model: nn.Module, bias_one: tuple[nn.Module, ...]) -> None:
    """Section 5: weights ~ N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC layers, else 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, mean=0.0, std=0.01)
            nn.init.constant_(m.bias, 1.0 if any(m is b for b in bias_one) else 0.0)


def _init_kaiming(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class AlexNet(_Checked):
    """The paper's network (Section 3.5, Figure 2).

    conv1 96@11x11/4 -> ReLU -> LRN -> maxpool 3/2; conv2 256@5x5 -> ReLU -> LRN -> maxpool 3/2;
    conv3 384@3x3; conv4 384@3x3; conv5 256@3x3 -> maxpool 3/2; FC 4096 -> FC 4096 -> FC classes.

    ``towers=True`` reproduces the two-GPU split (Section 3.2): conv2, conv4 and conv5 only see the
    kernel maps on their own GPU, which is a grouped convolution with groups=2; conv3 and the FC layers
    see both. Dropout (Section 4.2) is applied to the *outputs* of FC6 and FC7 ("the first two
    fully-connected layers"); torchvision applies it to their inputs instead.

    ``norm`` chooses LRN (the paper), BatchNorm after every conv, or nothing. ``init='paper'`` is the
    paper's N(0, 0.01) with some biases at 1; ``'kaiming'`` trains from scratch far more readily.
    """

    suggestion = "For 28-32 px images (MNIST, Fashion-MNIST, CIFAR-10) use get_model('alexnet_small')."

    def __init__(
        self, num_classes: int = 1000, in_channels: int = 3, *, towers: bool = True,
        norm: str | None = "lrn", activation: str = "relu", dropout: float = 0.5,
        pooling: str = "overlapping", init: str = "paper",
    ):
        towers, dropout = boolean(towers, "towers"), _dropout(dropout)
        _check_choices(norm, activation, pooling)
        choice(init, "init", _INITS)
        super().__init__(num_classes, in_channels)
        g = 2 if towers else 1
        block = dict(norm=norm, activation=activation)
        self.features = nn.Sequential(
            # conv1: padding 2 makes 224 -> 55 (see the module docstring on 224 vs 227).
            *_conv_block(in_channels, 96, 11, stride=4, padding=2, lrn=True, **block),
            _pool(pooling),                                                         # 55 -> 27
            *_conv_block(96, 256, 5, padding=2, groups=g, lrn=True, **block),       # conv2
            _pool(pooling),                                                         # 27 -> 13
            *_conv_block(256, 384, 3, padding=1, lrn=False, **block),               # conv3: all maps
            *_conv_block(384, 384, 3, padding=1, groups=g, lrn=False, **block),     # conv4
            *_conv_block(384, 256, 3, padding=1, groups=g, lrn=False, **block),     # conv5
            _pool(pooling),                                                         # 13 -> 6
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 6 * 6, 4096), make_activation(activation), nn.Dropout(dropout),  # FC6
            nn.Linear(4096, 4096), make_activation(activation), nn.Dropout(dropout),         # FC7
            nn.Linear(4096, num_classes),                                               # FC8
        )
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        fcs = [m for m in self.classifier if isinstance(m, nn.Linear)]
        if init == "paper":
            _init_paper(self, bias_one=(convs[1], convs[3], convs[4], fcs[0], fcs[1]))
        elif init == "kaiming":
            _init_kaiming(self)


class AlexNetTorchvision(_Checked):
    """torchvision's AlexNet (after Krizhevsky 2014, "One weird trick"): 64-192-384-256-256, one tower.

    The module layout and state_dict keys equal ``torchvision.models.alexnet``, so its weights load.
    """

    suggestion = "For 28-32 px images use get_model('alexnet_small')."

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, *, dropout: float = 0.5):
        dropout = _dropout(dropout)
        super().__init__(num_classes, in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)


class AlexNetHalf(_Checked):
    """The single-GPU "half AlexNet" of many tutorials: 48-128-192-192-128 conv maps, FC 2048, no LRN."""

    suggestion = "For 28-32 px images use get_model('alexnet_small')."

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, *, dropout: float = 0.5):
        dropout = _dropout(dropout)
        super().__init__(num_classes, in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 48, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),                                   # 55 -> 27
            nn.Conv2d(48, 128, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),                                   # 27 -> 13
            nn.Conv2d(128, 192, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(192, 128, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),                                   # 13 -> 6
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(p=dropout), nn.Linear(128 * 6 * 6, 2048), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(2048, 2048), nn.ReLU(inplace=True),
            nn.Linear(2048, num_classes),
        )


class AlexNetD2L(_Checked):
    """d2l.ai's AlexNet for Fashion-MNIST resized to 224 (Zhang et al., Dive into Deep Learning, 8.1).

    conv1 uses padding 1, so 224 -> 54 -> 26 -> 12 -> 5 and the first FC layer sees 256 * 5 * 5 = 6400.
    """

    suggestion = "Resize 28 px images to 224 (d2l does), or use get_model('alexnet_small') at 28 px."

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, dropout: float = 0.5):
        dropout = _dropout(dropout)
        super().__init__(num_classes, in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(6400, 4096), nn.ReLU(inplace=True), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )


class AlexNetSmall(_Checked):
    """AlexNet's shape for 28-32 px images: five convs (64-192-384-256-256), three 3/2 max-pools, 3 FCs.

    conv1 is 64@5x5 stride 1 (an 11x11/4 conv would shrink 32 px to 7 at once). At 32 px the maps go
    32 -> 15 -> 7 -> 3, so the first FC layer sees 256 * 3 * 3 = 2304; at 28 px they go 28 -> 13 -> 6 -> 2
    and an adaptive average pool brings them to 3x3, so one set of weights serves both sizes.
    ``norm='batch'`` puts BatchNorm after every conv (and the hidden FC layers); ``'lrn'`` puts the
    paper's LRN after conv1 and conv2. ``init='kaiming'`` (the default) is Kaiming fan-out for the convs
    and N(0, 0.01) for the FC layers; ``'paper'`` is Section 5's N(0, 0.01) everywhere with biases 1 in
    conv2, conv4, conv5 and the hidden FC layers; ``'torch'`` keeps PyTorch's default initialisation.
    """

    default_input_size = 32
    suggestion = "Use 28-32 px inputs."

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, *, norm: str | None = None,
        activation: str = "relu", dropout: float = 0.5, hidden: int = 1024, pooling: str = "overlapping",
        width: float = 1.0, init: str = "kaiming",
    ):
        _check_choices(norm, activation, pooling)
        choice(init, "init", _INITS)
        dropout = _dropout(dropout)
        hidden = integer(hidden, "hidden", hint="units in each hidden FC layer, e.g. hidden=1024")
        width = number(width, "width", minimum=0, min_open=True,
                       hint="width multiplies the conv channels (64-192-384-256-256), e.g. width=0.5")
        super().__init__(num_classes, in_channels)
        c1, c2, c3, c4, c5 = (max(8, round(c * width)) for c in (64, 192, 384, 256, 256))
        block = dict(norm=norm, activation=activation)
        self.features = nn.Sequential(
            *_conv_block(in_channels, c1, 5, padding=2, lrn=True, **block),
            _pool(pooling),
            *_conv_block(c1, c2, 5, padding=2, lrn=True, **block),
            _pool(pooling),
            *_conv_block(c2, c3, 3, padding=1, lrn=False, **block),
            *_conv_block(c3, c4, 3, padding=1, lrn=False, **block),
            *_conv_block(c4, c5, 3, padding=1, lrn=False, **block),
            _pool(pooling),
            nn.AdaptiveAvgPool2d((3, 3)),
        )
        fc_norm = (lambda: nn.BatchNorm1d(hidden)) if norm == "batch" else nn.Identity
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c5 * 3 * 3, hidden), fc_norm(), make_activation(activation), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), fc_norm(), make_activation(activation), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        fcs = [m for m in self.classifier if isinstance(m, nn.Linear)]
        if init == "paper":  # the same layers as the paper's network: conv2, conv4, conv5, FC6, FC7
            _init_paper(self, bias_one=(convs[1], convs[3], convs[4], fcs[0], fcs[1]))
        elif init == "kaiming":
            _init_kaiming(self)


class LeNet5(_Checked):
    """LeNet-5 (LeCun et al., 1998) as usually taught: 6@5x5 -> pool -> 16@5x5 -> pool -> 120 -> 84 -> 10.

    ``modern=False``: sigmoid and 2x2 average pooling (the classic net); ``modern=True``: ReLU, which
    AlexNet made popular, and max pooling (AlexNet's windows overlap, 3x3 with stride 2; here 2x2 with
    stride 2). conv1 is padded by 2 so 28 px inputs give the 32 px geometry of the original
    (28 -> 28 -> 14 -> 10 -> 5).
    """

    default_input_size = 28
    suggestion = "Use 28x28 inputs (or 32x32 with padding=0 as in the original paper)."

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, modern: bool = False):
        modern = boolean(modern, "modern")
        super().__init__(num_classes, in_channels)
        act = (lambda: nn.ReLU(inplace=True)) if modern else nn.Sigmoid
        pool = (lambda: nn.MaxPool2d(2, 2)) if modern else (lambda: nn.AvgPool2d(2, 2))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), act(), pool(),
            nn.Conv2d(6, 16, kernel_size=5), act(), pool(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), act(),
            nn.Linear(120, 84), act(),
            nn.Linear(84, num_classes),
        )


MODELS: dict[str, type[nn.Module]] = {
    "alexnet": AlexNet,
    "alexnet_torchvision": AlexNetTorchvision,
    "alexnet_half": AlexNetHalf,
    "alexnet_d2l": AlexNetD2L,
    "alexnet_small": AlexNetSmall,
    "lenet5": LeNet5,
}


def list_models() -> list[str]:
    """Names accepted by :func:`get_model`."""
    return list(MODELS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Build a model by name, e.g. ``get_model("alexnet", num_classes=10, towers=False)``.

    An unknown name is a ``ValueError`` listing the models; a keyword the model does not take is a
    ``TypeError`` listing the ones it does.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a model name (str), got {name!r} ({type(name).__name__}); "
                        f"choose one of {', '.join(MODELS)}")
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    accepted = [p for p in inspect.signature(MODELS[key]).parameters if p not in ("args", "kwargs")]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise TypeError(f"get_model({key!r}) got unknown keyword argument(s) {names}; "
                        f"{key} accepts: {', '.join(accepted)}")
    return MODELS[key](**kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {model!r:.80} ({type(model).__name__})")
    boolean(trainable_only, "trainable_only")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
