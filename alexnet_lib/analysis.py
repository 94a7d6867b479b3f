"""Looking inside a trained classifier: predictions, confusion matrix, features, nearest neighbours.

The computations behind the analysis figures of the training chapter (the drawings are in
:mod:`alexnet_lib.plots`):

* :func:`predict`: class probabilities for a whole :class:`~alexnet_lib.data.ImageData` (eval mode);
* :func:`confusion_matrix` and :func:`per_class_accuracy`;
* :func:`misclassified`: the wrong predictions, most confident first;
* :func:`feature_maps`: the outputs of every layer of some kinds for one batch (drawn by
  :func:`alexnet_lib.plots.show_feature_maps`);
* :func:`extract_features`: the activations a layer produces (by default the input of the last linear
  layer, i.e. the last hidden layer: "FC7" in AlexNet);
* :func:`nearest_neighbours`: Euclidean nearest neighbours in such a feature space (the paper's Figure 4);
* :func:`top_k`: the k most probable classes of one image;
* :func:`train_accuracy_probe`: an ``on_epoch_end`` callback for :func:`~alexnet_lib.train.fit` that
  measures the eval-mode accuracy on training images after every epoch (the regularisation chapters).
"""

from __future__ import annotations

import torch
from torch import nn

from .data import ImageData
from .device import amp_dtype, autocast, model_device
from .layers import capture_outputs, eval_mode
from .train import evaluate, make_loader

__all__ = ["confusion_matrix", "extract_features", "feature_maps", "misclassified", "nearest_neighbours",
           "per_class_accuracy", "predict", "preprocess", "top_k", "train_accuracy_probe"]


def _autocast(model: nn.Module, precision: str):
    device = model_device(model)
    return autocast(device, amp_dtype(precision, device))


def preprocess(model: nn.Module, images: torch.Tensor, like: ImageData, image_size: int | None = None):
    """uint8 images (N, C, H, W) or (C, H, W) -> the float batch the model was trained on.

    Resizes to ``image_size`` (default ``model.default_input_size``) and normalises with the mean/std
    of ``like`` (the training data), exactly as :class:`~alexnet_lib.data.DeviceLoader` does.
    """
    if images.dim() == 3:
        images = images.unsqueeze(0)
    sub = ImageData(images.to(torch.uint8).cpu(), torch.zeros(len(images), dtype=torch.int64), like.classes,
                    like.name, like.mean, like.std)
    loader = make_loader(model, sub, batch_size=len(sub), train=False, image_size=image_size)
    return loader.transform(loader.images)


@torch.inference_mode()
def predict(model: nn.Module, data: ImageData, batch_size: int = 512, image_size: int | None = None,
            precision: str = "auto"):
    """Class probabilities of every image in ``data``: returns ``(probs (N, K) float32, labels (N,))``.

    The model runs in eval mode (dropout off, BatchNorm on running statistics), its training mode is
    restored afterwards. ``precision`` as in :func:`~alexnet_lib.train.evaluate` ('auto': bf16 autocast
    where the hardware has it, so the predictions agree with ``evaluate``; 'fp32'; 'bf16').
    """
    probs = []
    with eval_mode(model):
        # the loader evaluate uses: same batches, layout and precision, so the predictions agree with it
        for x, _ in make_loader(model, data, batch_size=batch_size, train=False, image_size=image_size):
            with _autocast(model, precision):
                logits = model(x)
            probs.append(torch.softmax(logits.float(), 1).cpu())
    return torch.cat(probs), data.labels.clone()


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor,
                     num_classes: int | None = None) -> torch.Tensor:
    """``cm[t, p]`` = how many images of true class ``t`` were predicted as ``p`` (int64, K x K).

    ``preds`` are class indices (N,) or scores (N, K), whose argmax is taken.
    """
    preds = torch.as_tensor(preds)
    labels = torch.as_tensor(labels).long().cpu()
    if preds.dim() == 2:
        num_classes = num_classes or preds.shape[1]
        preds = preds.argmax(1)
    preds = preds.long().cpu()
    if preds.shape != labels.shape:
        raise ValueError(f"{len(preds)} predictions but {len(labels)} labels")
    k = num_classes or int(max(preds.max(), labels.max())) + 1
    return torch.bincount(labels * k + preds, minlength=k * k).view(k, k)


def per_class_accuracy(cm: torch.Tensor) -> torch.Tensor:
    """Recall of each class: correct / number of images of that class (NaN for an absent class)."""
    cm = torch.as_tensor(cm).double()
    return cm.diagonal() / cm.sum(1)


def misclassified(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Indices of the wrongly classified images, the most confident mistakes first."""
    conf, pred = probs.max(1)
    wrong = (pred != labels).nonzero().squeeze(1)
    return wrong[conf[wrong].argsort(dim=0, descending=True, stable=True)]


def _last_linear(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer; pass layer=... explicitly")
    return linears[-1]


@torch.inference_mode()
def extract_features(model: nn.Module, data, layer: nn.Module | str | None = None, batch_size: int = 512,
                     image_size: int | None = None, use_input: bool | None = None,
                     precision: str = "auto") -> torch.Tensor:
    """Activations of one layer for every image of ``data`` (ImageData, or a float batch), flattened: (N, D).

    ``layer``: a module of ``model`` or its name in ``model.named_modules()``; by default the last
    ``nn.Linear``, whose *input* is taken (``use_input`` defaults to True then, False otherwise): that is
    the last hidden layer after its ReLU (and dropout, off in eval mode), the 4096-d "FC7" features the
    paper uses for its nearest-neighbour Figure 4. ``precision``: 'auto' (bf16 autocast where the
    hardware has it), 'fp32' or 'bf16'; the features come back as float32 either way.
    """
    if layer is None:
        layer = _last_linear(model)
        use_input = True if use_input is None else use_input
    if isinstance(data, ImageData):
        loader = make_loader(model, data, batch_size=batch_size, train=False, image_size=image_size)
        batches = (x for x, _ in loader)
    else:
        batches = (data[i:i + batch_size].to(model_device(model)) for i in range(0, len(data), batch_size))
    grabbed: list[torch.Tensor] = []
    with capture_outputs(model, layer, inputs=bool(use_input)) as out, _autocast(model, precision):
        for x in batches:
            model(x)
            (t,) = out.values()
            grabbed.append(t.float().flatten(1).cpu())
    return torch.cat(grabbed)


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor, kinds=(nn.Conv2d,)) -> dict[str, torch.Tensor]:
    """Outputs of every layer of the given kinds for one batch ``x``, keyed by layer name (float32, on
    the CPU). Each is copied as its layer returns, so a following in-place ReLU does not overwrite a
    convolution's output. The model runs in eval mode."""
    with capture_outputs(model, kinds) as out:
        model(x)
    return {name: t.float().cpu() for name, t in out.items()}


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor, k: int = 6, chunk: int = 4096,
                       exclude_self: bool = False):
    """The ``k`` nearest rows of ``bank`` (N, D) to each row of ``queries`` (Q, D), by Euclidean distance.

    Returns ``(distances (Q, k), indices (Q, k))``, nearest first. ``exclude_self``: the queries are
    rows of the bank themselves (query i = bank row i) and must not be their own neighbour.
    The bank is processed in chunks of ``chunk`` rows, so memory stays O(Q * chunk).
    """
    queries, bank = queries.float(), bank.float()
    if queries.dim() != 2 or bank.dim() != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"queries (Q, D) and bank (N, D) must share D: {tuple(queries.shape)}, "
                         f"{tuple(bank.shape)}")
    if not 1 <= k <= len(bank) - int(exclude_self):
        raise ValueError(f"k must be between 1 and {len(bank) - int(exclude_self)}, got {k}")
    best_d = torch.full((len(queries), 0), float("inf"))
    best_i = torch.zeros((len(queries), 0), dtype=torch.int64)
    for start in range(0, len(bank), chunk):
        d = torch.cdist(queries, bank[start:start + chunk])
        if exclude_self:
            rows = torch.arange(len(queries))
            cols = rows - start
            ok = (cols >= 0) & (cols < d.shape[1])
            d[rows[ok], cols[ok]] = float("inf")
        idx = torch.arange(start, start + d.shape[1]).expand(len(queries), -1)
        best_d, order = torch.cat([best_d, d], 1).sort(dim=1, stable=True)
        best_i = torch.cat([best_i, idx], 1).gather(1, order)
        best_d, best_i = best_d[:, :k], best_i[:, :k]
    return best_d, best_i


def top_k(probs: torch.Tensor, classes, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one image's probability vector, as (name, probability) pairs."""
    probs = torch.as_tensor(probs).flatten().float()
    p, i = probs.topk(min(k, len(probs)))
    return [(classes[j], float(q)) for q, j in zip(p.tolist(), i.tolist())]


def train_accuracy_probe(train: ImageData, image_size: int | None = None, n: int | None = None,
                         seed: int = 0):
    """An ``on_epoch_end`` callback for :func:`~alexnet_lib.train.fit`: after every epoch, the model's
    accuracy in eval mode (dropout off) on the training images, without augmentation, appended to a list.

    ``n``: measure on a fixed stratified subset of ``n`` training images (``train.subset(n, seed=seed)``)
    instead of all of them. ``image_size``: default the size fit trains at. Returns ``(probe, accuracies)``:
    ``fit(..., on_epoch_end=probe)`` fills ``accuracies``.
    """
    data = train if n is None else train.subset(n, seed=seed)
    accuracies: list[float] = []

    def probe(model: nn.Module, history) -> None:
        size = image_size or history.config.get("image_size")
        accuracies.append(evaluate(model, data, image_size=size)["top1"])

    return probe, accuracies
