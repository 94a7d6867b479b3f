"""Convolution arithmetic: the output-size formula against real layers, receptive fields, layer tables."""

import itertools
import re

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from alexnet_lib import InputTooSmallError, check_input_size, count_parameters, get_model, list_models
from alexnet_lib.arithmetic import (
    FORMULA,
    conv_output_size,
    forward_flops,
    layer_table,
    pool_output_size,
    receptive_fields,
    trace_sizes,
    train_flops,
)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: get_model(name) for name in list_models()}


@pytest.fixture(scope="module")
def tables(models) -> dict:
    """Each registry model's layer table at its default input size."""
    return {name: layer_table(m, m.default_input_size) for name, m in models.items()}


def _real_width(layer: nn.Module, i: int) -> int:
    """Output width of ``layer`` on an i x i input, 0 where torch refuses because it would be empty."""
    try:
        with torch.no_grad():
            return layer(torch.zeros(1, 1, i, i)).shape[-1]
    except RuntimeError:
        return 0


def _check(make_layer, configs) -> int:
    n = 0
    for i, k, s, p, d, ceil in configs:
        try:
            predicted = conv_output_size(i, k, s, p, d, ceil_mode=ceil)
        except InputTooSmallError:  # refused exactly where torch refuses too (the real width is then 0)
            predicted = 0
        assert predicted == _real_width(make_layer(k, s, p, d, ceil), i), (i, k, s, p, d, ceil)
        n += 1
    return n


def _grid(dilations=(1,), ceils=(False,), pool=False):
    sizes, kernels, strides, paddings = range(1, 11), range(1, 6), range(1, 4), range(3)
    for i, k, s, p, d, c in itertools.product(sizes, kernels, strides, paddings, dilations, ceils):
        if not pool or p <= k // 2:  # torch's pooling layers accept padding up to half the kernel
            yield i, k, s, p, d, c


def test_formula_matches_conv2d():
    n = _check(lambda k, s, p, d, c: nn.Conv2d(1, 1, k, s, p, d), _grid(dilations=(1, 3)))
    assert n == 10 * 5 * 3 * 3 * 2


def test_formula_matches_maxpool2d_with_ceil_mode_and_dilation():
    n = _check(lambda k, s, p, d, c: nn.MaxPool2d(k, s, p, d, ceil_mode=c),
               _grid(dilations=(1, 2), ceils=(False, True), pool=True))
    assert n > 900


def test_formula_matches_avgpool2d_with_ceil_mode():
    n = _check(lambda k, s, p, d, c: nn.AvgPool2d(k, s, p, ceil_mode=c),
               _grid(ceils=(False, True), pool=True))
    assert n > 450


def test_ceil_mode_drops_a_window_that_would_start_in_the_padding():
    # i=2, k=2, s=3, p=1: ceil((2 + 2 - 1 - 1) / 3) + 1 = 2, but the second window would start at
    # 3 >= i + p = 3, entirely in the right padding, so PyTorch keeps one output; plain ceil would say 2.
    assert conv_output_size(2, 2, 3, 1, ceil_mode=True) == 1
    for i, k, s, p in [(2, 2, 3, 1), (2, 1, 2, 0), (1, 4, 3, 2), (5, 2, 2, 1), (7, 3, 2, 1), (8, 3, 3, 0)]:
        real = nn.MaxPool2d(k, s, p, ceil_mode=True)(torch.zeros(1, 1, i, i)).shape[-1]
        assert conv_output_size(i, k, s, p, ceil_mode=True) == real, (i, k, s, p)


def test_pool_output_size_defaults_stride_to_kernel_and_validates():
    assert pool_output_size(55, 3) == conv_output_size(55, 3, 3) == 18
    assert [pool_output_size(i, 3, 2) for i in (55, 27, 13)] == [27, 13, 6]  # the paper's overlapping pools
    assert [pool_output_size(i, 2, 2) for i in (55, 27, 13)] == [27, 13, 6]  # same sizes without overlap
    for bad in [dict(k=0), dict(s=0), dict(p=-1), dict(d=0)]:
        with pytest.raises(ValueError):
            conv_output_size(10, **{"k": 3, **bad})


def test_paper_conv1_224_vs_227(models):
    assert conv_output_size(224, 11, 4) == 54  # (224 - 11) / 4 + 1 = 54.25: the paper's numbers do not fit
    assert conv_output_size(227, 11, 4) == 55
    assert conv_output_size(224, 11, 4, 2) == 55  # what alexnet_lib does
    sizes = {i: [r.size_out[0] for r in trace_sizes(models["alexnet"].features, i)
                 if isinstance(r.layer, (nn.Conv2d, nn.MaxPool2d))] for i in (224, 227)}
    assert sizes[224] == [55, 27, 27, 13, 13, 13, 13, 6]
    assert sizes[227] == [56, 27, 27, 13, 13, 13, 13, 6]


# --- receptive fields ---------------------------------------------------------------------------------

def _small_stack() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 1, 3),                      # r = 1 + 2*1 = 3,            j = 1, centre 0.5 + 1 = 1.5
        nn.ReLU(),
        nn.Conv2d(1, 1, 3, stride=2, padding=1),  # r = 3 + 2*1 = 5,            j = 2, centre 1.5 + 0 = 1.5
        nn.MaxPool2d(2, 2),                      # r = 5 + 1*2 = 7,            j = 4, centre 1.5 + 0.5*2 = 2.5
        nn.Conv2d(1, 1, 3, dilation=2),          # k_eff = 5: r = 7 + 4*4 = 23, j = 4, centre 2.5 + 2*4 = 10.5
    )


def test_receptive_fields_by_hand():
    rows = receptive_fields(_small_stack(), 40)
    assert [r.name for r in rows] == ["input", "0", "2", "3", "4"]
    assert [r.kind for r in rows] == ["input", "Conv2d", "Conv2d", "MaxPool2d", "Conv2d"]
    assert [r.rf for r in rows] == [1, 3, 5, 7, 23]
    assert [r.jump for r in rows] == [1, 1, 2, 4, 4]
    assert [r.start for r in rows] == [0.5, 1.5, 1.5, 2.5, 10.5]
    assert [r.size for r in rows] == [40, 38, 19, 9, 5]


def test_receptive_fields_match_gradients():
    """The input pixels that one output's gradient reaches are exactly its receptive field."""
    stack = _small_stack()
    geometry = [m for m in stack if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
    twins = []
    for m in geometry:  # same geometry, all-ones weights: every pixel in the field gets a positive gradient
        k, s, p, d = (v if isinstance(v, int) else v[0]
                      for v in (m.kernel_size, m.stride, m.padding, m.dilation))
        twin = nn.Conv2d(1, 1, k, s, p, d, bias=False)
        nn.init.ones_(twin.weight)
        twins.append(twin)
    rows = receptive_fields(stack, 40)[1:]
    for n, row in enumerate(rows, start=1):
        x = torch.ones(1, 1, 40, 40, requires_grad=True)
        y = nn.Sequential(*twins[:n])(x)
        c = y.shape[-1] // 2
        y[0, 0, c, c].backward()
        hit = x.grad[0, 0].sum(1).nonzero().flatten()
        assert hit.max() - hit.min() + 1 == row.rf
        assert (hit.min() + hit.max() + 1).item() / 2 == row.start + c * row.jump


def test_receptive_fields_of_the_paper_model(models):
    rows = receptive_fields(models["alexnet"], 224)
    assert [r.rf for r in rows] == [1, 11, 19, 51, 67, 99, 131, 163, 195]
    assert [r.jump for r in rows] == [1, 4, 8, 8, 16, 16, 16, 16, 32]
    assert rows[-1].name == "features.14" and rows[-1].size == 6


# --- layer tables -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_models())
def test_layer_table_totals(models, tables, name):
    model, table = models[name], tables[name]
    size = model.default_input_size
    assert table.input_shape == (model.in_channels, size, size)
    assert table.total_params == count_parameters(model)
    x = torch.zeros(1, model.in_channels, size, size)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    assert table.total_flops == counter.get_total_flops() > 0
    assert table.total_output_bytes == sum(4 * torch.Size(r.output_shape).numel() for r in table.rows)
    assert table.total_activation_bytes == sum(r.output_bytes for r in table.rows if not r.shares_input)


def test_layer_table_restores_the_training_mode(models):
    model = models["lenet5"]
    for mode in (True, False):
        model.train(mode)
        layer_table(model, 28)
        assert model.training == mode


def test_layer_table_of_the_paper_model(tables):
    table = tables["alexnet"]
    conv_rows = [r for r in table.rows if r.is_conv]
    assert [r.output_shape for r in conv_rows] == [(96, 55, 55), (256, 27, 27), (384, 13, 13), (384, 13, 13),
                                                   (256, 13, 13)]
    # a convolution costs 2 * C_out * H_out * W_out * (C_in / groups) * k * k FLOPs (multiply + add)
    assert conv_rows[0].flops == 2 * 96 * 55 * 55 * 3 * 11 * 11
    assert conv_rows[1].flops == 2 * 256 * 27 * 27 * 48 * 5 * 5
    conv, fc = table.share("Conv2d"), table.share("Linear")
    assert conv["params"] + fc["params"] == pytest.approx(1.0)
    assert conv["flops"] + fc["flops"] == pytest.approx(1.0)
    assert fc["params"] > 0.9 and conv["flops"] > 0.9


def test_grouped_convolutions_save_parameters_and_flops(tables):
    towers = tables["alexnet"]
    flat = layer_table(get_model("alexnet", towers=False, init="torch"), 224)
    assert (towers.total_params, flat.total_params) == (60_965_224, 62_378_344)
    assert towers.total_flops < flat.total_flops


def test_table_str_and_html(models, tables):
    table = tables["lenet5"]
    text = str(table)
    lines = text.splitlines()
    assert lines[0] == "LeNet5, input 1x28x28"
    assert lines[1].split() == ["layer", "type", "output", "shape", "params", "FLOPs", "new", "activation",
                                "memory"]
    assert lines[-2].split()[:2] == ["total", f"{count_parameters(models['lenet5']):,}"]
    assert lines[-1] == table.note and "distinct" in table.note
    assert len(lines) == len(table.rows) + 6  # title, header, rule, rows, rule, total, note
    assert "features.0" in text and "6x28x28" in text and "16x5x5" in text
    assert repr(table) == text
    html = table._repr_html_()
    assert html.startswith("<table><caption>LeNet5, input 1x28x28</caption>") and html.endswith("</table>")
    assert html.count("<tr>") == len(table.rows) + 3  # header, rows, total, note
    assert html.count("<th>") == len(table.columns)
    assert "<td><b>total</b></td>" in html


# --- inputs that are too small ------------------------------------------------------------------------

def test_32px_error_names_the_layer_the_size_and_the_formula(models):
    model = models["alexnet"]
    with pytest.raises(InputTooSmallError) as info:
        model(torch.zeros(1, 3, 32, 32))
    msg = str(info.value)
    assert "'features.14'" in msg
    assert "32x32" in msg and "1x1 map" in msg
    assert FORMULA in msg and "floor((1 + 0 - 2 - 1) / 2) + 1 = 0" in msg
    assert "alexnet_small" in msg
    assert isinstance(info.value.__cause__, RuntimeError)  # PyTorch's own error is kept as the cause
    for call in (lambda: check_input_size(model, 32), lambda: layer_table(model, 32)):
        with pytest.raises(InputTooSmallError, match=re.escape("'features.14'")):
            call()


def test_first_failing_layer_is_named(models):
    # at 16 px conv1 gives 3x3, pool1 1x1, conv2 (padding 2) 1x1, and pool2 is the first to collapse
    with pytest.raises(InputTooSmallError, match=re.escape("Layer 'features.7'")):
        check_input_size(models["alexnet"], 16)
    assert check_input_size(models["alexnet_small"], 32) == (3, 3)
    assert check_input_size(models["alexnet_small"], 28) == (3, 3)
    # at 28 px the last max-pool gives 2x2 maps, which the adaptive pool brings to 3x3
    assert trace_sizes(models["alexnet_small"].features, 28)[-2].size_out == (2, 2)


def test_draw_conv_windows():
    import matplotlib.pyplot as plt

    from alexnet_lib.plots import draw_conv_windows

    fig = draw_conv_windows(8, 3, 2)  # o = 3; the last row and column are never read
    ax = fig.axes[0]
    assert ax.get_title().endswith("= 3")
    assert sum(p.get_hatch() == "xxx" for p in ax.patches) == 8 + 8 - 1
    plt.close("all")


@pytest.mark.xfail(raises=InputTooSmallError, strict=False,
                   reason="conv_output_size now refuses o < 1; plots.draw_conv_windows (owned "
                          "elsewhere) must catch InputTooSmallError to draw its 'does not fit' title")
def test_draw_conv_windows_too_small():
    import matplotlib.pyplot as plt

    from alexnet_lib.plots import draw_conv_windows

    fig, axes = plt.subplots(1, 2)
    try:
        assert draw_conv_windows(2, 5, ax=axes[1]) is fig  # too small: the title says so, nothing breaks
        assert "does not fit" in axes[1].get_title()
    finally:
        plt.close("all")


# --- arguments, distinct activation memory, FLOP counting -------------------------------------------------

def test_conv_output_size_refuses_what_has_no_output():
    with pytest.raises(ValueError, match=r"i must be >= 1, got -10"):
        conv_output_size(-10, 3)
    with pytest.raises(InputTooSmallError) as info:
        conv_output_size(2, 5)  # padded input 2 < kernel span 5
    msg = str(info.value)
    assert "floor((2 + 0 - 4 - 1) / 1) + 1 = -2" in msg and "Use i >= 5" in msg
    with pytest.raises(InputTooSmallError, match="Use i >= 3"):
        conv_output_size(2, 3, p=0)
    assert conv_output_size(1, 3, p=1) == 1  # padding makes the window fit
    assert conv_output_size(5, 3, d=2) == 1  # dilated kernel spans 5 pixels
    with pytest.raises(InputTooSmallError, match="spans d\\(k-1\\)\\+1 = 5"):
        conv_output_size(4, 3, d=2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        pool_output_size(5, 0)


def test_receptive_fields_refuse_an_input_that_collapses(models):
    with pytest.raises(InputTooSmallError, match=re.escape("'features.14'")):
        receptive_fields(models["alexnet"], 32)
    with pytest.raises(ValueError, match="input_size must be >= 1"):
        receptive_fields(models["alexnet"], 0)


def test_activation_memory_counts_distinct_tensors(tables):
    """The paper's AlexNet at 224: in-place ReLUs, Flatten and eval-mode Dropout add no tensor."""
    table = tables["alexnet"]
    assert {r.kind for r in table.rows if r.shares_input} == {"ReLU", "Flatten", "Dropout"}
    # conv1 + LRN1, pool1, conv2 + LRN2, pool2, conv3, conv4, conv5, pool5, FC6, FC7, FC8 (floats per image)
    by_hand = (2 * 96 * 55 * 55 + 96 * 27 * 27 + 2 * 256 * 27 * 27 + 256 * 13 * 13 + 2 * 384 * 13 * 13
               + 256 * 13 * 13 + 256 * 6 * 6 + 2 * 4096 + 1000)
    assert by_hand == 1_258_760
    assert table.total_activation_bytes == 4 * by_hand == 5_035_040  # 4.80 MiB
    assert f"{table.total_activation_bytes / 2**20:.2f}" == "4.80"
    assert f"{table.total_output_bytes / 2**20:.2f}" == "7.38"  # what the old column summed
    assert "4.80 MiB" in str(table) and "shared" in str(table)


def test_forward_and_train_flops_share_the_table_count(models, tables):
    from alexnet_lib import speed

    for name in ("alexnet", "lenet5", "alexnet_small"):
        model, size = models[name], models[name].default_input_size
        f = forward_flops(model, size)
        assert f == tables[name].total_flops == speed.forward_flops(model, size)
        assert train_flops(model, size) == 3 * f
    assert forward_flops(nn.Sequential(nn.Conv2d(2, 4, 3)), 5, in_channels=2) == 2 * 4 * 9 * 2 * 9
    with pytest.raises(InputTooSmallError):
        forward_flops(models["alexnet"], 32)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        forward_flops("alexnet", 224)
