"""alexnet_lib.augment: fancy PCA, random crop + flip on batches, ten-crop test-time averaging."""

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

from alexnet_lib.augment import (
    IMAGENET_PCA_EIGVAL,
    IMAGENET_PCA_EIGVEC,
    FancyPCA,
    RandomCropFlip,
    illuminate,
    num_translations,
    random_illumination,
    rgb_pca,
    ten_crop_predict,
    ten_crops,
)


def _pixels_with_cov(cov: torch.Tensor, n: int = 20000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return z @ torch.linalg.cholesky(cov).T + torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64)


KNOWN_COV = torch.tensor([[0.060, 0.050, 0.040],
                          [0.050, 0.058, 0.045],
                          [0.040, 0.045, 0.055]], dtype=torch.float64)


def test_paper_factor_2048():
    assert num_translations(256, 224) == 2048
    assert num_translations(256, 224, inclusive=True) == 33 * 33 * 2
    assert num_translations(256, 224, flips=False) == 1024
    with pytest.raises(ValueError):
        num_translations(200, 224)


def test_rgb_pca_matches_torch_linalg():
    pixels = _pixels_with_cov(KNOWN_COV)
    eigvals, eigvecs = rgb_pca(pixels)
    assert eigvals.shape == (3,) and eigvecs.shape == (3, 3) and eigvals.dtype == torch.float32
    sample_cov = torch.cov(pixels.T)
    ref_vals, ref_vecs = torch.linalg.eigh(sample_cov)
    torch.testing.assert_close(eigvals.double(), ref_vals.flip(0), rtol=1e-5, atol=1e-7)
    # Same eigenvectors up to sign.
    dots = (eigvecs.double() * ref_vecs.flip(1)).sum(0).abs()
    torch.testing.assert_close(dots, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-5)
    # V diag(l) V^T rebuilds the covariance; orthonormal columns; descending; close to the true covariance.
    rebuilt = eigvecs.double() @ torch.diag(eigvals.double()) @ eigvecs.double().T
    torch.testing.assert_close(rebuilt, sample_cov, rtol=0, atol=1e-6)
    torch.testing.assert_close(eigvecs.T @ eigvecs, torch.eye(3), rtol=0, atol=1e-5)
    assert eigvals[0] >= eigvals[1] >= eigvals[2] >= 0
    true_vals = torch.linalg.eigvalsh(KNOWN_COV).flip(0)
    torch.testing.assert_close(eigvals.double(), true_vals, rtol=0.05, atol=1e-3)


def test_rgb_pca_accepts_images_and_lists():
    pixels = _pixels_with_cov(KNOWN_COV, n=64 * 64).float()
    images = pixels.T.reshape(3, 64, 64)
    a = rgb_pca(pixels)
    b = rgb_pca(images)
    c = rgb_pca([images[:, :32], images[:, 32:]])  # two images of their own sizes, same pixels
    for other in (b, c):
        torch.testing.assert_close(other[0], a[0])
        torch.testing.assert_close(other[1], a[1])
    with pytest.raises(ValueError):
        rgb_pca(torch.rand(2, 4, 8, 8))


def test_fancy_pca_zero_alpha_is_identity():
    x = torch.rand(5, 3, 8, 9)
    pca = FancyPCA(IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC)
    assert torch.equal(pca(x, alpha=torch.zeros(3)), x)
    assert torch.equal(FancyPCA(std=0.0)(x), x)


def test_fancy_pca_shift_is_constant_and_in_eigvec_span():
    eigvals, eigvecs = rgb_pca(_pixels_with_cov(KNOWN_COV))
    pca = FancyPCA(eigvals, eigvecs, std=0.1, generator=torch.Generator().manual_seed(0))
    x = torch.rand(6, 3, 7, 7)
    shift = pca(x) - x
    # One RGB shift per image, the same at every pixel.
    per_image = shift[:, :, :1, :1]
    torch.testing.assert_close(shift, per_image.expand_as(shift))
    # The shift's coordinates in the eigenbasis are alpha_i * lambda_i, with alpha the seeded N(0, 0.1) draws.
    rgb = per_image.flatten(1)                      # (6, 3)
    coords = rgb @ eigvecs                          # (6, 3)
    torch.testing.assert_close(coords @ eigvecs.T, rgb, rtol=0, atol=1e-6)
    alpha = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)) * 0.1
    torch.testing.assert_close(coords, alpha * eigvals, rtol=1e-4, atol=1e-6)
    # An explicit alpha gives eigvecs @ (alpha * eigvals).
    alpha = torch.tensor([1.0, -2.0, 0.5])
    expected = eigvecs @ (alpha * eigvals)
    torch.testing.assert_close((pca(x, alpha=alpha) - x)[0, :, 0, 0], expected, rtol=1e-5, atol=1e-6)
    # With only the top eigenvalue non-zero, the shift is parallel to the first eigenvector.
    g = torch.Generator().manual_seed(1)
    top = FancyPCA(torch.tensor([1.0, 0.0, 0.0]), eigvecs, std=0.1, generator=g)
    rgb = (top(x) - x)[:, :, 0, 0]
    cross = torch.linalg.cross(rgb, eigvecs[:, 0].expand_as(rgb), dim=1)
    torch.testing.assert_close(cross, torch.zeros_like(cross), rtol=0, atol=1e-6)


def test_fancy_pca_seeded_single_image_and_v2_compose():
    make = lambda: FancyPCA(generator=torch.Generator().manual_seed(3))  # noqa: E731
    x = torch.rand(3, 16, 16)
    assert torch.equal(make()(x), make()(x))
    assert make()(x).shape == x.shape
    label = 7
    pipeline = v2.Compose([v2.RandomHorizontalFlip(p=1.0), make()])
    out, lab = pipeline(x, label)
    assert lab == label and out.shape == x.shape
    with pytest.raises(TypeError):
        make()(torch.zeros(3, 4, 4, dtype=torch.uint8))


def test_random_crop_flip_shapes_and_determinism():
    x = torch.rand(8, 3, 28, 28)
    aug = lambda seed: RandomCropFlip(28, padding=2, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = aug(0)(x), aug(0)(x), aug(1)(x)
    assert a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert RandomCropFlip(24)(x).shape == (8, 3, 24, 24)
    assert RandomCropFlip((20, 24))(x[0]).shape == (3, 20, 24)
    with pytest.raises(ValueError):
        RandomCropFlip(40)(x)


def test_random_crop_flip_matches_slicing():
    x = torch.arange(4 * 2 * 10 * 12, dtype=torch.float32).view(4, 2, 10, 12)
    aug = RandomCropFlip(6, padding=1, generator=torch.Generator().manual_seed(0))
    top, left, flip = aug.sample(4, 10, 12)
    aug.generator.manual_seed(0)
    out = aug(x)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(4):
        ref = padded[i, :, top[i]:top[i] + 6, left[i]:left[i] + 6]
        if flip[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref)
    # Every flip happens, never one: the extreme probabilities.
    y = torch.rand(3, 1, 5, 5)
    assert torch.equal(RandomCropFlip(5, flip_p=1.0)(y), y.flip(-1))
    assert torch.equal(RandomCropFlip(5, flip_p=0.0)(y), y)
    # Eval mode: centre crop, no flip.
    assert torch.equal(RandomCropFlip(5, padding=3).eval()(y), y)


def test_ten_crop_equals_manual_average():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5))
    x = torch.randn(2, 3, 12, 14)
    crops = ten_crops(x, 8)
    assert crops.shape == (10, 2, 3, 8, 8)
    h, w, s = 12, 14, 8
    def five(img):  # corners then centre, as the paper describes (torchvision's order)
        t, l = (h - s) // 2, (w - s) // 2
        return [img[..., :s, :s], img[..., :s, w - s:], img[..., h - s:, :s], img[..., h - s:, w - s:],
                img[..., t:t + s, l:l + s]]

    manual = five(x) + five(x.flip(-1))
    for i in range(10):
        assert torch.equal(crops[i], manual[i])
    with torch.no_grad():
        by_hand = torch.stack([model(c).softmax(-1) for c in manual]).mean(0)
    model.train()
    probs, per_crop = ten_crop_predict(model, x, 8, return_all=True)
    assert model.training  # mode restored
    assert probs.shape == (2, 5) and per_crop.shape == (10, 2, 5)
    torch.testing.assert_close(probs, by_hand)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    torch.testing.assert_close(ten_crop_predict(model, x, 8, batch_size=3), probs)


def test_bad_augmentation_arguments_are_refused():
    with pytest.raises(ValueError, match=r"crop_size \(40, 40\) is larger than the images \(32, 32\)"):
        ten_crops(torch.zeros(2, 3, 32, 32), 40)
    with pytest.raises(ValueError, match="std must be >= 0"):
        FancyPCA(std=-0.1)
    with pytest.raises(ValueError, match="flip_p must be <= 1"):
        RandomCropFlip(28, flip_p=1.5)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        RandomCropFlip(28, padding=-2)
    crop = RandomCropFlip(40).eval()  # eval mode used to return garbage offsets for a too-large crop
    with pytest.raises(ValueError, match=r"crop \(40, 40\) is larger than the padded image \(32, 32\)"):
        crop(torch.zeros(1, 3, 32, 32))


def test_fancy_pca_norm_std_equals_augmenting_before_normalising():
    eigvals, eigvecs = rgb_pca(_pixels_with_cov(KNOWN_COV))
    mean = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)
    sigma = torch.tensor([0.25, 0.2, 0.3])
    x = torch.rand(4, 3, 6, 6)
    alpha = torch.randn(4, 3, generator=torch.Generator().manual_seed(2)) * 0.1
    before = (FancyPCA(eigvals, eigvecs)(x, alpha=alpha) - mean) / sigma.view(3, 1, 1)
    pca = FancyPCA(eigvals, eigvecs, norm_std=sigma)
    after = pca((x - mean) / sigma.view(3, 1, 1), alpha=alpha)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pca.shift(alpha), FancyPCA(eigvals, eigvecs).shift(alpha) / sigma)
    assert "norm_std=(0.25, 0.2, 0.3)" in repr(pca)
    # Seeded draws are the same with and without norm_std: only the scale of the shift changes.
    a = FancyPCA(eigvals, eigvecs, generator=torch.Generator().manual_seed(0))(torch.zeros(2, 3, 1, 1))
    b = FancyPCA(eigvals, eigvecs, generator=torch.Generator().manual_seed(0), norm_std=sigma)(
        torch.zeros(2, 3, 1, 1))
    torch.testing.assert_close(b, a / sigma.view(3, 1, 1))
    with pytest.raises(ValueError, match="norm_std must be > 0"):
        FancyPCA(norm_std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match=r"norm_std must have shape \(3,\)"):
        FancyPCA(norm_std=(0.2, 0.2))
    with pytest.raises(TypeError, match="norm_std must be three numbers"):
        FancyPCA(norm_std="0.2")


def test_illuminate_multiplies_adds_and_clamps():
    grey = torch.tensor([0, 100, 200, 255], dtype=torch.uint8).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    gain = torch.tensor([[1.0, 0.5, 2.0], [0.0, 1.0, 1.0]])
    offset = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.0, 1.0]])
    out = illuminate(grey, gain, offset)
    assert out.shape == (2, 3, 2, 2) and out.dtype == torch.uint8
    g = grey.float() / 255
    expected = (g * gain.view(2, 3, 1, 1) + offset.view(2, 3, 1, 1)).clamp(0, 1)
    assert torch.equal(out, (expected * 255).round().to(torch.uint8))
    assert out[0, :, 0, 0].tolist() == [0, 0, 0]        # a black pixel stays black under any gain
    assert out[1, 2].eq(255).all() and out[1, 0].eq(51).all()  # added light reaches every pixel
    # White light without added light leaves the image unchanged; floats stay floats.
    x = torch.rand(3, 3, 4, 4)
    torch.testing.assert_close(illuminate(x, torch.ones(3)), x)
    assert illuminate(x.double(), torch.ones(3)).dtype == torch.float64
    # A grey image under coloured light: each channel is the grey image times its gain.
    y = illuminate(x[:, :1], (0.2, 0.4, 0.6))
    torch.testing.assert_close(y, x[:, :1] * torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1))


def test_illuminate_refuses_bad_arguments():
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(TypeError, match="images must be a tensor"):
        illuminate([[0.5]], torch.ones(3))
    with pytest.raises(ValueError, match="images must have shape"):
        illuminate(torch.rand(2, 2, 4, 4), torch.ones(3))
    with pytest.raises(TypeError, match="images must be uint8"):
        illuminate(torch.zeros(2, 1, 4, 4, dtype=torch.int64), torch.ones(3))
    with pytest.raises(ValueError, match=r"gain must have shape \(3,\) or \(2, 3\)"):
        illuminate(x, torch.ones(3, 3))
    with pytest.raises(ValueError, match="gain must be >= 0"):
        illuminate(x, (1.0, -0.1, 1.0))
    with pytest.raises(ValueError, match="offset must be finite"):
        illuminate(x, torch.ones(3), (0.0, float("nan"), 0.0))
    with pytest.raises(TypeError, match="gain must be three numbers"):
        illuminate(x, "white")


def test_random_illumination_draws_and_checks():
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    gain, offset = random_illumination(1000, intensity=(0.3, 0.6), cast=0.0, generator=g())
    assert gain.shape == offset.shape == (1000, 3)
    assert torch.equal(gain[:, :1].expand(-1, 3), gain)              # cast 0: white light
    assert gain.min() >= 0.3 and gain.max() <= 0.6 and torch.equal(offset, torch.zeros(1000, 3))
    gain2, offset2 = random_illumination(1000, intensity=(0.3, 0.6), cast=0.0, generator=g())
    assert torch.equal(gain, gain2) and torch.equal(offset, offset2)  # seeded
    gain, offset = random_illumination(4000, cast=0.3, ambient=0.2, ambient_cast=0.0, generator=g())
    log_ratio = (gain[:, 0] / gain[:, 1]).log()                       # = 0.3 (z_R - z_G): std 0.3 * sqrt(2)
    assert abs(log_ratio.std().item() - 0.3 * 2 ** 0.5) < 0.03
    assert torch.equal(offset[:, :1].expand(-1, 3), offset)          # grey added light
    assert offset.min() >= 0 and offset.max() <= 0.2
    with pytest.raises(ValueError, match="intensity\\[1\\] must be >= 0.8"):
        random_illumination(5, intensity=(0.8, 0.5))
    with pytest.raises(TypeError, match="intensity must be a pair"):
        random_illumination(5, intensity=0.8)
    with pytest.raises(ValueError, match="cast must be >= 0"):
        random_illumination(5, cast=-1)
    with pytest.raises(TypeError, match="n must be an integer"):
        random_illumination(2.5)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        random_illumination(5, generator=0)
