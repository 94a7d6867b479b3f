"""The in-page explorers (alexnet_lib.explore): their JavaScript, run under node, against the library.

A page must never teach a different formula than the code: output sizes against ``conv_output_size`` on
random configurations, shapes/parameters/FLOPs against ``layer_table`` for the real models, receptive
fields against ``receptive_fields``, LRN against ``LocalResponseNorm``, the PCA colour shift against
``FancyPCA``, gradients through depth against torch autograd, epoch times against ``speed``. Each explorer
renders (its HTML holds its data and its script) and stays under the payload budget.

Needs ``node`` (skipped without it). The browser test (tests/test_browser.py) moves the controls.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest
import torch

from alexnet_lib import LocalResponseNorm, get_model, layer_table, receptive_fields
from alexnet_lib import explore as ex
from alexnet_lib.activations import activation
from alexnet_lib.arithmetic import InputTooSmallError, conv_output_size
from alexnet_lib.augment import FancyPCA
from alexnet_lib.speed import predicted_epoch_time, train_flops

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")
PAGE_BUDGET = 1_000_000  # bytes of explorer payload on one page


def run_js(explorer: str | None, expr: str, args=None):
    """Evaluate ``expr`` (JavaScript, may use ARGS) after loading common.js and js/<explorer>.js."""
    src = ["var AX = {};", (ex.JS_DIR / "common.js").read_text()]
    if explorer:
        src.append((ex.JS_DIR / f"{explorer}.js").read_text())
    src.append(f"var ARGS = {json.dumps(args)};")
    src.append(f"process.stdout.write(JSON.stringify((function () {{ return {expr}; }})()));")
    proc = subprocess.run([NODE, "-"], input="\n".join(src), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@needs_node
def test_prng_is_the_same_in_python_and_javascript():
    js = run_js(
        None,
        "(function(){var r=AX.rng(ARGS), u=[], n=[]; for (var i=0;i<500;i++) u.push(r.uniform());"
        "for (i=0;i<501;i++) n.push(r.normal()); return [u, n];})()",
        7,
    )
    r = ex.Mulberry32(7)
    u = [r.uniform() for _ in range(500)]
    n = [r.normal() for _ in range(501)]
    assert js[0] == u
    assert js[1] == pytest.approx(n, rel=1e-12, abs=1e-12)


@needs_node
def test_output_size_formula_matches_conv_output_size():
    rnd = random.Random(0)
    cases = [
        dict(
            i=rnd.randint(1, 300),
            k=rnd.randint(1, 13),
            s=rnd.randint(1, 6),
            p=rnd.randint(0, 5),
            d=rnd.randint(1, 4),
            ceil=rnd.random() < 0.3,
        )
        for _ in range(400)
    ]
    cases += [
        dict(i=224, k=11, s=4, p=2, d=1, ceil=False),
        dict(i=227, k=11, s=4, p=0, d=1, ceil=False),
        dict(i=3, k=3, s=2, p=0, d=1, ceil=False),
        dict(i=1, k=3, s=2, p=0, d=1, ceil=False),
    ]
    got = run_js(None, "ARGS.map(function(c){return AX.convOut(c.i,c.k,c.s,c.p,c.d,c.ceil);})", cases)
    want = []
    for c in cases:
        try:
            want.append(conv_output_size(c["i"], c["k"], c["s"], c["p"], c["d"], c["ceil"]))
        except InputTooSmallError:  # the library refuses o < 1; the page shows it as "no window fits"
            want.append(None)
    assert [None if o < 1 else o for o in got] == want
    assert None in want and any(want)  # both regimes are exercised


# (model, input sizes): valid sizes, 224 vs 227 and the 32 px collapse
SIZES = {
    "alexnet": [224, 227, 67, 32],
    "alexnet_torchvision": [224, 227, 63, 32],
    "alexnet_d2l": [224, 227, 32],
    "alexnet_small": [32, 28, 64, 7],
    "lenet5": [28, 32, 20, 2],
}


def _python_trace(model, size):
    """layer_table rows, or the error the model raises for this input (None when it runs)."""
    try:
        return layer_table(model, size), None
    except (
        ValueError,
        RuntimeError,
    ) as e:  # InputTooSmallError is a ValueError; Linear mismatch: RuntimeError
        return None, e


@needs_node
@pytest.mark.parametrize("name", list(SIZES))
def test_trace_matches_layer_table(name):
    torch.manual_seed(0)
    model = get_model(name)
    spec = ex.model_spec(name)
    js = run_js(
        None,
        "ARGS.sizes.map(function(s){return AX.trace(ARGS.spec, s);})",
        {"spec": spec, "sizes": SIZES[name]},
    )
    for size, t in zip(SIZES[name], js):
        table, err = _python_trace(model, size)
        assert (t["error"] is None) == (err is None), f"{name} at {size}: js {t['error']!r}, python {err!r}"
        if table is None:
            continue
        rows = {r.name: r for r in table.rows}
        assert [r["name"] for r in t["rows"]] == [r.name for r in table.rows]
        for r in t["rows"]:
            want = rows[r["name"]]
            assert tuple(r["shape"]) == want.output_shape, (name, size, r["name"])
            assert r["params"] == want.params, (name, size, r["name"])
            assert r["flops"] == want.flops, (name, size, r["name"])
        assert t["params"] == table.total_params and t["flops"] == table.total_flops


@needs_node
def test_edited_layer_and_first_linear_resized():
    """Editing conv1 of the paper's network (stride 4 -> 2) changes every shape after it; with the first
    Linear resized the parameters equal those of the same network built in torch."""
    spec = ex.model_spec("alexnet")
    got = run_js(
        "conv_arithmetic",
        "(function(){var s=AX.explorers.conv_arithmetic.edited(ARGS, 'features.0', {s: 2});"
        " return [AX.trace(s, 224), AX.trace(s, 224, {adaptLinear: true})];})()",
        spec,
    )
    assert got[0]["error"] and "expects 9,216 input features" in got[0]["error"]
    model = get_model("alexnet")
    model.features[0].stride = (2, 2)
    feats = model.features(torch.zeros(1, 3, 224, 224)).numel()
    model.classifier[1] = torch.nn.Linear(feats, 4096)
    table = layer_table(model, 224)
    assert got[1]["error"] is None
    assert got[1]["params"] == table.total_params and got[1]["flops"] == table.total_flops


@needs_node
@pytest.mark.parametrize("name", ["lenet5", "alexnet_small", "alexnet_d2l", "alexnet"])
def test_receptive_fields_match(name):
    model = get_model(name)
    sizes = [224, 227, 32]
    js = run_js(
        None,
        "ARGS.sizes.map(function(s){return AX.receptiveFields(ARGS.spec, s);})",
        {"spec": ex.model_spec(name), "sizes": sizes},
    )
    for size, rows in zip(sizes, js):
        try:
            want = receptive_fields(model, size)
        except InputTooSmallError:  # the library refuses a collapsing input; the page shows the collapse
            assert any(r["size"] < 1 for r in rows), (name, size)
            continue
        assert [(r["name"], r["size"], r["jump"], r["rf"], r["start"]) for r in rows] == [
            (w.name, w.size, w.jump, w.rf, w.start) for w in want
        ]


def _depth_reference(act, depth, width, batch, gain, seed):
    """The explorer's network in torch (float64, autograd), from the same generator in the same order."""
    r = ex.Mulberry32(seed)
    sd = gain / width**0.5
    Ws = [
        torch.tensor([r.normal() * sd for _ in range(width * width)], dtype=torch.float64)
        .view(width, width)
        .requires_grad_()
        for _ in range(depth)
    ]
    x = torch.tensor([r.normal() for _ in range(batch * width)], dtype=torch.float64).view(batch, width)
    t = torch.tensor([r.normal() for _ in range(batch * width)], dtype=torch.float64).view(batch, width)
    h, rms, f = x, [], activation(act)
    for W in Ws:
        h = f(h @ W.T)
        rms.append(float(h.detach().pow(2).mean().sqrt()))
    (h * t).sum().backward()
    return rms, [float(W.grad.norm()) for W in Ws]


@needs_node
@pytest.mark.parametrize("act,gain", [("relu", 2**0.5), ("tanh", 1.0), ("sigmoid", 1.0), ("relu", 0.5)])
def test_depth_signal_matches_autograd(act, gain):
    depth, width, batch, seed = 12, 16, 4, 3
    js = run_js(
        "depth_signal",
        "AX.explorers.depth_signal.compute.apply(AX.explorers.depth_signal, ARGS)",
        [act, depth, width, batch, gain, seed],
    )
    rms, grads = _depth_reference(act, depth, width, batch, gain, seed)
    assert js["act"] == pytest.approx(rms, rel=1e-9)
    assert js["grad"] == pytest.approx(grads, rel=1e-9)


@needs_node
def test_dropout_mask_scaling_and_mean():
    e = ex.dropout()
    a = e.data["a"]
    out = run_js(
        "dropout",
        "(function(){var D=AX.explorers.dropout, r=AX.rng(5), m=D.mask(ARGS.a.length*500, 0.3, r);"
        "return {keep: m.reduce(function(s,x){return s+x;},0)/m.length,"
        " m: D.mask(ARGS.a.length, 0.3, AX.rng(1)),"
        "mean: D.meanOver(ARGS.a, 0.3, 20000, 9), mean5: D.meanOver(ARGS.a, 0.5, 20000, 9)};})()",
        {"a": a},
    )
    assert out["keep"] == pytest.approx(0.7, abs=0.02)
    y = run_js("dropout", "AX.explorers.dropout.inverted(ARGS.a, ARGS.m, 0.3)", {"a": a, "m": out["m"]})
    assert y == pytest.approx([v * m / 0.7 for v, m in zip(a, out["m"])])
    # torch's dropout: the same values (0 or a/(1-p)) and the same expected value a
    torch.manual_seed(0)  # the global generator: its state depends on which tests ran before in this worker
    tdrop = torch.nn.functional.dropout(torch.tensor(a).repeat(20000, 1), 0.3, training=True)
    assert torch.allclose(tdrop.mean(0), torch.tensor(a), atol=0.08)
    for key in ("mean", "mean5"):
        assert out[key] == pytest.approx(a, abs=0.05)


@needs_node
def test_fancy_pca_shift_and_crop_flip_match_the_library():
    e = ex.augmentation()
    d = e.data
    alphas = [[0.1, -0.2, 0.05], [1.0, 0.0, 0.0], [-0.3, 0.7, -1.0]]
    js = run_js(
        "augmentation",
        "ARGS.alphas.map(function(a){"
        "return AX.explorers.augmentation.shift(ARGS.d.eigval, ARGS.d.eigvec, a);})",
        {"alphas": alphas, "d": d},
    )
    pca = FancyPCA()
    for a, got in zip(alphas, js):
        assert got == pytest.approx(pca.shift(torch.tensor(a)).tolist(), abs=1e-6)
    S, C = d["size"], d["crop"]
    img = torch.tensor(d["pixels"], dtype=torch.float64).view(S, S, 3).permute(2, 0, 1) / 255
    for x0, y0, flip, a in [(0, 0, False, alphas[0]), (8, 3, True, alphas[2]), (5, 8, True, [0, 0, 0])]:
        got = run_js(
            "augmentation",
            "Array.from(AX.explorers.augmentation.augment(ARGS.p, ARGS.S, ARGS.C, ARGS.x, "
            "ARGS.y, ARGS.f, AX.explorers.augmentation.shift(ARGS.ev, ARGS.evec, ARGS.a)))",
            {
                "p": d["pixels"],
                "S": S,
                "C": C,
                "x": x0,
                "y": y0,
                "f": flip,
                "a": a,
                "ev": d["eigval"],
                "evec": d["eigvec"],
            },
        )
        crop = img[:, y0 : y0 + C, x0 : x0 + C]
        if flip:
            crop = crop.flip(-1)
        want = pca(crop.float(), alpha=torch.tensor(a))
        assert torch.allclose(
            torch.tensor(got, dtype=torch.float32).view(C, C, 3).permute(2, 0, 1), want, atol=1e-5
        )


@needs_node
@pytest.mark.parametrize(
    "k,n,alpha,beta",
    [
        (2.0, 5, 1e-4, 0.75),
        (1.0, 3, 1e-2, 0.5),
        (0.5, 4, 1e-3, 1.25),
        (2.0, 1, 1e-4, 0.75),
        (2.0, 15, 1e-5, 0.75),
    ],
)
def test_lrn_matches_local_response_norm(k, n, alpha, beta):
    e = ex.lrn()
    for key in ("normalised", "raw"):
        a = e.data[key]
        js = run_js(
            "lrn",
            "AX.explorers.lrn.lrn(ARGS.a, ARGS.k, ARGS.n, ARGS.alpha, ARGS.beta).b",
            {"a": a, "k": k, "n": n, "alpha": alpha, "beta": beta},
        )
        want = LocalResponseNorm(n, alpha, beta, k)(
            torch.tensor(a, dtype=torch.float64).view(1, -1, 1, 1)
        ).flatten()
        assert js == pytest.approx(want.tolist(), rel=1e-9, abs=1e-12)


def test_lrn_is_a_constant_factor_at_normalised_scale_and_acts_at_raw_scale():
    """What the chapter-6 explorer shows with the paper's constants on its stored activations."""
    e = ex.lrn()
    lrn = LocalResponseNorm()
    for key, constant in (("normalised", True), ("raw", False)):
        a = torch.tensor(e.data[key], dtype=torch.float64).view(1, -1, 1, 1)
        ratio = (lrn(a) / a)[a > 0]
        spread = float((ratio.max() - ratio.min()) / ratio.max())
        assert (spread <= 0.01) == constant, (key, spread)
        if constant:
            assert float(ratio.mean()) == pytest.approx(2**-0.75, rel=1e-3)


@needs_node
@pytest.mark.parametrize(
    "name,size",
    [
        ("alexnet_d2l", 224),
        ("alexnet_small", 28),
        ("lenet5", 28),
        ("alexnet", 227),
        ("alexnet_torchvision", 224),
    ],
)
def test_epoch_time_matches_speed(name, size):
    e = ex.epoch_time()
    js = run_js(
        "epoch_time",
        "(function(){var E=AX.explorers.epoch_time, f=E.trainFlops(ARGS.spec, ARGS.size);"
        "return [f, E.epochSeconds(f, 123.4, 60000)];})()",
        {"spec": e.data["models"][name], "size": size},
    )
    model = get_model(name, in_channels=1, num_classes=10)
    want = train_flops(model, size)
    assert js[0] == pytest.approx(want, rel=1e-12)
    assert js[1] == pytest.approx(predicted_epoch_time(want, 123.4, 60000), rel=1e-12)
    # the ImageNet preset's models: 3 channels, 1,000 classes (the paper's alexnet: 1.449 GFLOPs forward)
    f = run_js("epoch_time", "AX.explorers.epoch_time.trainFlops(ARGS.spec, ARGS.size)",
               {"spec": e.data["imagenet_models"][name], "size": size})
    assert f == pytest.approx(train_flops(get_model(name, in_channels=3, num_classes=1000), size), rel=1e-12)


ALL = [
    ex.conv_arithmetic,
    ex.receptive_field,
    ex.depth_signal,
    ex.dropout,
    ex.augmentation,
    ex.lrn,
    ex.epoch_time,
]


@pytest.mark.parametrize("factory", ALL, ids=lambda f: f.__name__)
def test_explorer_renders_with_its_data_and_script_under_budget(factory):
    e = factory()
    html = e._repr_html_()
    assert f'id="{e.element_id}"' in html and f'id="{e.element_id}-data"' in html
    assert e.data_json.replace("</", "<\\/") in html
    assert (ex.JS_DIR / f"{e.name}.js").read_text() in html and "AX.start(" in html
    assert (
        "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    )  # nothing fetched
    assert e.payload_bytes < ex.PAYLOAD_BUDGET, f"{e.name}: {e.payload_bytes} bytes"
    assert "interactive explorer" in repr(e)
    assert factory()._repr_html_() != html or True  # a second one gets its own element id
    assert factory().element_id != e.element_id


def test_chapter_pages_stay_under_the_page_budget():
    """All explorers together (more than any one page carries) are under the per-page budget."""
    assert sum(f().payload_bytes for f in ALL) < PAGE_BUDGET


@needs_node
@pytest.mark.parametrize("factory", ALL, ids=lambda f: f.__name__)
def test_explorer_script_parses(factory):
    """The inline script is valid JavaScript (the browser test runs it in a page)."""
    html = factory()._repr_html_()
    script = html.rsplit("<script>", 1)[1].rsplit("</script>", 1)[0]
    assert run_js(None, "(function(){ new Function(ARGS); return true; })()", script) is True


def _explorer_cells_tool():
    import importlib.util

    path = ex.JS_DIR.parents[2] / "tools" / "explorer_cells.py"
    spec = importlib.util.spec_from_file_location("explorer_cells", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_hold_current_explorer_outputs():
    """Each chapter's explorer cell is there once, and its stored output is what the cell gives today
    (so a change of an explorer's JavaScript or data needs `python tools/explorer_cells.py`)."""
    import re

    import nbformat

    tool = _explorer_cells_tool()
    ids = re.compile(r"axe-[a-z-]+-[0-9a-f]{10}-\d+")
    assert len(tool.CELLS) >= 6 and "01_convolution_arithmetic.ipynb" in tool.CELLS
    for nb_name, specs in tool.CELLS.items():
        nb = nbformat.read(tool.NOTEBOOKS / nb_name, as_version=4)
        for name, _anchor, _md, code in specs:
            marker = f"# explorer: {name}"
            cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(marker)]
            assert len(cells) == 1, f"{nb_name}: {len(cells)} cells for explorer {name}"
            assert cells[0].source == code, f"{nb_name}: run python tools/explorer_cells.py"
            stored = "".join(o["data"]["text/html"] for o in cells[0].outputs
                             if "text/html" in o.get("data", {}))
            *body, last = code.strip().splitlines()
            scope: dict = {}
            exec("\n".join(body), scope)  # noqa: S102 - the cell's own imports
            fresh = eval(last, scope)._repr_html_()  # noqa: S307 - the cell's last expression
            assert ids.sub("ID", stored) == ids.sub("ID", fresh), \
                f"{nb_name}: the stored output of {name} is stale; run python tools/explorer_cells.py"
