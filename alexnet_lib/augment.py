"""The paper's data augmentation (Section 4.1) and test-time ten-crop averaging, on tensors.

Krizhevsky, Sutskever & Hinton (2012) enlarge the training set in two label-preserving ways:

1. random 224x224 patches of the 256x256 training images and their horizontal reflections;
2. "fancy PCA" colour augmentation: to every pixel of an image add
   ``[p1, p2, p3] @ [a1*l1, a2*l2, a3*l3]``, where ``p_i, l_i`` are the eigenvectors and eigenvalues
   of the 3x3 covariance of RGB pixel values over the training set and ``a_i ~ N(0, 0.1^2)`` (a Gaussian
   with standard deviation 0.1) is drawn once per image (per presentation of the image).

At test time the network averages its softmax over ten 224x224 patches: the four corners and the centre
of the image, and their horizontal reflections.

Everything here works on float tensors on any device:

* :func:`rgb_pca` -- eigenvalues/eigenvectors of the RGB covariance of a set of images or pixels.
* :class:`FancyPCA` -- an ``nn.Module`` that adds the PCA colour shift to a batch ``(N, 3, H, W)`` or one
  image ``(3, H, W)``; usable inside ``torchvision.transforms.v2.Compose``.
* :class:`RandomCropFlip` -- a random crop (after optional zero padding) plus random horizontal flip with
  per-sample offsets, vectorised for a whole batch on the device (pass it as ``augment=`` to
  :class:`alexnet_lib.data.DeviceLoader` / ``fit``).
* :func:`ten_crop_predict` -- the paper's ten-patch test-time averaging.
* :func:`num_translations` -- the count behind the paper's "factor of 2048".
* :func:`illuminate`, :func:`random_illumination` -- render grey (or RGB) images under a per-image light
  of random intensity and colour, for experiments on what colour augmentation buys.

The widely used ImageNet constants :data:`IMAGENET_PCA_EIGVAL` / :data:`IMAGENET_PCA_EIGVEC` are those of
fb.resnet.torch (``datasets/imagenet.lua``: "Computed from random subset of ImageNet training images",
pixel values in [0, 1]); the columns of the eigenvector matrix are the eigenvectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .arithmetic import _module, _size
from .checks import boolean, integer, number, optional_integer
from .layers import eval_mode

__all__ = [
    "IMAGENET_PCA_EIGVAL",
    "IMAGENET_PCA_EIGVEC",
    "FancyPCA",
    "RandomCropFlip",
    "illuminate",
    "num_translations",
    "random_illumination",
    "rgb_pca",
    "ten_crop_predict",
    "ten_crops",
]

# fb.resnet.torch, datasets/imagenet.lua (pixel values in [0, 1]). Columns of the matrix are eigenvectors.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def num_translations(image_size: int = 256, crop_size: int = 224, flips: bool = True,
                     inclusive: bool = False) -> int:
    """How many distinct training patches random crops (and flips) give.

    The paper counts ``(256 - 224)`` offsets per axis: 32 * 32 * 2 = 2048 ("a factor of 2048").
    Strictly, offsets 0..32 are all valid, 33 per axis: ``inclusive=True`` gives 33 * 33 * 2 = 2178.
    """
    image_size = integer(image_size, "image_size", hint="e.g. image_size=256")
    crop_size = integer(crop_size, "crop_size", hint="e.g. crop_size=224")
    boolean(flips, "flips")
    boolean(inclusive, "inclusive")
    if crop_size > image_size:
        raise ValueError(f"crop_size {crop_size} is larger than image_size {image_size}; "
                         "a crop must fit inside the image")
    per_axis = image_size - crop_size + (1 if inclusive else 0)
    return per_axis * per_axis * (2 if flips else 1)


def rgb_pca(images: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, shape (3,)) and eigenvectors (columns, shape (3, 3)) of the RGB covariance.

    ``images`` is a float tensor ``(N, 3, H, W)`` or ``(3, H, W)``, a pixel matrix ``(P, 3)``, or a list of
    such tensors (images of different sizes); every pixel counts once. The covariance is computed in
    float64 and the result returned as float32 on the input's device. Eigenvalues are in the squared units
    of the pixels (use [0, 1] pixels to compare with :data:`IMAGENET_PCA_EIGVAL`). An eigenvector's sign
    is arbitrary (``alpha`` is symmetric about 0); it is fixed here so that each eigenvector's
    largest-magnitude component is positive, which makes the output reproducible.
    """
    if isinstance(images, torch.Tensor):
        images = [images]
    elif not isinstance(images, Sequence) or isinstance(images, str):
        raise TypeError(f"images must be a tensor or a list of tensors, got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError("images is an empty list; give at least one image (3, H, W) or batch (N, 3, H, W)")
    pixels = []
    for img in images:
        img = torch.as_tensor(img)
        if img.dim() == 2 and img.shape[1] == 3:
            pixels.append(img)
        elif img.dim() in (3, 4) and img.shape[-3] == 3:
            pixels.append(img.movedim(-3, -1).reshape(-1, 3))
        else:
            raise ValueError(f"images must be RGB data of shape (N, 3, H, W), (3, H, W) or (P, 3), got "
                             f"{tuple(img.shape)}")
    device = pixels[0].device
    x = torch.cat([p.to(device=device, dtype=torch.float64) for p in pixels])
    if len(x) < 2:
        raise ValueError("need at least two pixels to estimate a covariance")
    cov = torch.cov(x.T)
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    eigvals, eigvecs = eigvals.flip(0).clamp_min(0), eigvecs.flip(1)
    idx = eigvecs.abs().argmax(0)
    sign = torch.sign(eigvecs[idx, torch.arange(3, device=device)])
    eigvecs = eigvecs * sign
    return eigvals.float(), eigvecs.float()


def _generator(generator):
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {generator!r:.60} "
                        f"({type(generator).__name__}); e.g. generator=torch.Generator().manual_seed(0)")
    return generator


def _rgb_vector(value, name: str, *, positive: bool = False, rows: int | None = None,
                hint: str = "") -> torch.Tensor:
    """``value`` as a finite float32 tensor of shape (3,) (or (rows, 3) / (3,) when ``rows`` is given)."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise TypeError(f"{name} must be three numbers (R, G, B) or a tensor, got {value!r:.60}; {hint}")
    try:
        t = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be three numbers (R, G, B) or a tensor, got {value!r:.60} "
                        f"({type(value).__name__}); {hint}") from e
    shapes = [(3,)] + ([(rows, 3)] if rows is not None else [])
    if tuple(t.shape) not in shapes:
        want = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name} must have shape {want} (one value per RGB channel), got {tuple(t.shape)}; "
                         f"{hint}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {t.tolist()}; {hint}")
    if positive and (t <= 0).any():
        raise ValueError(f"{name} must be > 0, got {t.tolist()}; {hint}")
    if not positive and (t < 0).any():
        raise ValueError(f"{name} must be >= 0, got {t.tolist()}; {hint}")
    return t


def illuminate(images: torch.Tensor, gain, offset=None) -> torch.Tensor:
    """Images seen under a per-image light: ``clamp(images * gain + offset, 0, 1)``, channel by channel.

    A minimal model of illumination, for experiments on what colour augmentation buys (chapter 5).
    ``images`` are uint8 (0..255) or float in [0, 1], shape ``(N, C, H, W)`` with ``C = 1`` (grey, used
    for all three channels) or ``C = 3``; their values play the part of the objects' reflectance.
    ``gain`` ((3,) or (N, 3), >= 0) is the light falling on the object, per channel: its intensity and its
    colour multiply what the object reflects, so a black pixel stays black. ``offset`` ((3,) or (N, 3),
    >= 0, default none) is light added to every pixel whatever the object reflects (ambient or veiling
    light, on the [0, 1] scale); this part is a constant colour per image, the kind of change that fancy
    PCA adds. Returns RGB images ``(N, 3, H, W)``: uint8 (rounded) for uint8 input, else float.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, 1, H, W) (grey) or (N, 3, H, W) (RGB), got "
                         f"{tuple(images.shape)}; add axes with images.unsqueeze(1) for (N, H, W)")
    if images.dtype != torch.uint8 and not torch.is_floating_point(images):
        raise TypeError(f"images must be uint8 (0..255) or float in [0, 1], got {images.dtype}")
    n = images.shape[0]
    hint = "e.g. gain=torch.ones(3) for white light; see random_illumination"
    gain = _rgb_vector(gain, "gain", rows=n, hint=hint).reshape(-1, 3)
    if offset is None:
        offset = torch.zeros(1, 3)
    else:
        hint = "e.g. offset=(0.1, 0.1, 0.1) for grey added light; see random_illumination"
        offset = _rgb_vector(offset, "offset", rows=n, hint=hint).reshape(-1, 3)
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    dev = x.device
    out = (x * gain.to(dev).view(-1, 3, 1, 1) + offset.to(dev).view(-1, 3, 1, 1)).clamp(0, 1)
    if images.dtype == torch.uint8:
        return (out * 255).round().to(torch.uint8)
    return out.to(images.dtype)


def random_illumination(n: int, intensity: tuple[float, float] = (0.8, 1.0), cast: float = 0.05,
                        ambient: float = 0.0, ambient_cast: float = 0.0,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random lights for :func:`illuminate`: ``(gain, offset)``, each of shape (n, 3).

    ``gain = s * exp(cast * z)`` with ``s ~ U(intensity)`` and ``z ~ N(0, I)`` per channel: a light of
    random intensity whose colour departs from white by a log-normal factor per channel (``cast=0``:
    white light). ``offset = a * exp(ambient_cast * z')`` with ``a ~ U(0, ambient)``: light of random
    level and colour added to every pixel (``ambient=0``: none). ``generator`` makes the draws
    reproducible.
    """
    n = integer(n, "n", hint="the number of images, e.g. n=1000")
    if (isinstance(intensity, (str, bytes)) or not hasattr(intensity, "__len__")
            or len(intensity) != 2):
        raise TypeError(f"intensity must be a pair (low, high), got {intensity!r:.60}; "
                        "e.g. intensity=(0.8, 1.0)")
    low = number(intensity[0], "intensity[0]", minimum=0, hint="e.g. intensity=(0.8, 1.0)")
    high = number(intensity[1], "intensity[1]", minimum=low,
                  hint="intensity is (low, high) with low <= high, e.g. (0.8, 1.0)")
    cast = number(cast, "cast", minimum=0, hint="the std of the log colour factors, e.g. cast=0.05")
    ambient = number(ambient, "ambient", minimum=0, hint="the largest added light level, e.g. ambient=0.3")
    ambient_cast = number(ambient_cast, "ambient_cast", minimum=0,
                          hint="the std of the log colour factors of the added light, e.g. 0.5")
    _generator(generator)
    s = low + (high - low) * torch.rand(n, 1, generator=generator)
    gain = s * torch.exp(cast * torch.randn(n, 3, generator=generator))
    a = ambient * torch.rand(n, 1, generator=generator)
    offset = a * torch.exp(ambient_cast * torch.randn(n, 3, generator=generator))
    return gain, offset


class FancyPCA(nn.Module):
    """The paper's PCA colour augmentation: ``x + eigvecs @ (alpha * eigvals)``, ``alpha ~ N(0, std^2)``.

    One ``alpha`` (3 numbers) is drawn per image and the same RGB shift is added to every pixel of it.
    Works on a float batch ``(N, 3, H, W)`` or a single image ``(3, H, W)`` on any device (the eigen-pairs
    are buffers and follow the input's device). Extra positional inputs (labels, as passed by
    ``torchvision.transforms.v2.Compose`` when it is called with several inputs) are returned unchanged,
    so it can sit inside ``v2.Compose``. ``alpha`` may be given explicitly (shape (3,) or (N, 3)), which
    is what the widgets use. ``generator`` (a CPU ``torch.Generator``) makes the draws reproducible; they
    are made on the CPU and moved, so a seed gives the same shifts on every device.

    Which pixels to compute the eigen-pairs on (the recommended variant): the RGB pixels themselves,
    *not* per-channel normalised ones, on the [0, 1] scale. The paper performs PCA "on the set of RGB
    pixel values" and trains on pixels from which only the training set's mean activity is subtracted,
    with no division by a standard deviation; so its principal components are those of unscaled RGB
    values, and its shift is added to them. So: ``rgb_pca`` on [0, 1] images, and ``FancyPCA`` applied
    to [0, 1] images before ``Normalize``; or, on
    batches already normalised as ``(x - mean) / sigma`` (``DeviceLoader``/``fit(augment=...)``), pass
    ``norm_std=sigma``, which divides the shift by ``sigma`` per channel and so adds exactly the same
    augmentation. Computing the eigen-pairs on normalised pixels instead is a different augmentation:
    their covariance is ``D^-1 Sigma D^-1`` with ``D = diag(sigma)``, whose eigenvectors are not the
    paper's principal components (unless the three sigmas are equal) and whose eigenvalues, variances,
    grow by about ``1/sigma^2`` while the image grows by ``1/sigma``: the shift relative to the image is
    about ``1/sigma`` times larger (about 4.4 times for ImageNet's sigma of about 0.23). The shift is in
    the eigenvalues' squared units times ``alpha``, so the strength also depends on the pixel scale: on
    0..255 pixels the same ``std`` gives a shift 255 times larger relative to the image. The paper does
    not state the numerical scale of its pixels; [0, 1] is the convention of the common
    reimplementations (fb.resnet.torch, whose constants are :data:`IMAGENET_PCA_EIGVAL` /
    :data:`IMAGENET_PCA_EIGVEC`).
    """

    def __init__(self, eigvals=IMAGENET_PCA_EIGVAL, eigvecs=IMAGENET_PCA_EIGVEC, std: float = 0.1,
                 generator: torch.Generator | None = None, norm_std=None):
        std = number(std, "std", minimum=0, hint="the std of each random alpha; the paper's is 0.1")
        _generator(generator)
        if norm_std is not None:
            norm_std = _rgb_vector(norm_std, "norm_std", positive=True,
                                   hint="the per-channel std the batches were normalised with, "
                                        "e.g. norm_std=IMAGENET_STD")
        eigvals = torch.as_tensor(eigvals, dtype=torch.float32)
        eigvecs = torch.as_tensor(eigvecs, dtype=torch.float32)
        if eigvals.numel() != 3 or eigvecs.numel() != 9:
            raise ValueError(f"eigvals must hold 3 values and eigvecs a 3x3 matrix (RGB), got shapes "
                             f"{tuple(eigvals.shape)} and {tuple(eigvecs.shape)}; compute them with rgb_pca")
        if not torch.isfinite(eigvals).all() or (eigvals < 0).any():
            raise ValueError(f"eigvals must be finite and >= 0 (a covariance's eigenvalues), got "
                             f"{eigvals.tolist()}")
        eigvals, eigvecs = eigvals.reshape(3), eigvecs.reshape(3, 3)
        super().__init__()
        self.register_buffer("eigvals", eigvals.clone())
        self.register_buffer("eigvecs", eigvecs.clone())
        self.register_buffer("norm_std", None if norm_std is None else norm_std.clone())
        self.std = float(std)
        self.generator = generator

    def sample_alpha(self, n: int) -> torch.Tensor:
        """``n`` draws of alpha ~ N(0, std^2), shape (n, 3), on the CPU."""
        n = integer(n, "n", hint="the number of images, e.g. n=128")
        return torch.randn(n, 3, generator=self.generator) * self.std

    def shift(self, alpha: torch.Tensor) -> torch.Tensor:
        """The RGB shift(s) that ``forward`` adds for ``alpha`` of shape (3,) or (N, 3):
        ``eigvecs @ (alpha * eigvals)``, divided by ``norm_std`` when it is set."""
        alpha = torch.as_tensor(alpha, dtype=torch.float32, device=self.eigvals.device)
        rgb = (alpha * self.eigvals) @ self.eigvecs.T
        return rgb if self.norm_std is None else rgb / self.norm_std

    def forward(self, x: torch.Tensor, *rest, alpha: torch.Tensor | None = None):
        single = x.dim() == 3
        if x.dim() not in (3, 4) or x.shape[-3] != 3:
            raise ValueError(f"FancyPCA expects RGB images (N, 3, H, W) or (3, H, W), got {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise TypeError(f"FancyPCA expects float images, got {x.dtype}; convert with .float() / 255")
        n = 1 if single else x.shape[0]
        if alpha is None:
            alpha = self.sample_alpha(n)
        alpha = torch.as_tensor(alpha, dtype=torch.float32).reshape(-1, 3).expand(n, 3)
        rgb = self.shift(alpha.to(self.eigvals.device))  # (n, 3)
        rgb = rgb.to(device=x.device, dtype=x.dtype).view(n, 3, 1, 1)
        out = x + (rgb[0] if single else rgb)
        if hasattr(x, "as_subclass") and type(x) is not torch.Tensor:  # keep tv_tensors.Image etc.
            out = out.as_subclass(type(x))
        return (out, *rest) if rest else out

    def extra_repr(self) -> str:
        vals = ", ".join(f"{v:.4g}" for v in self.eigvals.tolist())
        norm = "" if self.norm_std is None else ", norm_std=(" + ", ".join(
            f"{v:.4g}" for v in self.norm_std.tolist()) + ")"
        return f"eigvals=({vals}), std={self.std}{norm}"


class RandomCropFlip(nn.Module):
    """Random ``size`` crops (after zero ``padding``) and random horizontal flips of a whole batch at once.

    Every image of the batch gets its own offset and its own coin for the flip (probability ``flip_p``).
    Works on float batches ``(N, C, H, W)`` on any device: the offsets are drawn on the CPU (with
    ``generator`` if given, so a seed gives the same crops everywhere) and the crop is two ``gather``
    calls, with no Python loop over the images. With ``padding=p`` and ``size`` equal to the image size
    this is the usual "pad by p, random crop, flip" augmentation of small images; with 256 px images and
    ``size=224`` it is the paper's.

    Padding uses ``fill`` (0 by default: on normalised images, 0 is the dataset mean). Call ``.eval()``
    to make it the identity (centre crop, no flip), so a model and its augmentation can switch together.
    """

    def __init__(self, size: int | tuple[int, int], padding: int = 0, flip_p: float = 0.5,
                 fill: float = 0.0, generator: torch.Generator | None = None):
        size = _size(size, "size")
        padding = integer(padding, "padding", minimum=0, hint="zero padding on each side, e.g. padding=4")
        flip_p = number(flip_p, "flip_p", minimum=0, maximum=1, hint="the probability of a flip, e.g. 0.5")
        fill = number(fill, "fill", hint="the padding value, e.g. fill=0.0")
        super().__init__()
        self.size, self.padding, self.flip_p, self.fill = size, padding, flip_p, fill
        self.generator = _generator(generator)

    def sample(self, n: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Offsets ``(top, left)`` into the padded images and flip flags, each of shape (n,), on the CPU."""
        n, height, width = integer(n, "n"), integer(height, "height"), integer(width, "width")
        ch, cw = self.size
        hp, wp = height + 2 * self.padding, width + 2 * self.padding
        if ch > hp or cw > wp:
            raise ValueError(f"crop {self.size} is larger than the padded image ({hp}, {wp})")
        top = torch.randint(0, hp - ch + 1, (n,), generator=self.generator)
        left = torch.randint(0, wp - cw + 1, (n,), generator=self.generator)
        flip = torch.rand(n, generator=self.generator) < self.flip_p
        return top, left, flip

    @staticmethod
    def crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
             size: tuple[int, int]) -> torch.Tensor:
        """Crop image ``i`` of ``x`` at ``(top[i], left[i])`` to ``size``, mirrored where ``flip[i]``."""
        n, c, h, w = x.shape
        ch, cw = size
        dev = x.device
        rows = top.to(dev).view(n, 1) + torch.arange(ch, device=dev).view(1, ch)        # (n, ch)
        cols = torch.arange(cw, device=dev).view(1, cw)
        cols = torch.where(flip.to(dev).view(n, 1), cw - 1 - cols, cols) + left.to(dev).view(n, 1)  # (n, cw)
        x = x.gather(2, rows.view(n, 1, ch, 1).expand(n, c, ch, w))
        return x.gather(3, cols.view(n, 1, 1, cw).expand(n, c, ch, cw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError(f"RandomCropFlip expects (N, C, H, W) or (C, H, W), got {tuple(x.shape)}")
        n, _, h, w = x.shape
        if self.size[0] > h + 2 * self.padding or self.size[1] > w + 2 * self.padding:
            padded = (h + 2 * self.padding, w + 2 * self.padding)
            raise ValueError(f"crop {self.size} is larger than the padded image {padded}; "
                             "use a smaller size or more padding")
        if not self.training:  # centre crop of the padded image, no flip
            top = torch.full((n,), (h + 2 * self.padding - self.size[0]) // 2)
            left = torch.full((n,), (w + 2 * self.padding - self.size[1]) // 2)
            flip = torch.zeros(n, dtype=torch.bool)
        else:
            top, left, flip = self.sample(n, h, w)
        if self.padding:
            p = self.padding
            x = F.pad(x, (p, p, p, p), mode="constant", value=self.fill)
        out = self.crop(x, top, left, flip, self.size)
        return out[0] if single else out

    def extra_repr(self) -> str:
        return f"size={self.size}, padding={self.padding}, flip_p={self.flip_p}, fill={self.fill}"


def ten_crops(images: torch.Tensor, crop_size: int | tuple[int, int]) -> torch.Tensor:
    """The paper's ten test patches of a batch ``(N, C, H, W)``: shape ``(10, N, C, h, w)``.

    Order (torchvision's ``ten_crop``): top-left, top-right, bottom-left, bottom-right, centre, then the
    same five of the horizontally flipped images.
    """
    from torchvision.transforms.v2 import functional as TF

    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images must be a tensor (N, C, H, W) or (C, H, W), got {shape}")
    size = list(_size(crop_size, "crop_size"))
    h, w = images.shape[-2:]
    if size[0] > h or size[1] > w:
        raise ValueError(f"crop_size {tuple(size)} is larger than the images ({h}, {w}); the ten crops must "
                         f"fit inside the image: use crop_size <= {min(h, w)} or larger images")
    return torch.stack(TF.ten_crop(images, size))


@torch.no_grad()
def ten_crop_predict(model: nn.Module, images: torch.Tensor, crop_size: int | tuple[int, int],
                     batch_size: int | None = None, softmax: bool = True,
                     return_all: bool = False) -> torch.Tensor:
    """Average the model's softmax over the ten patches of each image (Section 4.1, test time).

    ``images`` is a float batch ``(N, C, H, W)`` already on the model's device and normalised. Returns
    the mean probabilities ``(N, classes)`` (mean logits with ``softmax=False``); with ``return_all=True``
    also the per-patch outputs ``(10, N, classes)``. The model is put in eval mode for the call and its
    mode restored afterwards. ``batch_size`` bounds how many patches go through the model at once.
    """
    _module(model)
    batch_size = optional_integer(batch_size, "batch_size", hint="patches per forward pass, e.g. 256")
    boolean(softmax, "softmax")
    boolean(return_all, "return_all")
    if isinstance(images, torch.Tensor) and images.dim() != 4:
        raise ValueError(f"images must be a batch (N, C, H, W), got shape {tuple(images.shape)}; "
                         "add a batch axis with images.unsqueeze(0)")
    crops = ten_crops(images, crop_size)                       # (10, N, C, h, w)
    flat = crops.flatten(0, 1)
    step = batch_size or len(flat)
    with eval_mode(model):
        out = torch.cat([model(flat[i:i + step]).float() for i in range(0, len(flat), step)])
    out = out.view(10, len(images), -1)
    if softmax:
        out = out.softmax(-1)
    mean = out.mean(0)
    return (mean, out) if return_all else mean
