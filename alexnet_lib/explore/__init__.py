"""Explorers: small interactive figures whose computation runs in the browser, with no kernel.

Each explorer is an object with ``_repr_html_``: an HTML fragment with its data (computed here, in
Python, from the library itself and embedded as JSON) and its JavaScript (``js/common.js`` plus one
file per explorer in ``js/``, inlined). The same output works in Jupyter, Colab, VS Code and on the
book's static pages, offline: nothing is loaded from anywhere. (JupyterLab runs the scripts of a
notebook's outputs once the notebook is trusted, e.g. after running the cell.)

``tests/test_explorers.py`` runs the JavaScript compute functions under ``node`` and checks them
against the library (output sizes, parameters, FLOPs, receptive fields, LRN, fancy PCA, ...), so a page
cannot teach a different formula than the code; and keeps each explorer's payload under
:data:`PAYLOAD_BUDGET`. ``tools/explorer_cells.py`` puts one explorer cell into each chapter notebook.

Why plain HTML and not anywidget: an anywidget's front-end module (npm ``anywidget``, an AMD bundle) is
loaded by the book's ipywidgets HTML manager from ``<data-jupyter-widgets-cdn>anywidget@<range>/dist/
index.js``, where the range is the Python package's semver range (``~0.11.*``): it would have to be
vendored under that literal folder name, pinned to the Python package's version, and it then imports the
widget's own code from a ``blob:`` URL. It also adds a dependency (anywidget, psygnal) to the Colab first
cell and needs the widget state saved with the notebook. A ``_repr_html_`` with an inline script needs
none of that and renders the same in Jupyter, Colab, VS Code and the static page.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from functools import cache
from pathlib import Path

JS_DIR = Path(__file__).resolve().parent / "js"
PAYLOAD_BUDGET = 150_000  # bytes of HTML+JS+data per explorer (a chapter page has one or two: < 1 MB)

__all__ = [
    "PAYLOAD_BUDGET", "Explorer", "Mulberry32", "augmentation", "conv_arithmetic", "depth_signal",
    "dropout", "epoch_time", "lrn", "model_spec", "receptive_field",
]

CSS = """
.axe{border:1px solid #c8ccd0;border-radius:.4em;padding:.6em .8em;margin:.5em 0;max-width:100%;
 box-sizing:border-box;font-size:.95em;line-height:1.4;overflow-wrap:anywhere}
.axe h4{margin:.1em 0 .4em;font-size:1.05em}
.axe-row{display:flex;flex-wrap:wrap;gap:.4em 1.2em;align-items:center;margin:.3em 0}
.axe-ctl{display:flex;flex-wrap:wrap;gap:.3em;align-items:center}
.axe-ctl label{font-weight:600}
.axe-input[type=number]{width:5.5em}
.axe-input[type=range]{width:10em;max-width:60vw}
.axe-val{min-width:3em;font-variant-numeric:tabular-nums}
.axe-btn{padding:.15em .6em;border:1px solid #888;border-radius:.3em;background:#f4f4f4;color:#111;
 cursor:pointer}
.axe :focus-visible{outline:2px solid #1a73e8;outline-offset:1px}
.axe-scroll{max-width:100%;overflow-x:auto}
.axe-table{border-collapse:collapse;font-size:.9em;font-variant-numeric:tabular-nums}
.axe-table td,.axe-table th{border-bottom:1px solid #ddd;padding:.1em .5em;text-align:right;
 white-space:nowrap}
.axe-table td:first-child,.axe-table th:first-child{text-align:left}
.axe-table tr.axe-sel td{background:#fff3c4;color:#111}
.axe-table tr.axe-bad td{background:#fde2e1;color:#111}
.axe-err{color:#b00020;font-weight:600}
.axe-out{font-variant-numeric:tabular-nums}
.axe-canvas{width:100%;height:auto;display:block;background:#fff;border:1px solid #eee}
.axe-note{opacity:.8;font-size:.9em}
""".strip().replace("\n", "")

_emitted: dict[str, int] = {}


@cache
def _js(name: str) -> str:
    return (JS_DIR / f"{name}.js").read_text(encoding="utf-8")


class Explorer:
    """One explorer: ``name`` picks ``js/<name>.js``; ``data`` is JSON-able and goes into the page."""

    def __init__(self, name: str, data: dict, title: str):
        if not (JS_DIR / f"{name}.js").is_file():
            raise ValueError(f"no explorer {name!r} (no {JS_DIR / (name + '.js')})")
        self.name, self.data, self.title = name, data, title
        self.data_json = json.dumps(data, separators=(",", ":"), allow_nan=False)
        digest = hashlib.sha1((name + self.data_json).encode()).hexdigest()[:10]
        # Deterministic ids (the stored output is compared by nbval), unique within one kernel/page.
        _emitted[digest] = _emitted.get(digest, 0) + 1
        self.element_id = f"axe-{name.replace('_', '-')}-{digest}-{_emitted[digest]}"

    def __repr__(self) -> str:
        return f"<{self.title}: an interactive explorer (JavaScript); shown on the HTML page>"

    def _repr_html_(self) -> str:
        eid, safe = self.element_id, self.data_json.replace("</", "<\\/")
        script = (f'(function(){{"use strict";var AX={{}};\n{_js("common")}\n{_js(self.name)}\n'
                  f'AX.start(document.getElementById("{eid}"),'
                  f'JSON.parse(document.getElementById("{eid}-data").textContent),'
                  f'AX.explorers["{self.name}"]);}})();')
        return (f'<style>{CSS}</style>'
                f'<div class="axe" id="{eid}" data-explorer="{self.name}" role="group" '
                f'aria-label="{html.escape(self.title)}"><p class="axe-note">{html.escape(self.title)}: '
                f'an interactive explorer that runs JavaScript in the page (in JupyterLab, run the cell or '
                f'trust the notebook to see it).</p></div>'
                f'<script type="application/json" id="{eid}-data">{safe}</script>'
                f'<script>{script}</script>')

    @property
    def payload_bytes(self) -> int:
        return len(self._repr_html_().encode())


# ---- the same PRNG as AX.rng in js/common.js --------------------------------------------------------

class Mulberry32:
    """mulberry32 + Box-Muller, bit-for-bit the generator of ``AX.rng`` (tests and data use both)."""

    def __init__(self, seed: int):
        self.a, self.spare = seed & 0xFFFFFFFF, None

    def uniform(self) -> float:
        self.a = (self.a + 0x6D2B79F5) & 0xFFFFFFFF
        t = self.a
        t = _imul(t ^ (t >> 15), t | 1)
        t ^= (t + _imul(t ^ (t >> 7), t | 61)) & 0xFFFFFFFF
        return ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296

    def normal(self) -> float:
        if self.spare is not None:
            s, self.spare = self.spare, None
            return s
        u, v = 1 - self.uniform(), self.uniform()
        m = math.sqrt(-2 * math.log(u))
        self.spare = m * math.sin(2 * math.pi * v)
        return m * math.cos(2 * math.pi * v)


def _imul(a: int, b: int) -> int:
    return (a * b) & 0xFFFFFFFF


# ---- data from the library ------------------------------------------------------------------------

def _pair0(v):
    return v[0] if isinstance(v, tuple) else v


@cache
def model_spec(name: str, **kwargs) -> dict:
    """The leaf layers of ``get_model(name, **kwargs)`` as JSON-able dicts (what ``AX.trace`` walks).

    Cached (building the paper's network takes a second): treat the result as read-only."""
    from torch import nn

    from ..models import get_model

    model = get_model(name, **kwargs)
    layers = []
    for lname, m in model.named_modules():
        if not lname or list(m.children()):
            continue
        d: dict = {"name": lname, "kind": type(m).__name__}
        if isinstance(m, nn.Conv2d):
            d.update(cin=m.in_channels, cout=m.out_channels, k=_pair0(m.kernel_size), s=_pair0(m.stride),
                     p=_pair0(m.padding), d=_pair0(m.dilation), groups=m.groups, bias=m.bias is not None,
                     ceil=False)
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            k = _pair0(m.kernel_size)
            d.update(k=k, s=_pair0(m.stride or k), p=_pair0(m.padding),
                     d=_pair0(getattr(m, "dilation", 1)), ceil=bool(m.ceil_mode))
        elif isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            d.update(out=_pair0(m.output_size))
        elif isinstance(m, nn.Linear):
            d.update({"in": m.in_features, "out": m.out_features, "bias": m.bias is not None})
        else:
            d["params"] = sum(p.numel() for p in m.parameters(recurse=False))
        layers.append(d)
    return {"model": name, "class": type(model).__name__, "in_channels": getattr(model, "in_channels", 3),
            "layers": layers}


CH1_MODELS = ("alexnet", "alexnet_torchvision", "alexnet_d2l", "alexnet_small", "lenet5")


def conv_arithmetic(model: str = "alexnet", input_size: int = 224, models=CH1_MODELS) -> Explorer:
    """Chapter 1: every layer's output shape, parameters and FLOPs for a variant and an input size;
    edit one layer's kernel/stride/padding/dilation and see the formula with the numbers."""
    from ..arithmetic import FORMULA
    return Explorer("conv_arithmetic", {"models": {m: model_spec(m) for m in models}, "model": model,
                                        "size": input_size, "formula": FORMULA},
                    "Convolution arithmetic on the real networks")


def receptive_field(model: str = "alexnet", input_size: int = 224,
                    models=("lenet5", "alexnet_small", "alexnet_d2l", "alexnet")) -> Explorer:
    """Chapter 2: the receptive field and the jump of a unit after each conv/pool layer, drawn on the
    input."""
    return Explorer("receptive_field", {"models": {m: model_spec(m) for m in models}, "model": model,
                                        "size": input_size}, "Receptive field of one unit, layer by layer")


def depth_signal(activation: str = "tanh", depth: int = 20, width: int = 64, batch: int = 16,
                 seed: int = 0) -> Explorer:
    """Chapter 3: activation size and weight-gradient size through a deep fully connected stack,
    computed in the page (seeded PRNG) for ReLU, tanh and sigmoid."""
    return Explorer("depth_signal", {"activation": activation, "depth": depth, "width": width,
                                     "batch": batch, "seed": seed}, "Signal and gradient through depth")


def _stored_activations(n: int, seed: int) -> list[float]:
    r = Mulberry32(seed)
    return [round(max(0.0, r.normal() + 0.3), 3) for _ in range(n)]


def dropout(p: float = 0.5, n: int = 16, seed: int = 1) -> Explorer:
    """Chapter 4: a dropout mask on a stored activation vector, inverted-dropout scaling, the mean over
    many masks."""
    return Explorer("dropout", {"p": p, "a": _stored_activations(n, seed), "seed": seed},
                    "Dropout masks and the train/test scaling")


def demo_image(size: int = 48) -> list[list[list[int]]]:
    """A small synthetic colour picture (sky, sun, house, grass), HxWx3 bytes; deterministic."""
    img = []
    for y in range(size):
        row = []
        for x in range(size):
            t = y / (size - 1)
            r, g, b = 90 + 80 * t, 150 + 60 * t, 235 - 30 * t  # sky
            if (x - 0.75 * size) ** 2 + (y - 0.22 * size) ** 2 < (0.12 * size) ** 2:
                r, g, b = 250, 210, 60  # sun
            if y > 0.7 * size:
                r, g, b = 60 + 40 * ((x * 7 + y * 3) % 5) / 4, 150 - 20 * ((x + y) % 3) / 2, 50  # grass
            if 0.15 * size < x < 0.5 * size and 0.45 * size < y <= 0.75 * size:
                r, g, b = 190, 50, 40  # house
                if 0.28 * size < x < 0.37 * size and y > 0.6 * size:
                    r, g, b = 90, 55, 30  # door
            if 0.1 * size < x < 0.55 * size and 0.3 * size < y <= 0.45 * size and \
                    abs(x - 0.325 * size) < (y - 0.3 * size) * 1.5:
                r, g, b = 110, 40, 40  # roof
            row.append([int(round(v)) for v in (r, g, b)])
        img.append(row)
    return img


def augmentation(size: int = 48, crop: int = 40) -> Explorer:
    """Chapter 5: a random crop window, a horizontal flip and the paper's PCA colour shift, on a small
    image, computed in the page; the eigen-pairs are alexnet_lib.augment's ImageNet constants."""
    from ..augment import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC
    img = demo_image(size)
    flat = [v for row in img for px in row for v in px]
    return Explorer("augmentation", {"size": size, "crop": crop, "pixels": flat,
                                     "eigval": list(IMAGENET_PCA_EIGVAL),
                                     "eigvec": [list(r) for r in IMAGENET_PCA_EIGVEC], "std": 0.1},
                    "Crops, flips and PCA colour shifts")


def lrn(seed: int = 0, channels: int = 32) -> Explorer:
    """Chapter 6: the paper's LRN on the channel vector at one position of conv1's output (the paper's
    network with its initialisation, on the demo image with normalised pixels and with centred raw pixels:
    0..255 minus the per-channel mean, the paper's input scale)."""
    import torch

    from ..models import get_model
    torch.manual_seed(seed)
    conv = get_model("alexnet").features[0]
    img = torch.tensor(demo_image(64), dtype=torch.float32).permute(2, 0, 1)[None]  # 0..255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out_norm = torch.relu(conv((img / 255 - mean) / std))
        out_raw = torch.relu(conv(img - 255 * mean))  # the paper's input: raw 0..255 values minus their mean
    # the position whose channel vector has the most energy at normalised scale
    energy = out_norm[0].pow(2).sum(0)
    pos = divmod(int(energy.argmax()), energy.shape[1])
    pick = lambda t: [round(float(v), 5) for v in t[0, :channels, pos[0], pos[1]]]  # noqa: E731
    return Explorer("lrn", {"normalised": pick(out_norm), "raw": pick(out_raw), "position": list(pos),
                            "k": 2.0, "n": 5, "alpha": 1e-4, "beta": 0.75},
                    "Local response normalisation on conv1's channels")


def epoch_time(model: str = "alexnet_d2l", image_size: int = 224, n_images: int = 60_000,
               gflops: float = 100.0, models=("alexnet_d2l", "alexnet_torchvision", "alexnet",
                                              "alexnet_small", "lenet5")) -> Explorer:
    """Chapter 8: epoch time = images x training FLOPs per image / achieved FLOP/s, for any input size;
    the models as built for Fashion-MNIST (1 channel, 10 classes) and for ImageNet (3 channels, 1,000
    classes), which the ImageNet preset switches to."""
    specs = {m: model_spec(m, in_channels=1, num_classes=10) for m in models}
    imagenet = {m: model_spec(m, in_channels=3, num_classes=1000) for m in models}
    return Explorer("epoch_time", {"models": specs, "imagenet_models": imagenet, "model": model,
                                   "size": image_size, "n": n_images, "gflops": gflops},
                    "Epoch-time calculator")
