"""Datasets for the book: small ones held in memory as uint8 tensors, ImageNet-style folders streamed.

Small datasets (Fashion-MNIST, MNIST, CIFAR-10) fit in memory, so :func:`load_dataset` returns an
:class:`ImageData` holding every image as one ``uint8`` tensor of shape ``(N, C, H, W)``. A
:class:`DeviceLoader` moves that tensor to the device once and builds each batch there (index, convert,
resize, normalise, augment), so the GPU never waits for a Python data pipeline.

Large datasets in the ImageNet folder layout (``root/train/<class>/*.jpg``, ``root/val/<class>/...``)
go through torchvision's ``ImageFolder`` and a ``DataLoader``: see :func:`image_folder_loader`.

Data root: every dataset lives under one directory, ``$ALEXNET_DATA`` if set, else
``~/.cache/alexnet_lib/data`` (:func:`default_data_root`). Fashion-MNIST is taken offline from the
Debian/Ubuntu package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) when it is
installed; everything else is downloaded by torchvision on first use.
"""

from __future__ import annotations

import gzip
import itertools
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "DeviceLoader",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageData",
    "default_data_root",
    "image_folder_classes",
    "image_folder_loader",
    "load_dataset",
    "resolve_name",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Canonical name -> torchvision class name, sub-folder torchvision uses under the root,
# per-channel mean/std of the training set (on [0, 1] pixel values).
DATASETS = {
    "fashion-mnist": dict(tv="FashionMNIST", folder="FashionMNIST", mean=(0.2860,), std=(0.3530,)),
    "mnist": dict(tv="MNIST", folder="MNIST", mean=(0.1307,), std=(0.3081,)),
    "cifar10": dict(tv="CIFAR10", folder="cifar-10-batches-py",
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
            "cifar-10": "cifar10", "cifar_10": "cifar10"}

# Where system packages put datasets (Debian/Ubuntu: apt install dataset-fashion-mnist).
SYSTEM_DATASET_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}
_HOW_TO_GET = {
    "fashion-mnist": "install the system package (Debian/Ubuntu: `sudo apt install dataset-fashion-mnist`, "
                     "files in /usr/share/datasets/fashion-mnist)",
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk and could not be downloaded."""


def default_data_root() -> Path:
    """The directory all datasets live under: ``$ALEXNET_DATA``, else ``~/.cache/alexnet_lib/data``."""
    env = os.environ.get("ALEXNET_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "alexnet_lib" / "data"


def resolve_name(name: str) -> str:
    """Canonical dataset name ('fashion_mnist' -> 'fashion-mnist'); ValueError naming the valid ones."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    return key


@dataclass
class ImageData:
    """A labelled image dataset held in memory.

    ``images`` is ``uint8`` of shape ``(N, C, H, W)``, ``labels`` is ``int64`` of shape ``(N,)``;
    ``mean``/``std`` are per-channel statistics on the [0, 1] scale used to normalise batches.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = "data"
    mean: tuple[float, ...] = field(default=(0.5,))
    std: tuple[float, ...] = field(default=(0.5,))

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            shape = tuple(self.images.shape)
            raise ValueError(f"images must be uint8 (N, C, H, W), not {self.images.dtype} {shape}")
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.mean, self.std = tuple(self.mean), tuple(self.std)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        return f"ImageData({self.name!r}, n={n}, shape=({c}, {h}, {w}), classes={len(self.classes)})"

    def subset(self, n: int, seed: int = 0, stratified: bool = True) -> ImageData:
        """``n`` images chosen at random (reproducible with ``seed``).

        Stratified (default): every class keeps its share of the dataset, so a balanced dataset
        stays balanced. The chosen images keep their original order.
        """
        if n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(self), generator=g)
        if stratified:
            # Position of each sample within its class (in random order), divided by the class size:
            # sorting by this fraction interleaves the classes in proportion to their sizes.
            lab = self.labels[perm]
            counts = torch.bincount(lab, minlength=len(self.classes)).clamp_min(1)
            onehot = F.one_hot(lab, len(self.classes))
            rank = (onehot.cumsum(0) * onehot).sum(1) - 1
            frac = (rank.double() + 0.5) / counts[lab].double()
            perm = perm[torch.sort(frac, stable=True).indices]
        idx = perm[:n].sort().values
        return ImageData(self.images[idx], self.labels[idx], list(self.classes), self.name,
                         self.mean, self.std)


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------

def _install_system_copy(key: str, root: Path) -> None:
    """Gunzip a system-installed copy (e.g. Debian's dataset-fashion-mnist) into torchvision's raw layout."""
    raw = root / DATASETS[key]["folder"] / "raw"
    for src_dir in SYSTEM_DATASET_DIRS.get(key, []):
        files = sorted(src_dir.glob("*-ubyte.gz")) if src_dir.is_dir() else []
        if len(files) < 4:
            continue
        raw.mkdir(parents=True, exist_ok=True)
        for gz in files:
            dst = raw / gz.name[:-3]
            if dst.exists() and dst.stat().st_size > 0:
                continue
            tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
            with gzip.open(gz, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            os.replace(tmp, dst)
        return


def _not_found(key: str, root: Path, download: bool, err: Exception | None) -> DatasetNotFoundError:
    where = root / DATASETS[key]["folder"]
    how = " and the download failed" if download else " (download=False, so nothing was downloaded)"
    lines = [f"Dataset {key!r} not found in {where}{how}."]
    if err is not None:
        detail = " ".join(str(err).split())
        lines.append(f"  ({type(err).__name__}: {detail[:300]})")
    if key in SYSTEM_DATASET_DIRS:
        looked = ", ".join(str(p) for p in SYSTEM_DATASET_DIRS[key])
        lines.append(f"Also looked for a system copy in: {looked}.")
    lines.append("To get it, do one of:")
    if key in _HOW_TO_GET:
        lines.append(f"  - {_HOW_TO_GET[key]};")
    lines.append("  - point ALEXNET_DATA (or root=..., --data-root) at a directory that already holds it;")
    lines.append(f"  - run once with internet access and download=True: torchvision fetches it into {root}.")
    return DatasetNotFoundError("\n".join(lines))


def _torchvision_dataset(key: str, train: bool, root: Path, download: bool):
    import torchvision.datasets as tvd

    cls = getattr(tvd, DATASETS[key]["tv"])
    if key in SYSTEM_DATASET_DIRS:
        _install_system_copy(key, root)
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError as exc:
        if not download:
            raise _not_found(key, root, download, exc) from None
    try:
        root.mkdir(parents=True, exist_ok=True)
        return cls(str(root), train=train, download=True)
    except Exception as exc:  # network errors come in many types (URLError, HTTPError, OSError, ...)
        raise _not_found(key, root, download, exc) from None


def load_dataset(name: str, train: bool = True, root: str | os.PathLike | None = None,
                 download: bool = True) -> ImageData:
    """Load 'fashion-mnist', 'mnist' or 'cifar10' (train or test split) into memory as uint8 tensors.

    ``root`` defaults to :func:`default_data_root`. Raises :class:`DatasetNotFoundError` (a
    FileNotFoundError) saying where it looked and how to get the data when it is missing offline.
    """
    key = resolve_name(name)
    root = Path(root).expanduser() if root is not None else default_data_root()
    ds = _torchvision_dataset(key, train, root, download)
    images = torch.as_tensor(ds.data)
    if images.dim() == 3:  # MNIST family: (N, H, W)
        images = images.unsqueeze(1)
    else:  # CIFAR: numpy (N, H, W, C)
        images = images.permute(0, 3, 1, 2)
    info = DATASETS[key]
    return ImageData(images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64), list(ds.classes),
                     name=key + ("" if train else "-test"), mean=info["mean"], std=info["std"])


# ---------------------------------------------------------------------------------------------------
# Batches built on the device
# ---------------------------------------------------------------------------------------------------

class DeviceLoader:
    """Iterate over an :class:`ImageData` in batches built on ``device``.

    The uint8 images are copied to the device once. Each batch is indexed there, converted to float
    in [0, 1], resized to ``image_size`` (bilinear; antialiased when shrinking), normalised with the
    dataset's mean/std, passed through ``augment`` (a callable on the float batch) and optionally made
    channels_last. Yields ``(images, labels)``.

    Shuffling is reproducible: the order of epoch ``e`` depends only on ``(seed, e)``; call
    :meth:`set_epoch` before each epoch (``fit`` does). With ``world_size > 1`` every rank takes its
    own slice of the (common) order; when shuffling (training) the order is padded so that all ranks
    get the same number of batches, when not shuffling (evaluation) every sample is seen exactly once.
    """

    def __init__(self, data: ImageData, batch_size: int = 128, shuffle: bool = False,
                 device: torch.device | str | None = None, image_size: int | None = None,
                 normalize: bool = True, augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 drop_last: bool = False, channels_last: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.data, self.batch_size, self.shuffle = data, int(batch_size), shuffle
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.image_size = image_size
        self.normalize, self.augment, self.drop_last = normalize, augment, drop_last
        self.channels_last, self.seed, self.epoch, self.start_batch = channels_last, seed, 0, 0
        self.rank, self.world_size = rank, world_size
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        stat = lambda v: torch.tensor(v, device=self.device).view(1, -1, 1, 1).expand(1, data.channels, 1, 1)  # noqa: E731
        self.mean, self.std = stat(data.mean), stat(data.std)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        n = len(self.data)
        if self.world_size == 1:
            return n
        if self.shuffle:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Shuffle for ``epoch``; iteration starts at batch ``start_batch`` (a resumed epoch: the skipped
        batches are neither built nor augmented)."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def _order(self) -> torch.Tensor:
        n = len(self.data)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            if self.shuffle:
                total = math.ceil(n / self.world_size) * self.world_size
                order = torch.cat([order, order[: total - n]])
            order = order[self.rank::self.world_size]
        return order.to(self.device)

    def transform(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 batch on the device -> float batch ready for the model (resize, normalise, augment)."""
        x = images_uint8.float().div_(255)
        size = self.image_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            shrink = size < max(x.shape[-2:])
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        if self.normalize:
            x = (x - self.mean) / self.std
        if self.augment is not None:
            x = self.augment(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __iter__(self):
        order = self._order()
        for b in range(self.start_batch, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.transform(self.images[idx]), self.labels[idx]

    def __repr__(self) -> str:
        return (f"DeviceLoader({self.data!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"device={self.device}, image_size={self.image_size}, batches={len(self)})")


# ---------------------------------------------------------------------------------------------------
# ImageNet-style folders
# ---------------------------------------------------------------------------------------------------

class _EpochDataLoader(torch.utils.data.DataLoader):
    """DataLoader whose shuffle order and augmentation seeds depend only on (seed, epoch)."""

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.generator.manual_seed(self._seed * 1_000_003 + epoch)
        self._start_batch = int(start_batch)

    def __iter__(self):  # a resumed epoch skips its first batches (loaded, then dropped)
        return itertools.islice(super().__iter__(), getattr(self, "_start_batch", 0), None)


def _split_dir(root: Path, split: str) -> Path:
    aliases = {"train": ["train"], "val": ["val", "validation", "test"]}
    for name in aliases[split]:
        if (root / name).is_dir():
            return root / name
    has_splits = any((root / name).is_dir() for names in aliases.values() for name in names)
    if not has_splits and any(p.is_dir() for p in root.iterdir()):  # root is itself a split
        return root
    raise DatasetNotFoundError(f"no {split!r} folder in {root} (expected {root}/{split}/<class>/*.jpg)")


def image_folder_classes(root: str | os.PathLike) -> list[str]:
    """Class names (sorted sub-folders of the training split) of an ImageNet-layout folder, without
    listing the images."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist")
    return sorted(p.name for p in _split_dir(root, "train").iterdir() if p.is_dir())


def image_folder_loader(root: str | os.PathLike, train: bool = True, image_size: int = 224,
                        batch_size: int = 128, num_workers: int | None = None,
                        resize: int | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD, subset: int | None = None, seed: int = 0,
                        rank: int | None = None, world_size: int | None = None,
                        pin_memory: bool | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader over an ImageNet-layout folder (``root/train/<class>/*.jpg``, ``root/val/...``).

    Images are resized so the shorter side is ``resize`` (default ``image_size * 256 / 224``, the paper's
    256 for 224), then cropped to ``image_size``: a random crop plus random horizontal flip for training
    (the paper's augmentation), the centre crop otherwise. ``loader.dataset.classes`` lists the classes.
    Rank and world size default to the torchrun environment; the loader has ``set_epoch`` like
    :class:`DeviceLoader`.
    """
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist")
    folder = _split_dir(root, "train" if train else "val")
    resize = resize or round(image_size * 256 / 224)
    ops = [T.Resize(resize)]
    ops += [T.RandomCrop(image_size), T.RandomHorizontalFlip()] if train else [T.CenterCrop(image_size)]
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    ds = tvd.ImageFolder(str(folder), transform=T.Compose(ops))
    classes, n_images = ds.classes, len(ds)
    if subset is not None and subset < n_images:
        idx = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed))[:subset].sort().values
        ds = torch.utils.data.Subset(ds, idx.tolist())
        ds.classes = classes
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=train,
                                                  seed=seed, drop_last=False)
    if num_workers is None:
        num_workers = min(8, max(0, (os.cpu_count() or 1) - 1))
    loader = _EpochDataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                              drop_last=train and len(ds) > batch_size * world_size,
                              pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                              persistent_workers=num_workers > 0,
                              generator=torch.Generator().manual_seed(seed))
    loader._seed = seed
    loader.classes, loader.mean, loader.std = classes, tuple(mean), tuple(std)
    return loader
