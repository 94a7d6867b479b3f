import pytest
import torch
from torch import nn

from alexnet_lib.layers import LocalResponseNorm, torch_lrn_equivalent


def lrn_by_formula(a, n=5, alpha=1e-4, beta=0.75, k=2.0):
    """b[i] = a[i] / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a[j]^2)^beta, written with loops."""
    N = a.shape[1]
    b = torch.empty_like(a)
    for i in range(N):
        lo, hi = max(0, i - n // 2), min(N - 1, i + n // 2)
        s = (a[:, lo:hi + 1] ** 2).sum(1)
        b[:, i] = a[:, i] / (k + alpha * s) ** beta
    return b


@pytest.mark.parametrize("shape", [(2, 7, 5, 4), (1, 96, 3, 3), (3, 4, 6)])
def test_lrn_matches_formula(shape):
    torch.manual_seed(0)
    a = torch.randn(*shape, dtype=torch.float64) * 30  # large enough that the denominator matters
    torch.testing.assert_close(LocalResponseNorm()(a), lrn_by_formula(a))
    # Other hyperparameters too.
    torch.testing.assert_close(LocalResponseNorm(size=3, alpha=0.01, beta=0.5, k=1.0)(a),
                               lrn_by_formula(a, n=3, alpha=0.01, beta=0.5, k=1.0))


def test_torch_lrn_divides_alpha_by_n():
    torch.manual_seed(0)
    a = torch.randn(2, 16, 8, 8, dtype=torch.float64) * 30
    ours = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)(a)
    torch.testing.assert_close(nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(a), ours)
    torch.testing.assert_close(torch_lrn_equivalent(5, 1e-4, 0.75, 2.0)(a), ours)
    # With the paper's alpha passed straight to torch, the result differs.
    assert not torch.allclose(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a), ours)


def test_lrn_gradients_and_bad_input():
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(LocalResponseNorm(alpha=0.1), (x,))
    with pytest.raises(ValueError, match="N, C"):
        LocalResponseNorm()(torch.randn(5, 5))


def test_eval_mode_restores_the_mode_even_on_error():
    from alexnet_lib.layers import eval_mode

    model = torch.nn.Sequential(torch.nn.Dropout(0.5))
    with eval_mode(model) as m:
        assert m is model and not model.training
    assert model.training
    model.eval()
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert not model.training
    model.train()
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training


def test_lrn_constants_are_checked():
    from alexnet_lib.layers import torch_lrn_equivalent

    for kwargs, match in [(dict(size=0), "size must be >= 1"), (dict(alpha=-1e-4), "alpha must be >= 0"),
                          (dict(beta=-0.75), "beta must be >= 0"), (dict(k=0), "k must be > 0")]:
        for make in (LocalResponseNorm, torch_lrn_equivalent):
            with pytest.raises(ValueError, match=match):
                make(**kwargs)
    with pytest.raises(TypeError, match="size must be an integer"):
        LocalResponseNorm(size=2.5)
