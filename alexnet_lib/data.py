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
import numbers
import os
import pickle
import shutil
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .checks import boolean, integer, number, optional_integer

__all__ = [
    "DATASETS",
    "CorruptImageError",
    "DatasetCorruptError",
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


class DatasetCorruptError(DatasetNotFoundError):
    """A dataset file is on disk but corrupt or truncated (a :class:`DatasetNotFoundError`, so code that
    handles a missing dataset handles a damaged one too). The message names the file and how to fix it."""


class CorruptImageError(OSError):
    """An image file of an image folder cannot be decoded (corrupt, truncated or not an image)."""


def _path(value, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or pathlib.Path), got {value!r:.80} "
                        f"({type(value).__name__})")
    return Path(value).expanduser()


def _stats(mean, std, channels: int, where: str = "") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std: one value per channel (or one for all), std > 0."""
    out = []
    for name, values in (("mean", mean), ("std", std)):
        if isinstance(values, numbers.Real) and not isinstance(values, bool):
            values = (values,)
        elif hasattr(values, "tolist") and hasattr(values, "reshape"):  # a tensor or numpy array
            values = tuple(values.reshape(-1).tolist())
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"{name} must be a sequence of numbers, one per channel, got {values!r:.80}; "
                            f"e.g. {name}={(0.5,) * channels}")
        if len(values) not in (1, channels):
            raise ValueError(f"{name} has {len(values)} values but {where or 'the images'} have {channels} "
                             f"channel(s); give {channels} value(s) (one per channel) or 1 for all")
        out.append(tuple(number(v, f"{name}[{i}]", minimum=0 if name == "std" else None,
                                min_open=name == "std", hint="std must be > 0 (it divides)")
                         for i, v in enumerate(values)))
    return out[0], out[1]


def default_data_root() -> Path:
    """The directory all datasets live under: ``$ALEXNET_DATA``, else ``~/.cache/alexnet_lib/data``."""
    env = os.environ.get("ALEXNET_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "alexnet_lib" / "data"


def resolve_name(name: str) -> str:
    """Canonical dataset name ('fashion_mnist' -> 'fashion-mnist'); ValueError naming the valid ones."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a dataset name (str), got {name!r:.80} ({type(name).__name__}); "
                        f"choose from: {', '.join(DATASETS)}")
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
        if not isinstance(self.images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor (uint8, N x C x H x W), got "
                            f"{type(self.images).__name__}; convert with torch.as_tensor(images)")
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            shape = tuple(self.images.shape)
            raise ValueError(f"images must be uint8 (N, C, H, W), not {self.images.dtype} {shape}; "
                             "e.g. (x * 255).round().to(torch.uint8) for floats in [0, 1], x.unsqueeze(1) "
                             "for (N, H, W)")
        if len(self.images) == 0 or min(self.images.shape[1:]) < 1:
            raise ValueError(f"images is empty (shape {tuple(self.images.shape)}); a dataset needs at least "
                             "one image with at least one channel and pixel")
        if isinstance(self.classes, (str, bytes)) or not isinstance(self.classes, Sequence):
            raise TypeError(f"classes must be a list of class names, got {self.classes!r:.80}")
        if len(self.classes) == 0:
            raise ValueError("classes is empty; give one name per class, e.g. classes=['cat', 'dog']")
        self.classes = list(self.classes)
        labels = torch.as_tensor(self.labels)
        if labels.dim() != 1 or len(labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but labels of shape {tuple(labels.shape)}; "
                             f"labels needs one class index per image, shape ({len(self.images)},)")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be integer class indices, got {labels.dtype}; "
                            "convert with labels.long()")
        self.labels = labels.to(torch.int64)
        bad = (self.labels < 0) | (self.labels >= len(self.classes))
        if bad.any():
            values = self.labels[bad].unique()
            shown = ", ".join(map(str, values[:10].tolist())) + (", ..." if len(values) > 10 else "")
            raise ValueError(f"labels must be in range(len(classes)) = 0..{len(self.classes) - 1} "
                             f"({len(self.classes)} classes), but {int(bad.sum())} label(s) are not: "
                             f"{shown}; give one class name per label value, or fix the labels")
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r:.80}")
        self.mean, self.std = _stats(self.mean, self.std, self.images.shape[1])

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
        stays balanced. The chosen images keep their original order. ``n >= len(self)`` returns ``self``.
        """
        n = integer(n, "n", hint="the number of images to keep, e.g. n=1000")
        seed = integer(seed, "seed", minimum=0, hint="e.g. seed=0")
        boolean(stratified, "stratified")
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


def _idx_problem(path: Path) -> str | None:
    """Why an idx file (MNIST's format) is damaged, judged from its header, or None if its size fits."""
    size = path.stat().st_size
    head = path.read_bytes()[:4 + 4 * 4] if size >= 4 else b""
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
        return f"{size} bytes, not an idx file of unsigned bytes"
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        return f"{size} bytes, too short for its header"
    expected = 4 + 4 * ndim + math.prod(struct.unpack(f">{ndim}I", head[4:4 + 4 * ndim]))
    return None if size == expected else f"{size} bytes where its header promises {expected}"


def _damaged_files(key: str, root: Path) -> list[tuple[Path, str]]:
    """Files of dataset ``key`` under ``root`` that are present but corrupt or truncated, with the reason."""
    import torchvision.datasets as tvd
    from torchvision.datasets import cifar

    cls = getattr(tvd, DATASETS[key]["tv"])
    folder = root / DATASETS[key]["folder"]
    damaged = []
    if key == "cifar10":
        files = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
        for name, md5 in files:
            path = folder / name
            if not path.is_file():
                continue
            if not cifar.check_integrity(str(path), md5):
                damaged.append((path, "its md5 checksum differs from the published one"))
                continue
            try:
                with open(path, "rb") as f:
                    pickle.load(f, encoding="latin1")
            except Exception as exc:  # truncated pickles raise UnpicklingError, EOFError, ValueError ...
                damaged.append((path, f"it cannot be unpickled: {exc}"))
    else:
        for name, _md5 in cls.resources:
            path = folder / "raw" / name.removesuffix(".gz")
            if path.is_file():
                problem = _idx_problem(path)
                if problem:
                    damaged.append((path, problem))
    return damaged


def _corrupt(key: str, root: Path, damaged: list[tuple[Path, str]], err: Exception) -> DatasetCorruptError:
    listing = "\n".join(f"  {path}: {why}" for path, why in damaged)
    again = (f"it is re-extracted from the system copy in {SYSTEM_DATASET_DIRS[key][0]}"
             if key in SYSTEM_DATASET_DIRS
             else "torchvision downloads it again (download=True, needs internet)")
    return DatasetCorruptError(
        f"Dataset {key!r}: {'this file is' if len(damaged) == 1 else 'these files are'} corrupt or truncated "
        f"(an interrupted download or copy?):\n{listing}\n"
        f"Delete {'it' if len(damaged) == 1 else 'them'} and run again: {again}.\n"
        f"  ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
    )


def _torchvision_dataset(key: str, train: bool, root: Path, download: bool):
    import torchvision.datasets as tvd

    cls = getattr(tvd, DATASETS[key]["tv"])
    if key in SYSTEM_DATASET_DIRS:
        _install_system_copy(key, root)
    try:
        return cls(str(root), train=train, download=False)
    except Exception as exc:  # missing: RuntimeError; damaged: RuntimeError, UnpicklingError, EOFError, ...
        damaged = _damaged_files(key, root)
        if damaged:
            raise _corrupt(key, root, damaged, exc) from None
        if not isinstance(exc, RuntimeError):
            raise
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
    FileNotFoundError) saying where it looked and how to get the data when it is missing offline, and
    :class:`DatasetCorruptError` (one of those) naming the file when a file on disk is corrupt or truncated.
    """
    key = resolve_name(name)
    boolean(train, "train")
    boolean(download, "download")
    root = _path(root, "root") if root is not None else default_data_root()
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

def _device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device, int)) or isinstance(device, bool):
        raise TypeError(f"device must be a str or torch.device, got {device!r:.80}; e.g. device='cuda'")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device={device!r} is not a device PyTorch knows: {exc}. "
                         "Use e.g. 'cpu', 'cuda', 'cuda:1' or 'mps'") from None


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
        if not isinstance(data, ImageData):
            raise TypeError(f"data must be an ImageData (e.g. from load_dataset), got {type(data).__name__}")
        batch_size = integer(batch_size, "batch_size", hint="images per batch, e.g. batch_size=128")
        image_size = optional_integer(image_size, "image_size", hint="side in pixels, e.g. image_size=224")
        for flag, value in (("shuffle", shuffle), ("normalize", normalize), ("drop_last", drop_last),
                            ("channels_last", channels_last)):
            boolean(value, flag)
        if augment is not None and not callable(augment):
            raise TypeError("augment must be a callable on a float batch (e.g. RandomCropFlip(28, "
                            f"padding=2)) or None, got {augment!r:.80}")
        seed = integer(seed, "seed", minimum=0, hint="e.g. seed=0")
        world_size = integer(world_size, "world_size", hint="the number of processes, e.g. world_size=1")
        rank = integer(rank, "rank", minimum=0, maximum=world_size - 1,
                       hint=f"rank counts processes from 0 to world_size - 1 = {world_size - 1}")
        device = _device(device)
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.device = device
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
        """Shuffle for ``epoch``; the next pass starts at batch ``start_batch`` (a resumed epoch: the
        skipped batches are neither built nor augmented)."""
        self.epoch = integer(epoch, "epoch", minimum=0, hint="epochs count from 0")
        self.start_batch = integer(start_batch, "start_batch", minimum=0, hint="batches count from 0")

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
        order, start, self.start_batch = self._order(), self.start_batch, 0
        for b in range(start, len(self)):
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

    def __iter__(self):  # the next pass after set_epoch(e, k) skips k batches (loaded, then dropped)
        start, self._start_batch = getattr(self, "_start_batch", 0), 0
        return itertools.islice(super().__iter__(), start, None)


_SPLITS = {"train": ("train",), "val": ("val", "validation", "test")}


def _layout(root: Path) -> str:
    return f"{root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg"


def _split_dir(root: Path, split: str) -> Path:
    for name in _SPLITS[split]:
        if (root / name).is_dir():
            return root / name
    if not any((root / name).is_dir() for names in _SPLITS.values() for name in names):
        raise DatasetNotFoundError(
            f"{root} is not in the ImageNet folder layout: it has no train/ and no val/ folder. Expected "
            f"{_layout(root)} (val/ may be called validation/ or test/). Move the class folders into "
            f"{root}/train/ and hold some images of every class out in {root}/val/, so that the model is "
            "evaluated on images it did not train on.")
    raise DatasetNotFoundError(f"no {split!r} folder in {root} (expected {root}/{split}/<class>/*.jpg; "
                               f"the layout is {_layout(root)})")


def _class_dirs(folder: Path) -> list[str]:
    """Sorted class folder names (hidden folders such as .ipynb_checkpoints are not classes)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_folder_classes(root: str | os.PathLike) -> list[str]:
    """Class names (sorted sub-folders of the training split) of an ImageNet-layout folder, without
    listing the images. The labels of both splits are indices into this list."""
    root = _path(root, "root")
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist")
    classes = _class_dirs(_split_dir(root, "train"))
    if not classes:
        raise DatasetNotFoundError(f"{root}/train has no class folders; expected {_layout(root)}")
    return classes


def _load_image(path: str):
    """An image file as an RGB PIL image; :class:`CorruptImageError` naming the file if it cannot be read."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")  # convert() decodes the whole file
    except (OSError, SyntaxError, ValueError) as exc:  # PIL: UnidentifiedImageError, "... is truncated"
        raise CorruptImageError(
            f"cannot read image {path} ({type(exc).__name__}: {exc}); it is corrupt, truncated or not an "
            "image. Delete or replace it, or pass skip_corrupt=True to skip unreadable images.") from exc


def _unreadable(path: str) -> str | None:
    """Why the image at ``path`` cannot be decoded, or None. JPEGs are decoded at 1/8 scale (fast), which
    still reads every byte, so truncation is found."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (1, 1))
            im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class _FolderDataset(torch.utils.data.Dataset):
    """(image, label) pairs of one split; ``classes`` and the labels are the training split's."""

    def __init__(self, root: Path, samples: list[tuple[str, int]], classes: list[str], transform):
        self.root, self.samples, self.classes, self.transform = root, samples, classes, transform
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.targets = [label for _, label in samples]
        self.skipped: list[str] = []

    @property
    def imgs(self) -> list[tuple[str, int]]:  # the name torchvision's ImageFolder uses too
        return self.samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(_load_image(path)), label

    def __repr__(self) -> str:
        return f"_FolderDataset({str(self.root)!r}, images={len(self)}, classes={len(self.classes)})"


def _folder_dataset(root: Path, train: bool, transform, skip_corrupt: bool) -> _FolderDataset:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    classes = image_folder_classes(root)
    folder = _split_dir(root, "train" if train else "val")
    if not train:
        unknown = [c for c in _class_dirs(folder) if c not in classes]
        if unknown:
            raise ValueError(
                f"{folder} has class folder(s) {', '.join(map(repr, unknown))} that {root}/train does not "
                f"have; the model can only predict the {len(classes)} training classes. Add training images "
                "for them or remove them from the validation folder.")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    try:  # val may lack some training classes: its labels still index the training classes
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=not train)
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(f"{exc} (in {folder}; expected {_layout(root)})") from None
    if not samples:
        raise DatasetNotFoundError(f"no images in {folder} (extensions {', '.join(IMG_EXTENSIONS)}); "
                                   f"expected {_layout(root)}")
    skipped: list[tuple[str, str]] = []
    if skip_corrupt:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            problems = list(pool.map(_unreadable, [path for path, _ in samples]))
        skipped = [(path, why) for (path, _), why in zip(samples, problems) if why]
        samples = [sample for sample, why in zip(samples, problems) if not why]
        if skipped:
            first = "; ".join(f"{path} ({why})" for path, why in skipped[:3])
            warnings.warn(f"skipped {len(skipped)} corrupt or truncated image(s) of "
                          f"{len(samples) + len(skipped)} in {folder}: {first}"
                          f"{'; ...' if len(skipped) > 3 else ''}", stacklevel=3)
        if not samples:
            raise DatasetNotFoundError(f"every image in {folder} is unreadable (first: {skipped[0][0]})")
    ds = _FolderDataset(folder, samples, classes, transform)
    ds.skipped = [path for path, _ in skipped]
    return ds


def image_folder_loader(root: str | os.PathLike, train: bool = True, image_size: int = 224,
                        batch_size: int = 128, num_workers: int | None = None,
                        resize: int | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD, subset: int | None = None, seed: int = 0,
                        rank: int | None = None, world_size: int | None = None,
                        pin_memory: bool | None = None,
                        skip_corrupt: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over an ImageNet-layout folder (``root/train/<class>/*.jpg``, ``root/val/...``).

    Images are resized so the shorter side is ``resize`` (default ``image_size * 256 / 224``, the paper's
    256 for 224), then cropped to ``image_size``: a random crop plus random horizontal flip for training
    (the paper's augmentation), the centre crop otherwise. ``loader.classes`` (and
    ``loader.dataset.classes``) lists the training classes, and the labels of both splits index it:
    ``val/`` may lack some classes of ``train/`` (its labels are still the training indices), but a
    class in ``val/`` that ``train/`` lacks is a ``ValueError``. A folder without ``train/`` and ``val/``
    is refused with the expected layout.

    An unreadable image (corrupt, truncated, not an image) raises :class:`CorruptImageError` naming the
    file when a batch reaches it. ``skip_corrupt=True`` decodes every image once up front (JPEGs at 1/8
    scale, several threads), leaves out the unreadable ones, warns once with their count and the first
    paths, and lists them in ``loader.skipped``.

    Rank and world size default to the torchrun environment; the loader has ``set_epoch`` like
    :class:`DeviceLoader`.
    """
    import torchvision.transforms as T

    root = _path(root, "root")
    boolean(train, "train")
    image_size = integer(image_size, "image_size", hint="side of the crop in pixels, e.g. image_size=224")
    batch_size = integer(batch_size, "batch_size", hint="images per batch, e.g. batch_size=128")
    num_workers = optional_integer(num_workers, "num_workers", minimum=0, hint="0 loads in the main process")
    resize = optional_integer(resize, "resize", minimum=image_size,
                              hint=f"the shorter side before cropping must be >= image_size={image_size}")
    mean, std = _stats(mean, std, 3, "images read from a folder (RGB)")
    subset = optional_integer(subset, "subset", hint="the number of images to keep, e.g. subset=1000")
    seed = integer(seed, "seed", minimum=0, hint="e.g. seed=0")
    world_size = integer(int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size,
                         "world_size", hint="the number of processes, e.g. world_size=1")
    rank = integer(int(os.environ.get("RANK", 0)) if rank is None else rank, "rank", minimum=0,
                   maximum=world_size - 1, hint=f"ranks count from 0 to world_size - 1 = {world_size - 1}")
    if pin_memory is not None:
        boolean(pin_memory, "pin_memory")
    boolean(skip_corrupt, "skip_corrupt")
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist")
    resize = resize or round(image_size * 256 / 224)
    ops = [T.Resize(resize)]
    ops += [T.RandomCrop(image_size), T.RandomHorizontalFlip()] if train else [T.CenterCrop(image_size)]
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    ds = _folder_dataset(root, train, T.Compose(ops), skip_corrupt)
    classes, skipped, n_images = ds.classes, ds.skipped, len(ds)
    if subset is not None and subset < n_images:
        idx = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed))[:subset].sort().values
        ds = torch.utils.data.Subset(ds, idx.tolist())
        ds.classes = classes
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
    loader.classes, loader.mean, loader.std, loader.skipped = classes, tuple(mean), tuple(std), skipped
    return loader
