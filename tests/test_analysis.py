"""alexnet_lib.analysis: confusion matrix, predictions, features, nearest neighbours (small and fast)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TinyCNN, make_image_data
from torch import nn

from alexnet_lib.analysis import (
    confusion_matrix,
    extract_features,
    feature_maps,
    misclassified,
    nearest_neighbours,
    per_class_accuracy,
    predict,
    preprocess,
    top_k,
    train_accuracy_probe,
)
from alexnet_lib.data import DeviceLoader
from alexnet_lib.train import evaluate, fit


def test_confusion_matrix_counts_true_rows_predicted_columns():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(preds, labels, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 0]]
    assert cm.dtype == torch.int64 and int(cm.sum()) == len(labels)
    # scores instead of class indices: the argmax is taken, K from their width
    scores = torch.nn.functional.one_hot(preds, 4).float()
    assert confusion_matrix(scores, labels).shape == (4, 4)
    assert torch.equal(confusion_matrix(scores, labels)[:3, :3], cm)
    acc = per_class_accuracy(cm)
    assert torch.allclose(acc, torch.tensor([0.5, 2 / 3, 0.0], dtype=torch.float64))
    assert math.isnan(per_class_accuracy(torch.zeros(2, 2, dtype=torch.int64))[0])
    with pytest.raises(ValueError):
        confusion_matrix(preds[:3], labels)


def test_misclassified_most_confident_first():
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.05, 0.95]])
    labels = torch.tensor([0, 0, 1, 1])
    assert misclassified(probs, labels).tolist() == [1, 2]


def test_nearest_neighbours_match_brute_force_across_chunks():
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(50, 7, generator=g), torch.randn(4, 7, generator=g)
    d, i = nearest_neighbours(queries, bank, k=6, chunk=16)
    full = torch.cdist(queries, bank)
    ref_d, ref_i = full.sort(1)
    assert torch.equal(i, ref_i[:, :6]) and torch.allclose(d, ref_d[:, :6])
    assert (d[:, 1:] >= d[:, :-1]).all()
    # queries taken from the bank: themselves at distance 0, unless excluded
    d0, i0 = nearest_neighbours(bank[:5], bank, k=3, chunk=8)
    assert i0[:, 0].tolist() == list(range(5)) and torch.allclose(d0[:, 0], torch.zeros(5), atol=1e-3)
    _, i1 = nearest_neighbours(bank[:5], bank, k=3, chunk=8, exclude_self=True)
    assert all(r not in row for r, row in zip(range(5), i1.tolist()))
    assert torch.equal(i1, full_sorted_without_self(bank, 5, 3))
    with pytest.raises(ValueError):
        nearest_neighbours(queries, bank[:, :3])
    with pytest.raises(ValueError):
        nearest_neighbours(queries, bank, k=51)


def full_sorted_without_self(bank, q, k):
    d = torch.cdist(bank[:q], bank)
    d[torch.arange(q), torch.arange(q)] = float("inf")
    return d.sort(1).indices[:, :k]


def test_predict_agrees_with_evaluate_and_restores_mode():
    torch.manual_seed(0)
    model = TinyCNN()
    model.train()
    data = make_image_data(n=40, size=28, classes=10)
    probs, labels = predict(model, data, batch_size=16, precision="fp32")
    assert probs.shape == (40, 10) and model.training
    assert torch.allclose(probs.sum(1), torch.ones(40), atol=1e-5)
    acc = (probs.argmax(1) == labels).float().mean().item()
    ref = evaluate(model, data, precision="fp32", batch_size=16)["top1"]
    assert acc == pytest.approx(ref)
    # default precision ('auto': bf16 where supported): same batches and layout as evaluate, same answer
    probs_auto, _ = predict(model, data, batch_size=16)
    acc_auto = (probs_auto.argmax(1) == labels).float().mean().item()
    assert acc_auto == pytest.approx(evaluate(model, data, batch_size=16)["top1"])


def test_extract_features_default_is_input_of_last_linear():
    torch.manual_seed(0)
    model = TinyCNN(width=4)
    data = make_image_data(n=10, size=28, classes=10)
    feats = extract_features(model, data, batch_size=4, precision="fp32")
    assert feats.shape == (10, 2 * 4 * 16)
    x = DeviceLoader(data, batch_size=10, image_size=28).transform(data.images)
    model.eval()
    with torch.no_grad():
        ref = model.classifier[:2](model.features(x))  # Flatten, Dropout (identity in eval)
    assert torch.allclose(feats, ref, atol=1e-5)
    # a named layer's output, and a float batch instead of ImageData
    conv = extract_features(model, x, layer="features.0", use_input=False, precision="fp32")
    assert conv.shape == (10, 4 * 28 * 28)
    with pytest.raises(ValueError):
        extract_features(nn.Sequential(nn.Conv2d(1, 2, 3)), x)


def test_preprocess_matches_the_loader_and_top_k():
    data = make_image_data(n=3, size=28, classes=10)
    model = TinyCNN()
    x = preprocess(model, data.images[1], data)
    ref = DeviceLoader(data, batch_size=3, image_size=28).transform(data.images)[1:2]
    assert torch.allclose(x, ref)
    probs = torch.tensor([0.1, 0.5, 0.05, 0.35])
    assert top_k(probs, ["a", "b", "c", "d"], k=2) == [("b", 0.5), ("d", pytest.approx(0.35))]
    assert len(top_k(probs, ["a", "b", "c", "d"], k=10)) == 4


def test_feature_maps_keep_conv_output_before_inplace_relu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True))
    x = torch.randn(2, 1, 8, 8)
    maps = feature_maps(model, x, kinds=(nn.Conv2d, nn.ReLU))
    expected = model[0](x)
    torch.testing.assert_close(maps["0"], expected)  # negative values survive the in-place ReLU
    assert (maps["0"] < 0).any() and (maps["1"] >= 0).all()


def test_extract_features_keeps_conv_output_before_inplace_relu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 36, 2))
    x = torch.randn(3, 1, 8, 8)
    feats = extract_features(model, x, layer="0", batch_size=2, precision="fp32")
    with torch.no_grad():
        torch.testing.assert_close(feats, model[0](x).flatten(1))
    assert (feats < 0).any()


def test_train_accuracy_probe_measures_eval_mode_accuracy_after_every_epoch():
    torch.manual_seed(0)
    train = make_image_data(n=48, size=28, classes=10)
    model = TinyCNN()
    probe, accuracies = train_accuracy_probe(train)
    seen = []
    fit(model, train, epochs=2, batch_size=16, image_size=28, device="cpu", progress=False,
        on_epoch_end=lambda m, h: (probe(m, h), seen.append(evaluate(m, train, image_size=28)["top1"])))
    assert accuracies == seen and len(accuracies) == 2  # the size fit trained at, eval mode
    probe_sub, acc_sub = train_accuracy_probe(train, image_size=28, n=20)
    probe_sub(model, None)
    assert acc_sub == [evaluate(model, train.subset(20, seed=0), image_size=28)["top1"]]
