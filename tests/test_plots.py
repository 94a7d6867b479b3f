"""alexnet_lib.plots draws what it is handed (tiny inputs, Agg backend), LivePlot in a notebook, and
layers.capture_outputs, the forward hooks behind feature maps, features and dead units."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import TinyCNN, make_image_data  # noqa: E402
from torch import nn  # noqa: E402

from alexnet_lib import plots  # noqa: E402
from alexnet_lib.activations import ACTIVATIONS, INITS  # noqa: E402
from alexnet_lib.layers import capture_outputs  # noqa: E402
from alexnet_lib.speed import LadderResult, LoopResult  # noqa: E402
from alexnet_lib.train import History, fit  # noqa: E402

CLASSES = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _history(epochs: int = 3, test: bool = True, shift: float = 0.0) -> History:
    h = History()
    for e in range(1, epochs + 1):
        h.epoch.append(e)
        h.train_loss.append(1.0 / e + shift)
        h.train_acc.append(0.5 + 0.1 * e)
        h.test_loss.append(1.2 / e + shift if test else None)
        h.test_top1.append(0.4 + 0.1 * e if test else None)
        h.wall_time.append(2.0 * e)
        h.step_loss += [1.0 / e + shift - 0.01 * i for i in range(10)]
    return h


def _figure(fig):
    assert isinstance(fig, matplotlib.figure.Figure)
    fig.canvas.draw()  # layout and text really rendered
    return fig


# --- each figure from handed data ---------------------------------------------------------------------

def test_draw_conv_windows_also_when_no_window_fits():
    ax = _figure(plots.draw_conv_windows(5, 3, 1, 1)).axes[0]
    assert ax.get_title().endswith("= 5")
    _, axes = plt.subplots(1, 2)
    fig = plots.draw_conv_windows(2, 5, ax=axes[1])  # too small: the title says so, nothing breaks
    assert fig is axes[1].figure and "does not fit" in axes[1].get_title()


def test_images_and_feature_maps():
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    fig = _figure(plots.show_images(images, titles=list("abcde"), ncols=3, suptitle="x"))
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "a"
    fig = _figure(plots.show_images(torch.rand(2, 3, 8, 8)))  # floats in [0, 1], RGB
    assert len(fig.axes[0].images) == 1
    fig = _figure(plots.show_feature_maps(torch.randn(6, 5, 5), n=4, ncols=2, title="maps"))
    assert sum(len(ax.images) for ax in fig.axes) == 4
    fig = _figure(plots.show_filters(nn.Conv2d(4, 3, 3), ncols=3))  # deeper kernels: mean over channels
    assert sum(len(ax.images) for ax in fig.axes) == 3


def test_training_curves():
    runs = {"one": _history(), "two": _history(shift=0.2).to_dict(), "no test": _history(test=False)}
    fig = _figure(plots.plot_history(runs, title="runs"))
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2 + 2 + 1
    fig = _figure(plots.plot_history(runs, metrics="accuracy", x="time", test=False))
    assert fig.axes[0].get_xlabel().startswith("wall-clock")
    with pytest.raises(ValueError, match="metrics"):
        plots.plot_history(runs, metrics="speed")
    fig = _figure(plots.plot_overfitting({"p=0.5": dict(train=[0.6, 0.8], test=[0.5, 0.6])}))
    assert len(fig.axes) == 2
    fig = _figure(plots.plot_seed_runs({"a": [_history(), _history(shift=0.1)], "b": [_history()]},
                                       metrics=("train_loss", "test_top1", "step_loss")))
    assert len(fig.axes) == 3 and len(fig.axes[0].collections) == 1  # one band: only "a" has 2 seeds


def test_plot_gradient_norms_draws_one_line_per_activation():
    fig = _figure(plots.plot_gradient_norms(ACTIVATIONS, init="he", depth=5, width=16))
    ax = fig.axes[0]
    assert len(ax.lines) == len(ACTIVATIONS) and ax.get_yscale() == "log"
    fig2 = plots.plot_gradient_norms("tanh", init=INITS[0], depth=3, width=8, kind="conv")
    assert len(fig2.axes[0].lines) == 1
    n_figures = len(plt.get_fignums())
    for bad, message in ((dict(activations=[]), "non-empty list"), (dict(activations=["relu", "gelu"]),
                         "one of the activations"), (dict(depth=0), "depth must be >= 1"),
                         (dict(init="orthogonal"), "init must be one of")):
        with pytest.raises(ValueError, match=message):
            plots.plot_gradient_norms(**bad)
    assert len(plt.get_fignums()) == n_figures  # refused before any figure was made


def test_lrn_effect():
    fig = _figure(plots.show_lrn_effect(torch.rand(6, 5, 5) * 10, channels=(0, 1)))
    assert len(fig.axes) == 2 * 3 + 1  # 2 x (2 channels + divisor/histogram), and a colour bar


def test_analysis_figures():
    cm = torch.tensor([[5, 1, 0], [0, 4, 2], [1, 0, 6]])
    for normalize in (True, False):
        fig = _figure(plots.plot_confusion(cm, CLASSES, normalize=normalize))
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == CLASSES
    fig = _figure(plots.plot_per_class_accuracy(torch.tensor([0.9, 0.5, float("nan")]), CLASSES))
    assert len(fig.axes[0].patches) == 3
    q, nb = torch.rand(2, 1, 8, 8), torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    fig = _figure(plots.show_neighbours(q, nb, query_titles=["q1", "q2"],
                                        neighbour_titles=[["x"] * 3, ["y"] * 3]))
    assert len(fig.axes) == 2 * 4
    fig = _figure(plots.show_topk(torch.rand(1, 8, 8), [("a", 0.7), ("b", 0.2)], true_label="b"))
    assert len(fig.axes[1].patches) == 2


def test_speed_figures():
    loops = {name: LoopResult(name, images=[64, 64], wall=[w, w], cpu=[2 * w, 2 * w])
             for name, w in (("tutorial", 1.0), ("fit", 0.25))}
    r = LadderResult("alexnet_small", 28, 64, "cpu", 2, 1e8, loops, {"fp32": 50.0, "bf16": 100.0},
                     {"tutorial": "fp32", "fit": "bf16"}, peak_cpu={"fp32": 25.0, "bf16": 50.0})
    fig = _figure(plots.plot_ladder(r, labels={"fit": "fit\n(library)"}))
    assert len(fig.axes) == 2 and "x4.00 total" in [t.get_text().split("\n")[-1] for t in fig.axes[0].texts]
    fig = _figure(plots.plot_epoch_time({"fast": 5.0, "slow": 500.0, "slower": 50_000.0}, title="epochs"))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "5.0 s" in texts and "8 min 20 s" in texts and "13 h 53 min" in texts


# --- LivePlot -----------------------------------------------------------------------------------------

def test_live_plot_in_a_notebook(monkeypatch):
    import IPython
    import IPython.display

    shown = []

    class Handle:
        def update(self, image):
            shown.append(("update", image.data[:4]))

    def display(image, display_id=None):
        shown.append(("display", image.data[:4]))
        return Handle()

    monkeypatch.setattr(IPython, "get_ipython", lambda: object())  # "inside a notebook"
    monkeypatch.setattr(IPython.display, "display", display)
    fit(TinyCNN(), make_image_data(n=32, size=28), make_image_data(n=16, size=28), epochs=3, batch_size=16,
        progress=False, on_epoch_end=plots.LivePlot())
    png = b"\x89PNG"
    assert shown == [("display", png), ("update", png), ("update", png)]  # one figure, redrawn each epoch


def test_live_plot_does_nothing_outside_a_notebook(monkeypatch):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    live = plots.LivePlot()
    live(TinyCNN(), _history())
    assert not live.enabled and live.handle is None


# --- capture_outputs ----------------------------------------------------------------------------------

def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_capture_outputs_clones_under_inplace_relu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 36, 2))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        expected = model[0](x)
        with capture_outputs(model, (nn.Conv2d, nn.ReLU)) as out:
            model(x)
        with capture_outputs(model, [nn.Conv2d], clone=False) as shared:
            model(x)
    assert list(out) == ["0", "1"]  # in the order they ran
    torch.testing.assert_close(out["0"], expected)  # negative values survive the in-place ReLU
    assert (out["0"] < 0).any() and (out["1"] >= 0).all()
    assert (shared["0"] >= 0).all()  # without the copy the ReLU overwrote it: why clone=True is the default
    assert _hooks(model) == 0


def test_capture_outputs_by_module_or_name_and_inputs():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model.train()
    x = torch.randn(5, 3)
    with torch.no_grad(), capture_outputs(model, [model[2], "0"]) as out, \
            capture_outputs(model, model[2], inputs=True) as inp:
        assert not model.training  # eval mode inside the block
        y = model(x)
    assert model.training and _hooks(model) == 0
    assert set(out) == {"0", "2"} and torch.equal(out["2"], y)
    torch.testing.assert_close(inp["2"], torch.relu(out["0"]))
    with pytest.raises(ValueError, match="not a module of the model"):
        with capture_outputs(model, "features.0"):
            pass
    with pytest.raises(ValueError, match="a Linear"):
        with capture_outputs(model, nn.Linear(3, 4)):
            pass


def test_capture_outputs_removes_its_hooks_when_the_forward_raises():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2))  # the second Linear cannot run
    model.train()
    with pytest.raises(RuntimeError):
        with capture_outputs(model, (nn.Linear, nn.ReLU)) as out:
            model(torch.randn(2, 3))
    assert _hooks(model) == 0 and model.training  # hooks gone, mode restored
    assert list(out) == ["0", "1"]  # what ran before the error was recorded
