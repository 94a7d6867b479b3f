import pytest
import torch
import torchsummary
import torchvision
from torch import nn

from alexnet_lib import InputTooSmallError, LocalResponseNorm, count_parameters, get_model, list_models

# Parameter counts from the issue / the papers, checked against the models as built.
COUNTS = [
    ("alexnet", dict(num_classes=1000), 60_965_224),
    ("alexnet", dict(num_classes=1000, towers=False), 62_378_344),
    ("alexnet_torchvision", dict(num_classes=1000), 61_100_840),
    ("alexnet_d2l", dict(num_classes=10, in_channels=1), 46_764_746),
    ("lenet5", dict(num_classes=10), 61_706),
    ("lenet5", dict(num_classes=10, modern=True), 61_706),
]


@pytest.mark.parametrize("name,kw,expected", COUNTS)
def test_parameter_counts(name, kw, expected):
    assert count_parameters(get_model(name, **kw)) == expected


def test_alexnet_half_and_small_counts():
    # 48-128-192-192-128 convs and 2048-wide FCs, written out layer by layer.
    half = (3 * 48 * 121 + 48) + (48 * 128 * 25 + 128) + (128 * 192 * 9 + 192) + (192 * 192 * 9 + 192) \
        + (192 * 128 * 9 + 128) + (128 * 36 * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * 1000 + 1000)
    assert count_parameters(get_model("alexnet_half", num_classes=1000)) == half
    small = (1 * 64 * 25 + 64) + (64 * 192 * 25 + 192) + (192 * 384 * 9 + 384) + (384 * 256 * 9 + 256) \
        + (256 * 256 * 9 + 256) + (256 * 9 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 10 + 10)
    assert count_parameters(get_model("alexnet_small")) == small


SHAPES = [
    ("alexnet", {}, 3, 224, 1000),
    ("alexnet", {}, 3, 227, 1000),
    ("alexnet", {"norm": "batch", "pooling": "non-overlapping", "activation": "tanh"}, 3, 224, 1000),
    ("alexnet", {"num_classes": 10, "in_channels": 1, "norm": None}, 1, 224, 10),
    ("alexnet_torchvision", {}, 3, 224, 1000),
    ("alexnet_torchvision", {}, 3, 256, 1000),
    ("alexnet_half", {"num_classes": 5}, 3, 224, 5),
    ("alexnet_d2l", {}, 1, 224, 10),
    ("alexnet_small", {}, 1, 28, 10),
    ("alexnet_small", {"in_channels": 3, "norm": "batch"}, 3, 32, 10),
    ("alexnet_small", {"norm": "lrn"}, 1, 32, 10),
    ("lenet5", {}, 1, 28, 10),
]


@pytest.mark.parametrize("name,kw,c,size,classes", SHAPES)
def test_output_shapes(name, kw, c, size, classes):
    model = get_model(name, **kw).eval()
    with torch.no_grad():
        assert model(torch.randn(2, c, size, size)).shape == (2, classes)


def test_paper_model_feature_sizes_224():
    model = get_model("alexnet")
    sizes, x = [], torch.zeros(1, 3, 224, 224)
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            sizes.append(x.shape[-1])
    assert sizes == [55, 27, 27, 13, 13, 13, 13, 6]


def test_paper_model_structure():
    model = get_model("alexnet")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.kernel_size[0] for c in convs] == [11, 5, 3, 3, 3]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]  # the two towers
    single = get_model("alexnet", towers=False)
    assert [c.groups for c in single.features if isinstance(c, nn.Conv2d)] == [1] * 5
    # LRN directly after the ReLU of conv1 and conv2, then the pool.
    kinds = [type(m).__name__ for m in model.features]
    assert kinds[:8] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d",
                         "Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]
    lrn = model.features[2]
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert all((p.kernel_size, p.stride) == (3, 2) for p in pools)
    # Dropout on the outputs of FC6 and FC7: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear.
    kinds = [type(m).__name__ for m in model.classifier]
    assert kinds == ["Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]


def test_paper_init():
    torch.manual_seed(0)
    model = get_model("alexnet")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.classifier if isinstance(m, nn.Linear)]
    layers = convs + fcs
    assert [float(m.bias.detach().unique()) for m in layers] == [0, 1, 0, 1, 1, 1, 1, 0]
    w = fcs[0].weight
    assert abs(w.mean().item()) < 1e-4 and abs(w.std().item() - 0.01) < 1e-4


def test_small_paper_init():
    model = get_model("alexnet_small", init="paper")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [float(m.bias.detach().unique()) for m in layers] == [0, 1, 0, 1, 1, 1, 1, 0]
    assert all(abs(m.weight.std().item() - 0.01) < 2e-3 for m in layers)
    default = get_model("alexnet_small")  # Kaiming for the convs, biases 0
    assert all(float(m.bias.abs().max()) == 0 for m in default.modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ValueError, match="init"):
        get_model("alexnet_small", init="xavier")


def test_options_are_validated():
    with pytest.raises(ValueError, match="norm"):
        get_model("alexnet", norm="layer")
    with pytest.raises(ValueError, match="activation"):
        get_model("alexnet_small", activation="gelu")
    with pytest.raises(ValueError, match="pooling"):
        get_model("alexnet", pooling="avg")
    with pytest.raises(ValueError, match="unknown model"):
        get_model("vgg16")
    assert list_models() == ["alexnet", "alexnet_torchvision", "alexnet_half", "alexnet_d2l",
                             "alexnet_small", "lenet5"]


def test_torchvision_weights_load():
    ours = get_model("alexnet_torchvision").eval()
    theirs = torchvision.models.alexnet().eval()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, v.shape) for k, v in theirs.state_dict().items()]
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_too_small_input_error():
    with pytest.raises(InputTooSmallError) as info:
        get_model("alexnet")(torch.zeros(1, 3, 32, 32))
    msg = str(info.value)
    assert "features.14" in msg and "1x1" in msg and "floor(" in msg and "alexnet_small" in msg


def test_wrong_size_and_channels_errors():
    with pytest.raises(InputTooSmallError, match="classifier expects 9216"):
        get_model("alexnet")(torch.zeros(1, 3, 256, 256))
    with pytest.raises(ValueError, match="in_channels=1"):
        get_model("alexnet")(torch.zeros(1, 1, 224, 224))


@pytest.mark.parametrize("name", list_models())
def test_torchsummary_works(name, capsys):
    model = get_model(name)
    size = model.default_input_size
    torchsummary.summary(model, (model.in_channels, size, size), device="cpu")
    out = capsys.readouterr().out
    assert f"Total params: {count_parameters(model):,}" in out


def test_lrn_module_in_models_is_the_paper_formula():
    assert isinstance(get_model("alexnet_small", norm="lrn").features[2], LocalResponseNorm)


def test_model_contract_is_declared_once_in_the_base_class():
    from alexnet_lib.models import _Checked

    for attr in ("features", "classifier", "in_channels", "default_input_size", "suggestion"):
        assert attr in _Checked.__annotations__ and attr in _Checked.__doc__
    expected = {"alexnet": 224, "alexnet_torchvision": 224, "alexnet_half": 224, "alexnet_d2l": 224,
                "alexnet_small": 32, "lenet5": 28}
    for name, size in expected.items():
        model = get_model(name)
        assert isinstance(model, _Checked) and model.default_input_size == size
        assert isinstance(model.features, nn.Sequential) and isinstance(model.classifier, nn.Sequential)
        assert "default_input_size" not in vars(model)  # not set again per instance
    overrides = [cls.__name__ for cls in _Checked.__subclasses__() if "default_input_size" in vars(cls)]
    assert sorted(overrides) == ["AlexNetSmall", "LeNet5"]  # only where it differs from 224


def test_bad_model_options_are_refused_before_building():
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        get_model("alexnet", num_classes=0)
    with pytest.raises(TypeError, match="modern must be True or False, got 'maybe'"):
        get_model("lenet5", modern="maybe")
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) 'tower'.*towers"):
        get_model("alexnet", tower=False)
    with pytest.raises(ValueError, match="width must be > 0"):
        get_model("alexnet_small", width=-1)
    assert get_model("alexnet", dropout=0).classifier[3].p == 0.0
