import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from alexnet_lib.activations import (  # noqa: E402
    ACTIVATIONS,
    LEAKY_SLOPE,
    activation,
    autograd_derivative,
    dead_fraction,
    dead_units,
    deep_stack,
    derivative,
    diverged,
    four_layer_net,
    gradient_norms,
    init_weights,
    running_mean,
    steps_to_error,
    train_error_curve,
)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_derivative_matches_autograd(name):
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    x = x[x != 0]  # relu is not differentiable at 0
    torch.testing.assert_close(derivative(name, x), autograd_derivative(name, x))


def test_functions_match_torch_modules():
    x = torch.randn(100)
    modules = {"sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "relu": nn.ReLU(),
               "leaky_relu": nn.LeakyReLU(LEAKY_SLOPE)}
    for name, m in modules.items():
        torch.testing.assert_close(activation(name)(x), m(x))


def test_closed_forms_known_values():
    zero = torch.zeros(1)
    assert derivative("sigmoid", zero).item() == pytest.approx(0.25)
    assert derivative("tanh", zero).item() == pytest.approx(1.0)
    assert derivative("relu", torch.tensor([-1.0, 2.0])).tolist() == [0.0, 1.0]
    assert derivative("leaky_relu", torch.tensor([-1.0, 2.0])).tolist() == [pytest.approx(LEAKY_SLOPE), 1.0]
    # Saturation: far from 0 the sigmoid and tanh derivatives vanish, the ReLU's does not (for x > 0).
    big = torch.tensor([10.0])
    assert derivative("sigmoid", big).item() < 1e-4 and derivative("tanh", big).item() < 1e-8
    assert derivative("relu", big).item() == 1.0


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="activation"):
        activation("gelu")
    with pytest.raises(ValueError, match="init"):
        init_weights(nn.Linear(2, 2), "orthogonal")
    with pytest.raises(ValueError, match="kind"):
        deep_stack(kind="rnn")


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_deep_stack_shapes_and_gradient_norms(kind):
    depth, width = 6, 16
    model = deep_stack("relu", depth, "he", width, kind)
    x = torch.randn(4, width) if kind == "linear" else torch.randn(4, 3, 8, 8)
    assert model(x).shape == (4, 10)
    norms = gradient_norms("relu", depth, "he", width, kind, batch=8)
    assert norms.shape == (depth,) and torch.all(norms > 0)
    # Deterministic for a seed.
    torch.testing.assert_close(norms, gradient_norms("relu", depth, "he", width, kind, batch=8))


def test_init_weights_variances():
    torch.manual_seed(0)
    lin = nn.Linear(1000, 1000)
    assert init_weights(lin, "he").weight.var().item() == pytest.approx(2 / 1000, rel=0.05)
    assert init_weights(lin, "xavier").weight.var().item() == pytest.approx(2 / 2000, rel=0.05)
    assert init_weights(lin, "paper").weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(lin.bias == 0)
    fresh = nn.Linear(1000, 1000)
    assert init_weights(fresh, "default").weight.var().item() == pytest.approx(1 / 3000, rel=0.05)


def test_saturating_activations_vanish_and_he_relu_does_not():
    depth = 20
    sig = gradient_norms("sigmoid", depth, "default", width=64)
    relu_he = gradient_norms("relu", depth, "he", width=64)
    # Sigmoid: gradients shrink by orders of magnitude towards the input; ReLU with He init: they do not.
    assert sig[0] / sig[-1] < 1e-6
    assert 0.01 < relu_he[0] / relu_he[-1] < 100


def test_four_layer_net():
    for act in ("relu", "tanh"):
        net = four_layer_net(act)
        assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        weighted = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(weighted) == 4


def test_dead_units_counts_channels_and_features():
    conv = nn.Conv2d(1, 4, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.copy_(torch.tensor([0.0, 0.0, -100.0, -100.0]))  # channels 2 and 3 can never fire
    lin = nn.Linear(4, 6)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0]))  # features 1, 3, 4 are dead
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), lin, nn.ReLU(inplace=True))
    x = torch.rand(5, 1, 3, 3) + 0.1
    counts = dead_units(model, x)
    assert counts == {"1": (2, 4), "5": (3, 6)}
    assert dead_fraction(model, x) == pytest.approx(5 / 10)
    assert model.training  # mode restored
    assert dead_fraction(nn.Sequential(nn.Linear(3, 3)), torch.randn(2, 3)) == 0.0


def test_dead_units_refuses_a_diverged_model():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    assert not diverged(model)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")  # what a too-high learning rate leaves behind
    assert diverged(model)
    with pytest.raises(ValueError, match=r"outputs of module\(s\) 1 .*contain NaN or inf.*diverged\(model\)"):
        dead_units(model, torch.ones(2, 3))


def test_too_high_a_rate_makes_training_diverge():
    torch.manual_seed(0)
    net = init_weights(four_layer_net("leaky_relu"), "paper")  # a ReLU net may die instead of diverging
    batches = [(torch.randn(8, 1, 28, 28) * 50, torch.randint(0, 10, (8,)))]
    train_error_curve(net, batches, 5, lr=1e6)
    assert diverged(net)


def test_running_mean_and_steps_to_error():
    errs = [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
    torch.testing.assert_close(running_mean(errs, 2),
                               torch.tensor([1.0, 1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    assert steps_to_error(errs, 0.5, window=2) == 4
    assert steps_to_error(errs, 1.0, window=2) == 2  # needs a full window
    assert steps_to_error(errs, -0.1, window=2) is None


def test_train_error_curve_runs_and_cycles():
    torch.manual_seed(0)
    x = torch.randn(64, 1, 28, 28)
    y = (x.mean((1, 2, 3)) > 0).long()
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    model = four_layer_net("relu", channels=(4, 4, 8))
    errors = train_error_curve(model, batches, steps=6, lr=0.05)  # passes over the batches twice
    assert len(errors) == 6 and all(0.0 <= e <= 1.0 for e in errors)
    with pytest.raises(ValueError, match="no batch"):
        train_error_curve(model, [], steps=1, lr=0.1)


def test_bad_arguments_are_refused_before_any_work():
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        deep_stack(depth=0)
    with pytest.raises(ValueError, match="width must be >= 1, got 0"):
        gradient_norms(width=0)
    with pytest.raises(ValueError, match="init must be one of"):
        deep_stack(init="orthogonal")  # checked before any layer is built
    with pytest.raises(ValueError, match="window must be >= 1"):
        running_mean([0.5, 0.4], window=0)
