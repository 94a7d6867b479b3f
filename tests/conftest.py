"""Shared fixtures: a private data root, the real Fashion-MNIST, small CIFAR-10/MNIST/ImageFolder datasets
in their real formats written into tmp dirs, a tiny CNN.

No test may download anything: outgoing network connections are refused for the whole session."""

from __future__ import annotations

import os
import pickle
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _no_network():
    """Unit tests must not download: any connection other than to localhost fails at once."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"network access disabled in the unit tests ({address[0]})")
        return real_connect(self, address)

    socket.socket.connect = guarded
    yield
    socket.socket.connect = real_connect


@pytest.fixture(scope="session", autouse=True)
def data_root(tmp_path_factory) -> Path:
    """A fresh ALEXNET_DATA for the session, so no test depends on (or writes to) the home directory."""
    root = tmp_path_factory.mktemp("alexnet_data")
    old = os.environ.get("ALEXNET_DATA")
    os.environ["ALEXNET_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("ALEXNET_DATA", None)
    else:
        os.environ["ALEXNET_DATA"] = old


@pytest.fixture(scope="session")
def fashion_root(data_root) -> Path:
    """data_root holding the real Fashion-MNIST (Debian's dataset-fashion-mnist) in torchvision's layout."""
    if not (FASHION_SYSTEM_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt install dataset-fashion-mnist)")
    from alexnet_lib.data import load_dataset

    load_dataset("fashion-mnist", train=False, root=data_root, download=False)  # gunzips all four files
    return data_root


@pytest.fixture(scope="session")
def fashion(fashion_root):
    """(train, test) ImageData of the real Fashion-MNIST."""
    from alexnet_lib.data import load_dataset

    return (load_dataset("fashion-mnist", True, root=fashion_root, download=False),
            load_dataset("fashion-mnist", False, root=fashion_root, download=False))


class TinyCNN(nn.Module):
    """A small CNN with BatchNorm and dropout (so resume tests cover buffers and the dropout RNG)."""

    default_input_size = 28

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 8, dropout: float = 0.2):
        super().__init__()
        self.in_channels = in_channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                        nn.Linear(2 * width * 16, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.fixture
def tiny_cnn():
    return TinyCNN


def make_image_data(n: int = 64, channels: int = 1, size: int = 8, classes: int = 4, seed: int = 0):
    """Synthetic ImageData (random pixels, balanced labels)."""
    from alexnet_lib.data import ImageData

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return ImageData(images, labels, [f"c{i}" for i in range(classes)], "synthetic",
                     mean=(0.5,) * channels, std=(0.25,) * channels)


# --- small datasets in the real on-disk formats -----------------------------------------------------

CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> dict:
    """CIFAR-10 python pickles (cifar-10-batches-py/) with random pixels; returns {batch: (data, labels)}."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in CIFAR_BATCHES:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(d / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data,
                         "filenames": [f"{i}.png" for i in range(per_batch)]}, f)
        written[name] = (data, labels)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return written


@pytest.fixture
def cifar_files_trusted(monkeypatch):
    """torchvision checks CIFAR files against the real md5 sums; the small test files cannot match them."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def write_mnist(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict:
    """MNIST idx files (uncompressed) in root/MNIST/raw; returns {split: (images uint8 N,28,28, labels)}."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    written = {}
    for prefix, n in [("train", n_train), ("t10k", n_test)]:
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        header = struct.pack(">IIII", 0x803, n, 28, 28)  # magic: unsigned byte data, 3 dimensions
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())
        written[prefix] = (images, labels)
    return written


def write_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class=(6, 3),
                       sizes=((40, 30), (24, 36))):
    """ImageNet layout root/{train,val}/<class>/*.{png,jpg} with small images of mixed sizes and formats."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = sizes[i % len(sizes)]
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                pixels[..., c] = 255  # class colour, so a model can learn it
                ext = "png" if i % 2 == 0 else "jpg"
                Image.fromarray(pixels).save(d / f"{i}.{ext}")
    return root
