"""Every bad input to the library's public functions is refused at the boundary, clearly.

One table: (callable, args, kwargs, expected exception type, text the message must contain -- at least the
argument's name, usually its value and the rule too). Arguments written ``Make(fn)`` are built when the
case runs, so collecting the table builds no model. ``test_table_covers_every_module`` keeps the count
honest; ``test_refusals_come_before_any_work`` checks that a refused model is never built.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from alexnet_lib import activations as A
from alexnet_lib import arithmetic as R
from alexnet_lib import augment as G
from alexnet_lib import data as D
from alexnet_lib import layers as L
from alexnet_lib import models as M
from alexnet_lib.arithmetic import InputTooSmallError


class Make:
    """An argument built when the case runs (models, tensors, datasets)."""

    def __init__(self, fn, label: str):
        self.fn, self.label = fn, label

    def __repr__(self) -> str:
        return self.label


@functools.cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return M.get_model(name)


def _data(classes: int = 4) -> D.ImageData:
    images = torch.zeros(8, 1, 8, 8, dtype=torch.uint8)
    return D.ImageData(images, torch.arange(8) % classes, [f"c{i}" for i in range(classes)])


ALEXNET = Make(lambda: _model("alexnet"), "alexnet")
LENET = Make(lambda: _model("lenet5"), "lenet5")
LENET_FEATURES = Make(lambda: _model("lenet5").features, "lenet5.features")
DATA = Make(_data, "ImageData(8 images, 4 classes)")
U8 = Make(lambda: torch.zeros(4, 1, 8, 8, dtype=torch.uint8), "uint8 (4, 1, 8, 8)")
LABELS = Make(lambda: torch.tensor([0, 1, 2, 0]), "labels [0, 1, 2, 0]")
RGB32 = Make(lambda: torch.zeros(1, 3, 32, 32), "float (1, 3, 32, 32)")
NOWHERE = "/nonexistent/alexnet-folder"  # arguments are checked before the folder is looked at


def _enter_eval_mode(model):
    with L.eval_mode(model):
        pass


def _subset(n, **kw):
    return _data().subset(n, **kw)


def _set_epoch(epoch):
    D.DeviceLoader(_data()).set_epoch(epoch)


def _alpha(n):
    return G.FancyPCA().sample_alpha(n)


def _fancy_pca_on(x):
    return G.FancyPCA()(x)


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 2))


TINY = Make(_tiny_net, "Sequential(Flatten, Linear(4, 2))")
VE, TE, SMALL = ValueError, TypeError, InputTooSmallError

CASES = [
    # --- models ---------------------------------------------------------------------------------------
    (M.get_model, ("alexnet",), dict(num_classes=0), VE, "num_classes must be >= 1, got 0"),
    (M.get_model, ("alexnet",), dict(in_channels=0), VE, "in_channels must be >= 1, got 0"),
    (M.get_model, ("alexnet_small",), dict(width=-1), VE, "width must be > 0, got -1"),
    (M.get_model, ("alexnet_small",), dict(width="wide"), TE, "width must be a number, got 'wide'"),
    (M.get_model, ("alexnet",), dict(dropout=1.0), VE, "dropout must be < 1, got 1"),
    (M.get_model, ("alexnet",), dict(dropout=-0.1), VE, "dropout must be >= 0, got -0.1"),
    (M.get_model, ("alexnet_torchvision",), dict(dropout="half"), TE, "dropout must be a number"),
    (M.get_model, ("alexnet_half",), dict(dropout=float("nan")), VE, "dropout must be a finite number"),
    (M.get_model, ("alexnet",), dict(norm="layer"), VE, "norm must be one of 'lrn', 'batch', None; got"),
    (M.get_model, ("alexnet_small",), dict(activation="gelu"), VE, "activation must be one of"),
    (M.get_model, ("alexnet",), dict(pooling="avg"), VE, "pooling must be 'overlapping'"),
    (M.get_model, ("alexnet",), dict(init="xavier"), VE, "init must be one of 'paper', 'kaiming', 'torch'"),
    (M.get_model, ("alexnet",), dict(towers="yes"), TE, "towers must be True or False, got 'yes'"),
    (M.get_model, ("lenet5",), dict(modern="maybe"), TE, "modern must be True or False, got 'maybe'"),
    (M.get_model, ("lenet5",), dict(modern=1), TE, "modern must be True or False, got 1"),
    (M.get_model, ("vgg16",), {}, VE, "unknown model 'vgg16'; choose one of alexnet, alexnet_torchvision"),
    (M.get_model, (3,), {}, TE, "name must be a model name (str), got 3"),
    (M.get_model, ("alexnet",), dict(tower=True), TE, "unknown keyword argument(s) 'tower'; alexnet accepts"),
    (M.get_model, ("lenet5",), dict(dropout=0.5), TE, "'dropout'; lenet5 accepts: num_classes, in_channels"),
    (M.get_model, ("alexnet_small",), dict(hidden=0), VE, "hidden must be >= 1, got 0"),
    (M.get_model, ("alexnet_d2l",), dict(num_classes=2.5), TE, "num_classes must be an integer, got 2.5"),
    (M.AlexNetHalf, (), dict(in_channels=-3), VE, "in_channels must be >= 1, got -3"),
    (M.AlexNet, (), dict(num_classes=True), TE, "num_classes must be an integer, got True"),
    (M.make_activation, ("swish",), {}, VE, "activation must be one of"),
    (M.count_parameters, ("alexnet",), {}, TE, "model must be a torch.nn.Module, got 'alexnet'"),
    (M.count_parameters, (LENET,), dict(trainable_only="yes"), TE, "trainable_only must be True or False"),
    # --- arithmetic -----------------------------------------------------------------------------------
    (R.conv_output_size, (-10, 3), {}, VE, "i must be >= 1, got -10"),
    (R.conv_output_size, (10, 0), {}, VE, "k must be >= 1, got 0"),
    (R.conv_output_size, (10, 3), dict(s=0), VE, "s must be >= 1, got 0"),
    (R.conv_output_size, (10, 3), dict(p=-1), VE, "p must be >= 0, got -1"),
    (R.conv_output_size, (10, 3), dict(d=0), VE, "d must be >= 1, got 0"),
    (R.conv_output_size, (2, 5), {}, SMALL, "input i=2 is too small for kernel k=5"),
    (R.conv_output_size, (4, 3), dict(d=2), SMALL, "dilated kernel spans d(k-1)+1 = 5"),
    (R.conv_output_size, (10.5, 3), {}, TE, "i must be an integer, got 10.5"),
    (R.conv_output_size, (10, 3), dict(ceil_mode=1), TE, "ceil_mode must be True or False"),
    (R.pool_output_size, (0, 3), {}, VE, "i must be >= 1, got 0"),
    (R.pool_output_size, (13, 3), dict(s=0), VE, "s must be >= 1, got 0"),
    (R.pool_output_size, (2, 3, 2), {}, SMALL, "no window fits"),
    (R.receptive_fields, (ALEXNET, 32), {}, SMALL, "Layer 'features.14'"),
    (R.receptive_fields, (ALEXNET, 0), {}, VE, "input_size must be >= 1, got 0"),
    (R.receptive_fields, (ALEXNET, 224.0), {}, TE, "input_size must be an integer, got 224.0"),
    (R.layer_table, (ALEXNET, 0), {}, VE, "input_size must be >= 1, got 0"),
    (R.layer_table, (ALEXNET, 32), {}, SMALL, "Layer 'features.14'"),
    (R.layer_table, (LENET, (28, -1)), {}, VE, "input_size[1] must be >= 1, got -1"),
    (R.layer_table, (LENET, (28, 28, 28)), {}, VE, "input_size must be one int or a (height, width) pair"),
    (R.layer_table, (LENET, 28), dict(in_channels=0), VE, "in_channels must be >= 1, got 0"),
    (R.layer_table, ("lenet5", 28), {}, TE, "model must be a torch.nn.Module, got 'lenet5'"),
    (R.check_input_size, (ALEXNET, 16), {}, SMALL, "Layer 'features.7'"),
    (R.check_input_size, (LENET, "28"), {}, TE, "input_size must be an integer, got '28'"),
    (R.trace_sizes, (LENET_FEATURES, -28), {}, VE, "input_size must be >= 1, got -28"),
    (R.trace_sizes, ([nn.ReLU()], 28), {}, TE, "layers must be a torch.nn.Module"),
    (R.forward_flops, (LENET, 0), {}, VE, "image_size must be >= 1, got 0"),
    (R.train_flops, (LENET, 28), dict(in_channels=1.5), TE, "in_channels must be an integer, got 1.5"),
    (R.forward_flops, (ALEXNET, 32), {}, SMALL, "Layer 'features.14'"),
    # --- layers ---------------------------------------------------------------------------------------
    (L.LocalResponseNorm, (), dict(size=0), VE, "size must be >= 1, got 0"),
    (L.LocalResponseNorm, (), dict(size=2.5), TE, "size must be an integer, got 2.5"),
    (L.LocalResponseNorm, (), dict(alpha=-1e-4), VE, "alpha must be >= 0, got -0.0001"),
    (L.LocalResponseNorm, (), dict(beta=-0.75), VE, "beta must be >= 0, got -0.75"),
    (L.LocalResponseNorm, (), dict(k=0), VE, "k must be > 0, got 0"),
    (L.LocalResponseNorm, (), dict(k="2"), TE, "k must be a number, got '2'"),
    (L.torch_lrn_equivalent, (), dict(k=-2), VE, "k must be > 0, got -2"),
    (_enter_eval_mode, ("model",), {}, TE, "model must be a torch.nn.Module, got 'model'"),
    # --- augment --------------------------------------------------------------------------------------
    (G.FancyPCA, (), dict(std=-0.1), VE, "std must be >= 0, got -0.1"),
    (G.FancyPCA, (), dict(eigvals=(1.0, 2.0)), VE, "eigvals must hold 3 values"),
    (G.FancyPCA, (), dict(eigvals=(-1.0, 0.0, 0.0)), VE, "eigvals must be finite and >= 0"),
    (G.FancyPCA, (), dict(generator=0), TE, "generator must be a torch.Generator or None, got 0"),
    (_alpha, (0,), {}, VE, "n must be >= 1, got 0"),
    (_fancy_pca_on, (Make(lambda: torch.zeros(2, 1, 4, 4), "grey batch"),), {}, VE, "expects RGB images"),
    (G.RandomCropFlip, (0,), {}, VE, "size must be >= 1, got 0"),
    (G.RandomCropFlip, ("28",), {}, TE, "size must be an integer, got '28'"),
    (G.RandomCropFlip, (28,), dict(padding=-1), VE, "padding must be >= 0, got -1"),
    (G.RandomCropFlip, (28,), dict(flip_p=2), VE, "flip_p must be <= 1, got 2"),
    (G.RandomCropFlip, (28,), dict(flip_p="often"), TE, "flip_p must be a number, got 'often'"),
    (G.ten_crops, (RGB32, 40), {}, VE, "crop_size (40, 40) is larger than the images (32, 32)"),
    (G.ten_crops, (RGB32, 0), {}, VE, "crop_size must be >= 1, got 0"),
    (G.ten_crops, ([[1.0]], 3), {}, TE, "images must be a tensor"),
    (G.ten_crop_predict, (TINY, RGB32, 28), dict(batch_size=0), VE, "batch_size must be >= 1, got 0"),
    (G.ten_crop_predict, ("net", RGB32, 28), {}, TE, "model must be a torch.nn.Module, got 'net'"),
    (G.num_translations, (224, 256), {}, VE, "crop_size 256 is larger than image_size 224"),
    (G.num_translations, (256, 0), {}, VE, "crop_size must be >= 1, got 0"),
    (G.num_translations, (256, 224), dict(flips="yes"), TE, "flips must be True or False, got 'yes'"),
    (G.rgb_pca, ([],), {}, VE, "images is an empty list"),
    (G.rgb_pca, (Make(lambda: torch.zeros(2, 4), "(2, 4)"),), {}, VE, "images must be RGB data"),
    (G.rgb_pca, ("pixels",), {}, TE, "images must be a tensor or a list of tensors, got str"),
    # --- data -----------------------------------------------------------------------------------------
    (D.ImageData, (U8, Make(lambda: torch.tensor([0, 5, 1, 9]), "[0, 5, 1, 9]"), ["a", "b", "c"]), {}, VE,
     "labels must be in range(len(classes)) = 0..2 (3 classes), but 2 label(s) are not: 5, 9"),
    (D.ImageData, (U8, Make(lambda: torch.tensor([0, -1, 1, 0]), "[0, -1, 1, 0]"), ["a", "b"]), {}, VE,
     "are not: -1"),
    (D.ImageData, (Make(lambda: torch.zeros(0, 1, 8, 8, dtype=torch.uint8), "no images"),
                   Make(lambda: torch.zeros(0, dtype=torch.int64), "no labels"), ["a"]), {}, VE,
     "images is empty"),
    (D.ImageData, (U8, LABELS, ["a", "b", "c"]), dict(mean=(0.5, 0.5)), VE,
     "mean has 2 values but the images have 1 channel(s)"),
    (D.ImageData, (U8, LABELS, ["a", "b", "c"]), dict(std=(0.0,)), VE, "std[0] must be > 0, got 0"),
    (D.ImageData, (U8, LABELS, ["a", "b", "c"]), dict(std="0.5"), TE, "std must be a sequence of numbers"),
    (D.ImageData, (np.zeros((4, 1, 8, 8), np.uint8), LABELS, ["a", "b", "c"]), {}, TE,
     "images must be a torch.Tensor"),
    (D.ImageData, (Make(lambda: torch.zeros(4, 1, 8, 8), "float images"), LABELS, ["a", "b", "c"]), {}, VE,
     "images must be uint8 (N, C, H, W), not torch.float32"),
    (D.ImageData, (U8, LABELS, []), {}, VE, "classes is empty"),
    (D.ImageData, (U8, Make(lambda: torch.zeros(4), "float labels"), ["a"]), {}, TE,
     "labels must be integer class indices, got torch.float32"),
    (D.ImageData, (U8, Make(lambda: torch.zeros(3, dtype=torch.int64), "3 labels"), ["a"]), {}, VE,
     "4 images but labels of shape (3,)"),
    (_subset, (-5,), {}, VE, "n must be >= 1, got -5"),
    (_subset, (0,), {}, VE, "n must be >= 1, got 0"),
    (_subset, (2.5,), {}, TE, "n must be an integer, got 2.5"),
    (_subset, (5,), dict(seed=-1), VE, "seed must be >= 0, got -1"),
    (_subset, (5,), dict(stratified="yes"), TE, "stratified must be True or False, got 'yes'"),
    (D.load_dataset, ("imagenet",), {}, VE, "unknown dataset 'imagenet'; choose from: fashion-mnist, mnist"),
    (D.load_dataset, (None,), {}, TE, "name must be a dataset name (str), got None"),
    (D.load_dataset, ("mnist",), dict(train="yes"), TE, "train must be True or False, got 'yes'"),
    (D.load_dataset, ("mnist",), dict(root=5), TE, "root must be a path (str or pathlib.Path), got 5"),
    (D.load_dataset, ("mnist",), dict(download="no"), TE, "download must be True or False, got 'no'"),
    (D.resolve_name, (3,), {}, TE, "name must be a dataset name (str), got 3"),
    (D.DeviceLoader, (DATA,), dict(batch_size=0), VE, "batch_size must be >= 1, got 0"),
    (D.DeviceLoader, (DATA,), dict(batch_size=None), TE, "batch_size must be an integer, got None"),
    (D.DeviceLoader, (DATA,), dict(image_size=0), VE, "image_size must be >= 1, got 0"),
    (D.DeviceLoader, (DATA,), dict(image_size=2.5), TE, "image_size must be an integer, got 2.5"),
    (D.DeviceLoader, (DATA,), dict(shuffle="yes"), TE, "shuffle must be True or False, got 'yes'"),
    (D.DeviceLoader, (DATA,), dict(device="gpu"), VE, "device='gpu' is not a device PyTorch knows"),
    (D.DeviceLoader, (DATA,), dict(rank=2, world_size=2), VE, "rank must be <= 1, got 2"),
    (D.DeviceLoader, (DATA,), dict(world_size=0), VE, "world_size must be >= 1, got 0"),
    (D.DeviceLoader, (DATA,), dict(augment="flip"), TE, "augment must be a callable"),
    (D.DeviceLoader, (U8,), {}, TE, "data must be an ImageData"),
    (_set_epoch, (-1,), {}, VE, "epoch must be >= 0, got -1"),
    (D.image_folder_loader, (NOWHERE,), dict(batch_size=0), VE, "batch_size must be >= 1, got 0"),
    (D.image_folder_loader, (NOWHERE,), dict(image_size=0), VE, "image_size must be >= 1, got 0"),
    (D.image_folder_loader, (NOWHERE,), dict(resize=100), VE, "resize must be >= 224, got 100"),
    (D.image_folder_loader, (NOWHERE,), dict(mean=(0.5, 0.5)), VE, "mean has 2 values"),
    (D.image_folder_loader, (NOWHERE,), dict(std=(0.0, 1.0, 1.0)), VE, "std[0] must be > 0, got 0"),
    (D.image_folder_loader, (NOWHERE,), dict(skip_corrupt="yes"), TE, "skip_corrupt must be True or False"),
    (D.image_folder_loader, (NOWHERE,), dict(num_workers=-1), VE, "num_workers must be >= 0, got -1"),
    (D.image_folder_loader, (NOWHERE,), dict(subset=0), VE, "subset must be >= 1, got 0"),
    (D.image_folder_loader, (NOWHERE,), dict(rank=1, world_size=1), VE, "rank must be <= 0, got 1"),
    (D.image_folder_loader, (42,), {}, TE, "root must be a path (str or pathlib.Path), got 42"),
    (D.image_folder_loader, (NOWHERE,), {}, D.DatasetNotFoundError, f"image folder {NOWHERE} does not exist"),
    (D.image_folder_classes, (None,), {}, TE, "root must be a path (str or pathlib.Path), got None"),
    # --- activations ----------------------------------------------------------------------------------
    (A.deep_stack, (), dict(depth=0), VE, "depth must be >= 1, got 0"),
    (A.deep_stack, (), dict(width=0), VE, "width must be >= 1, got 0"),
    (A.deep_stack, (), dict(activation="gelu"), VE, "activation must be one of the activations"),
    (A.deep_stack, (), dict(kind="rnn"), VE, "kind must be one of 'linear', 'conv'; got 'rnn'"),
    (A.deep_stack, (), dict(init="orthogonal"), VE, "init must be one of"),
    (A.deep_stack, (), dict(num_classes=0), VE, "num_classes must be >= 1, got 0"),
    (A.gradient_norms, (), dict(batch=0), VE, "batch must be >= 1, got 0"),
    (A.gradient_norms, (), dict(depth=2.5), TE, "depth must be an integer, got 2.5"),
    (A.gradient_norms, (), dict(kind="conv", image_size=0), VE, "image_size must be >= 1, got 0"),
    (A.activation, ("gelu",), {}, VE, "name must be one of the activations"),
    (A.derivative, ("relu", [1.0]), {}, TE, "x must be a torch.Tensor, got list"),
    (A.autograd_derivative, ("swish", Make(lambda: torch.zeros(3), "zeros(3)")), {}, VE, "name must be one"),
    (A.init_weights, ("net",), {}, TE, "module must be a torch.nn.Module, got 'net'"),
    (A.four_layer_net, (), dict(channels=(16, 32)), VE, "channels must be three channel counts"),
    (A.four_layer_net, (), dict(channels=(16, 0, 64)), VE, "channels[1] must be >= 1, got 0"),
    (A.four_layer_net, (), dict(in_channels=0), VE, "in_channels must be >= 1, got 0"),
    (A.running_mean, ([1.0, 2.0],), dict(window=0), VE, "window must be >= 1, got 0"),
    (A.steps_to_error, ([0.5], "low"), {}, TE, "threshold must be a number, got 'low'"),
    (A.plot_gradient_norms, ([],), {}, VE, "activations must be an activation name or a non-empty list"),
    (A.plot_gradient_norms, (["relu", "gelu"],), {}, VE, "activations must be one of the activations"),
    (A.train_error_curve, (TINY, []), dict(steps=0, lr=0.1), VE, "steps must be >= 1, got 0"),
    (A.train_error_curve, (TINY, []), dict(steps=5, lr=0), VE, "lr must be > 0, got 0"),
    (A.train_error_curve, (TINY, []), dict(steps=5, lr=0.1, momentum=1), VE, "momentum must be < 1, got 1"),
    (A.train_error_curve, (TINY, []), dict(steps=5, lr=0.1, amp_dtype="bf16"), TE, "amp_dtype must be"),
    (A.dead_units, (TINY, "x"), {}, TE, "x must be a torch.Tensor, got str"),
    (A.dead_units, (TINY, Make(lambda: torch.zeros(1, 4), "zeros(1, 4)")), dict(kinds=("ReLU",)), TE,
     "kinds must be a tuple of nn.Module classes"),
]


def _resolve(value):
    return value.fn() if isinstance(value, Make) else value


def _case_id(case) -> str:
    fn, args, kwargs, *_ = case
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{fn.__name__}({', '.join(shown)})"[:90]


@pytest.mark.parametrize("fn,args,kwargs,error,text", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_refused_clearly(fn, args, kwargs, error, text):
    args = [_resolve(a) for a in args]
    kwargs = {k: _resolve(v) for k, v in kwargs.items()}
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    assert text in str(info.value), f"{text!r} not in {str(info.value)!r}"


def test_table_covers_every_module():
    modules = {fn.__module__ for fn, *_ in CASES if fn.__module__.startswith("alexnet_lib")}
    assert modules >= {"alexnet_lib.models", "alexnet_lib.arithmetic", "alexnet_lib.layers",
                       "alexnet_lib.augment", "alexnet_lib.data"}
    assert any(fn.__module__ == "alexnet_lib.activations" for fn, *_ in CASES)
    assert len(CASES) >= 60


def test_refusals_come_before_any_work(monkeypatch):
    """A refused model is never built: no layer is constructed before the arguments are checked."""
    built = []
    real_init = nn.Conv2d.__init__

    def counting_init(self, *args, **kwargs):
        built.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(nn.Conv2d, "__init__", counting_init)
    for kwargs in (dict(num_classes=0), dict(dropout=1.0), dict(init="xavier"), dict(towers="yes")):
        with pytest.raises((TypeError, ValueError)):
            M.get_model("alexnet", **kwargs)
    with pytest.raises(TypeError):
        M.get_model("lenet5", modern="maybe")
    with pytest.raises(ValueError):
        A.deep_stack(kind="conv", init="orthogonal")
    assert built == []


def test_corrupt_dataset_file_is_named(tmp_path: Path):
    """A truncated data file: the message names the file, says it is damaged and how to fix it."""
    from conftest import write_mnist

    write_mnist(tmp_path)
    damaged = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:-3])
    with pytest.raises(D.DatasetCorruptError) as info:
        D.load_dataset("mnist", False, root=tmp_path, download=False)
    assert str(damaged) in str(info.value) and "Delete it and run again" in str(info.value)
