"""Helpers for the chapter-6 LRN experiment (exploration and final run)."""
import dataclasses
import time

import torch
from torch import nn

from alexnet_lib import LocalResponseNorm, get_model
from alexnet_lib.data import DeviceLoader, load_dataset
from alexnet_lib.train import fit

K, BETA, ALPHA = 2.0, 0.75, 1e-4


class Scale(nn.Module):
    """Multiply by a constant: LRN with its divisor frozen at the floor k^beta."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def extra_repr(self):
        return f"factor={self.factor:.4f}"


def raw_scale(data):
    """The same images as centred raw pixel values (0..255 minus the mean), the paper's input scale."""
    return dataclasses.replace(data, std=tuple(1 / 255 for _ in data.std))


def build(arm, width, seed):
    """arm: 'none', 'LRN', 'constant' (LRN -> x k^-beta), 'BatchNorm'. Same conv/linear init per seed."""
    norm = {"none": None, "LRN": "lrn", "constant": "lrn", "BatchNorm": "batch"}[arm]
    torch.manual_seed(seed)
    model = get_model("alexnet_small", norm=norm, width=width)
    if arm == "constant":
        for i, layer in enumerate(model.features):
            if isinstance(layer, LocalResponseNorm):
                model.features[i] = Scale(K ** -BETA)
    return model


def lrn_inputs(model, images):
    """The inputs a of the model's LRN (or Scale) layers for a batch: {layer name: tensor}."""
    seen, handles = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, (LocalResponseNorm, Scale)):
            handles.append(mod.register_forward_hook(
                lambda m, inp, out, name=name: seen.__setitem__(name, inp[0].detach().float().clone())))
    was = model.training
    model.eval()
    with torch.no_grad():
        model(images)
    model.train(was)
    for h in handles:
        h.remove()
    return seen


def window_term(a, size=5, alpha=ALPHA):
    """alpha * sum of a^2 over the 5-channel window of every element (the paper's LRN, zero-padded)."""
    sq = a.pow(2)
    half = size // 2
    sq = torch.nn.functional.pad(sq, (0, 0, 0, 0, half, size - 1 - half))
    s = sum(sq[:, j:j + a.shape[1]] for j in range(size))
    return alpha * s


def acts_stats(a):
    """How far the divisor k + alpha*sum(a^2) departs from k: median and fractions above 1% and 10%."""
    rel = (window_term(a) / K).flatten()
    return dict(median=rel.median().item(), p99=torch.quantile(rel[:1_000_000], 0.99).item(),
                gt1=(rel > 0.01).double().mean().item(), gt10=(rel > 0.10).double().mean().item())


def data(n_train, n_test):
    train = load_dataset("fashion-mnist", train=True).subset(n_train, seed=0)
    test = load_dataset("fashion-mnist", train=False).subset(n_test, seed=0)
    return train, test


def batch_of(data, n=256):
    images, _ = next(iter(DeviceLoader(data, batch_size=n, image_size=28)))
    return images


def train(arm, scale, width, seed, train_data, test_data, epochs, lr, batch=64):
    tr, te = (raw_scale(train_data), raw_scale(test_data)) if scale == "raw" else (train_data, test_data)
    model = build(arm, width, seed)
    c0, w0 = time.process_time(), time.perf_counter()
    h = fit(model, tr, te, epochs=epochs, lr=lr, batch_size=batch, image_size=28, seed=seed,
            progress=False, precision="fp32")
    return model, h, time.process_time() - c0, time.perf_counter() - w0
