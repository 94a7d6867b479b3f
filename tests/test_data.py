"""alexnet_lib.data: loading (real Fashion-MNIST; CIFAR-10, MNIST, ImageFolder in their real formats),
ImageData, DeviceLoader."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import CIFAR_CLASSES, make_image_data, write_cifar10, write_image_folder, write_mnist

from alexnet_lib import data as D
from alexnet_lib.data import DatasetNotFoundError, DeviceLoader, ImageData, image_folder_loader, load_dataset

# --- data root and names -----------------------------------------------------------------------------


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("ALEXNET_DATA", str(tmp_path / "x"))
    assert D.default_data_root() == tmp_path / "x"
    monkeypatch.delenv("ALEXNET_DATA")
    assert D.default_data_root() == Path.home() / ".cache" / "alexnet_lib" / "data"


@pytest.mark.parametrize("name", ["fashion-mnist", "fashion_mnist", "FashionMNIST", "fashionmnist"])
def test_resolve_name_aliases(name):
    assert D.resolve_name(name) == "fashion-mnist"


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match="imagenet.*fashion-mnist, mnist, cifar10"):
        load_dataset("imagenet")


# --- Fashion-MNIST (the real files) -------------------------------------------------------------------


def test_fashion_mnist_real_files(fashion, fashion_root):
    train, test = fashion
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.labels.tolist()[:5] == [9, 0, 0, 3, 0]
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert train.classes[0] == "T-shirt/top" and len(train.classes) == 10
    assert (train.channels, train.num_classes, train.image_size) == (1, 10, 28)
    assert train.name == "fashion-mnist" and test.name == "fashion-mnist-test"
    # the stored statistics match the data
    x = train.images.float() / 255
    assert x.mean().item() == pytest.approx(train.mean[0], abs=1e-3)
    assert x.std().item() == pytest.approx(train.std[0], abs=1e-3)
    # gunzipped into torchvision's raw layout under the data root
    assert (fashion_root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").stat().st_size == 47040016


def test_fashion_mnist_uses_default_root(fashion_root):
    # ALEXNET_DATA points at the session's data root (conftest), so root=None finds the same files
    assert len(load_dataset("fashion_mnist", train=False, download=False)) == 10000


def test_missing_dataset_offline_error(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "SYSTEM_DATASET_DIRS", {"fashion-mnist": [tmp_path / "no-such-dir"]})
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("fashion-mnist", root=tmp_path / "empty", download=False)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    for part in [str(tmp_path / "empty" / "FashionMNIST"), str(tmp_path / "no-such-dir"),
                 "apt install dataset-fashion-mnist", "ALEXNET_DATA", "download=True"]:
        assert part in msg


def test_missing_dataset_download_fails(tmp_path):
    # the conftest refuses network connections, so torchvision's download fails like it does offline
    with pytest.raises(DatasetNotFoundError, match=r"(?s)'mnist' not found.*download failed.*ALEXNET_DATA"):
        load_dataset("mnist", root=tmp_path, download=True)


# --- MNIST and CIFAR-10 from small files in the real formats -------------------------------------------


def test_mnist_idx_files(tmp_path):
    written = write_mnist(tmp_path, n_train=30, n_test=10)
    train = load_dataset("mnist", True, root=tmp_path, download=False)
    test = load_dataset("MNIST", False, root=tmp_path, download=False)
    assert train.images.shape == (30, 1, 28, 28) and test.images.shape == (10, 1, 28, 28)
    assert torch.equal(train.images[:, 0], torch.from_numpy(written["train"][0]))
    assert torch.equal(test.labels, torch.from_numpy(written["t10k"][1]).long())
    assert train.mean == (0.1307,) and train.classes[3] == "3 - three"


def test_cifar10_pickles(tmp_path, cifar_files_trusted):
    written = write_cifar10(tmp_path, per_batch=20)
    train = load_dataset("cifar10", True, root=tmp_path, download=False)
    test = load_dataset("cifar-10", False, root=tmp_path, download=False)
    assert train.images.shape == (100, 3, 32, 32) and train.images.is_contiguous()
    assert test.images.shape == (20, 3, 32, 32)
    data, labels = written["data_batch_2"]
    # rows are stored as R, G, B planes of 32x32: (N, 3072) -> (N, 3, 32, 32) must come back unchanged
    assert torch.equal(train.images[20:40], torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    assert train.labels[20:40].tolist() == labels
    assert train.classes == CIFAR_CLASSES and len(train.mean) == 3


# --- ImageData ------------------------------------------------------------------------------------------


def test_image_data_validates():
    with pytest.raises(ValueError, match="uint8"):
        ImageData(torch.zeros(4, 1, 8, 8), torch.zeros(4), ["a"])
    with pytest.raises(ValueError, match="labels"):
        ImageData(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(3), ["a"])


def test_subset_stratified_and_reproducible(fashion):
    train = fashion[0]
    s = train.subset(1000, seed=1)
    assert len(s) == 1000 and torch.bincount(s.labels).tolist() == [100] * 10
    assert torch.equal(s.images, train.subset(1000, seed=1).images)
    assert not torch.equal(s.labels, train.subset(1000, seed=2).labels)
    assert train.subset(10**6) is train
    # imbalanced classes keep their proportions
    d = ImageData(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), torch.tensor([0] * 80 + [1] * 20), ["a", "b"])
    assert torch.bincount(d.subset(10).labels).tolist() == [8, 2]
    assert len(d.subset(10, stratified=False)) == 10


# --- DeviceLoader ----------------------------------------------------------------------------------------


def test_device_loader_shapes_and_normalisation():
    d = make_image_data(n=10, channels=3, size=8)
    d.images[:] = 51  # 0.2 after /255
    loader = DeviceLoader(d, batch_size=4, device="cpu")
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (4, 3, 8, 8)
    assert torch.allclose(x, torch.full_like(x, (0.2 - 0.5) / 0.25))
    raw = next(iter(DeviceLoader(d, 4, normalize=False)))[0]
    assert torch.allclose(raw, torch.full_like(raw, 0.2))
    assert len(DeviceLoader(d, 4, drop_last=True)) == 2


def test_device_loader_resize():
    d = make_image_data(n=6, size=28)
    up = next(iter(DeviceLoader(d, 6, image_size=56, normalize=False)))[0]
    assert up.shape == (6, 1, 56, 56)
    ref = F.interpolate(d.images.float() / 255, size=(56, 56), mode="bilinear", align_corners=False)
    assert torch.allclose(up, ref)
    down = next(iter(DeviceLoader(d, 6, image_size=7, normalize=False)))[0]
    assert down.shape == (6, 1, 7, 7)
    x = d.images.float() / 255
    assert torch.allclose(down, F.interpolate(x, size=(7, 7), mode="bilinear", antialias=True))
    # antialiasing averages over the whole 4x4 footprint: random noise is smoothed far more than by a
    # plain bilinear resize, which looks at 2x2 pixels only
    plain = F.interpolate(x, size=(7, 7), mode="bilinear", antialias=False)
    assert down.std() < 0.6 * plain.std()


def test_device_loader_augment_and_channels_last():
    d = make_image_data(n=8, channels=3, size=8)
    seen = []

    def augment(x):
        seen.append((x.dtype, x.device.type))
        return x.flip(-1)

    x, _ = next(iter(DeviceLoader(d, 8, augment=augment, channels_last=True)))
    plain, _ = next(iter(DeviceLoader(d, 8)))
    assert seen == [(torch.float32, "cpu")]
    assert torch.equal(x, plain.flip(-1)) and x.is_contiguous(memory_format=torch.channels_last)


def _labels(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_device_loader_reproducible_shuffle():
    d = make_image_data(n=50)
    d.labels = torch.arange(50)  # label = sample index
    a, b = DeviceLoader(d, 8, shuffle=True, seed=3), DeviceLoader(d, 8, shuffle=True, seed=3)
    epoch0 = _labels(a)
    assert sorted(epoch0) == list(range(50)) and epoch0 != list(range(50))
    assert _labels(a) == epoch0  # same epoch -> same order
    a.set_epoch(1)
    epoch1 = _labels(a)
    assert epoch1 != epoch0 and sorted(epoch1) == list(range(50))
    b.set_epoch(1)  # a fresh loader (e.g. after resume) sees the same order for the same epoch
    assert _labels(b) == epoch1
    assert _labels(DeviceLoader(d, 8, shuffle=True, seed=4)) != epoch0
    assert _labels(DeviceLoader(d, 8)) == list(range(50))


def test_device_loader_sharding():
    d = make_image_data(n=11)
    d.labels = torch.arange(11)
    shards = [DeviceLoader(d, 4, rank=r, world_size=2) for r in range(2)]  # evaluation: no padding
    assert sorted(_labels(shards[0]) + _labels(shards[1])) == list(range(11))
    train = [DeviceLoader(d, 4, shuffle=True, rank=r, world_size=2) for r in range(2)]
    assert len(train[0]) == len(train[1]) == math.ceil(6 / 4)  # padded so every rank runs the same steps
    seen = _labels(train[0]) + _labels(train[1])
    assert len(seen) == 12 and set(seen) == set(range(11))


# --- ImageFolder ----------------------------------------------------------------------------------------


def test_image_folder_loader(tmp_path):
    root = write_image_folder(tmp_path / "tiny")
    train = image_folder_loader(root, True, image_size=16, batch_size=4, num_workers=0, seed=0)
    val = image_folder_loader(root, False, image_size=16, batch_size=4, num_workers=0)
    assert train.classes == ["cat", "dog", "fox"] and len(train.dataset) == 18 and len(val.dataset) == 9
    x, y = next(iter(train))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(train) == 4 and len(val) == 3  # drop_last for training only
    vx, vy = next(iter(val))
    assert vy.tolist() == [0, 0, 0, 1]  # no shuffling for validation
    # the class colour survives resizing and normalisation: channel c is the brightest for class c
    means = vx.mean(dim=(2, 3))
    assert (means.argmax(1) == vy).all()
    train.set_epoch(0)
    order0 = [y.tolist() for _, y in train]
    train.set_epoch(1)
    train.set_epoch(0)
    assert [y.tolist() for _, y in train] == order0
    small = image_folder_loader(root, True, image_size=16, batch_size=2, subset=5, num_workers=0)
    assert len(small.dataset) == 5 and small.classes == train.classes


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        image_folder_loader(tmp_path / "nothing")
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="'val' folder"):
        image_folder_loader(tmp_path / "only_train", train=False)


# --- damaged files, bad ImageData, image-folder layouts -------------------------------------------------


@pytest.mark.parametrize("download", [False, True])
def test_truncated_mnist_file_is_named_with_the_fix(tmp_path, download):
    write_mnist(tmp_path, n_train=30, n_test=10)
    damaged = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:1000])  # an interrupted copy
    with pytest.raises(D.DatasetCorruptError) as info:
        load_dataset("mnist", True, root=tmp_path, download=download)
    msg = str(info.value)
    assert str(damaged) in msg and "corrupt or truncated" in msg and "1000 bytes" in msg
    assert "Delete it and run again" in msg and "not found" not in msg
    assert isinstance(info.value, DatasetNotFoundError)  # handled wherever a missing dataset is
    damaged.unlink()  # following the advice: now the file is missing (and downloading would fetch it)
    with pytest.raises(DatasetNotFoundError, match="not found") as info:
        load_dataset("mnist", True, root=tmp_path, download=False)
    assert not isinstance(info.value, D.DatasetCorruptError)
    write_mnist(tmp_path, n_train=30, n_test=10)  # what the download puts back
    assert len(load_dataset("mnist", True, root=tmp_path, download=False)) == 30


def test_truncated_fashion_mnist_copy_is_re_extracted_after_deleting(fashion_root, tmp_path):
    root = tmp_path / "data"
    load_dataset("fashion-mnist", False, root=root, download=False)  # extracts from the system copy
    damaged = root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:5000])
    with pytest.raises(D.DatasetCorruptError, match="re-extracted from the system copy") as info:
        load_dataset("fashion-mnist", False, root=root, download=False)
    assert str(damaged) in str(info.value)
    damaged.unlink()
    assert len(load_dataset("fashion-mnist", False, root=root, download=False)) == 10000


def test_truncated_cifar_pickle_is_named(tmp_path, cifar_files_trusted):
    write_cifar10(tmp_path, per_batch=20)
    damaged = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    with pytest.raises(D.DatasetCorruptError, match="cannot be unpickled") as info:
        load_dataset("cifar10", True, root=tmp_path, download=False)
    assert str(damaged) in str(info.value) and "data_batch_1" not in str(info.value)


def test_image_data_refuses_labels_outside_the_classes_and_empty_data():
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"0\.\.2 \(3 classes\), but 2 label\(s\) are not: 3, 7"):
        ImageData(images, torch.tensor([0, 3, 7, 1]), ["a", "b", "c"])
    with pytest.raises(ValueError, match="empty"):
        ImageData(images[:0], torch.zeros(0, dtype=torch.int64), ["a"])
    with pytest.raises(ValueError, match="mean has 2 values but the images have 1 channel"):
        ImageData(images, torch.zeros(4, dtype=torch.int64), ["a"], mean=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"std\[0\] must be > 0"):
        ImageData(images, torch.zeros(4, dtype=torch.int64), ["a"], std=(0.0,))
    with pytest.raises(TypeError, match="labels must be integer class indices"):
        ImageData(images, torch.zeros(4), ["a"])


def test_subset_refuses_non_positive_sizes():
    data = make_image_data(64)
    with pytest.raises(ValueError, match="n must be >= 1, got -5"):
        data.subset(-5)
    with pytest.raises(TypeError, match="n must be an integer, got 0.5"):
        data.subset(0.5)
    assert len(data.subset(5)) == 5 and data.subset(100) is data


def _save(path: Path, colour: int = 0, fmt: str = "PNG"):
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((20, 20, 3), dtype=np.uint8)
    pixels[..., colour] = 255
    Image.fromarray(pixels).save(path, fmt)


def test_val_classes_are_aligned_with_train_by_name(tmp_path):
    root = tmp_path / "farm"
    for i, name in enumerate(["bee", "cow", "hen"]):
        _save(root / "train" / name / "0.png", i)
        _save(root / "train" / name / "1.jpg", i, "JPEG")
    _save(root / "val" / "cow" / "0.png", 1)  # val lacks 'bee' and 'hen'
    _save(root / "val" / "hen" / "0.jpg", 2, "JPEG")
    kw = dict(image_size=16, batch_size=4, num_workers=0)
    val = image_folder_loader(root, False, **kw)
    assert val.classes == val.dataset.classes == ["bee", "cow", "hen"]
    _, y = next(iter(val))
    assert y.tolist() == [1, 2]  # train's indices of 'cow' and 'hen', not 0 and 1
    assert D.image_folder_classes(root) == ["bee", "cow", "hen"]
    _save(root / "val" / "owl" / "0.png")
    with pytest.raises(ValueError, match="class folder\\(s\\) 'owl' that .*train does not have"):
        image_folder_loader(root, False, **kw)


def test_a_folder_without_train_and_val_is_refused_with_the_layout(tmp_path):
    _save(tmp_path / "flat" / "cat" / "0.png")  # classes directly under the root: no held-out images
    for call in (lambda: image_folder_loader(tmp_path / "flat", True, num_workers=0),
                 lambda: image_folder_loader(tmp_path / "flat", False, num_workers=0),
                 lambda: D.image_folder_classes(tmp_path / "flat")):
        layout = r"no train/ and no val/ folder.*/train/<class>/\*\.jpg"
        with pytest.raises(DatasetNotFoundError, match=layout):
            call()


def test_corrupt_images_are_named_or_skipped(tmp_path):
    root = write_image_folder(tmp_path / "tiny")
    truncated = root / "train" / "dog" / "1.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    not_an_image = root / "train" / "fox" / "2.png"
    not_an_image.write_bytes(b"not a png")
    kw = dict(image_size=16, batch_size=32, num_workers=0)
    with pytest.raises(D.CorruptImageError, match=r"cannot read image .*(1\.jpg|2\.png).*skip_corrupt=True"):
        list(image_folder_loader(root, True, **kw))
    with pytest.warns(UserWarning, match=r"skipped 2 corrupt or truncated image\(s\) of 18 in .*train") as w:
        loader = image_folder_loader(root, True, skip_corrupt=True, **kw)
    assert len(w) == 1 and str(truncated) in str(w[0].message) and str(not_an_image) in str(w[0].message)
    assert sorted(loader.skipped) == sorted([str(truncated), str(not_an_image)])
    assert len(loader.dataset) == 16 and sum(len(y) for _, y in loader) == 16
