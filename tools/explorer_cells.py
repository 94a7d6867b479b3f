#!/usr/bin/env python3
"""Insert (or update) the in-page explorer cells of the chapter notebooks, and store their outputs.

Each explorer is two cells: a short markdown cell (what it shows, what to try, what to notice) and one
code cell that displays an ``alexnet_lib.explore`` object. Both carry a marker (``<!-- explorer: NAME -->``
and ``# explorer: NAME``); a cell with the marker is updated where it is, and a missing pair is inserted
at its anchor (before or after the first cell with a line starting with the anchor text), so the script is
idempotent and can be re-applied after other edits of the notebooks. Only these cells are executed, in a
fresh kernel (nbclient), with the repository on PYTHONPATH; no other cell is run or changed.

    python tools/explorer_cells.py                 # all chapters
    python tools/explorer_cells.py 01 06           # chapters whose file name starts with 01 or 06
    python tools/explorer_cells.py --check         # exit 1 if a notebook lacks its cells or they differ
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
STATIC = ("It runs in the page (JavaScript, computed from data that the cell embeds), so it also works on "
          "the static book page, offline, with no kernel.")

# notebook -> list of (name, (where, anchor), markdown, code)
CELLS: dict[str, list[tuple[str, tuple[str, str], str, str]]] = {
    "01_convolution_arithmetic.ipynb": [(
        "conv_arithmetic", ("before", "## Receptive fields"),
        f"""### Explore: the arithmetic of the real networks

The explorer below walks the layers of the library's own models (`get_model(name)`, read by the cell)
with the output-size formula, and counts each layer's parameters and FLOPs as `layer_table` does. {STATIC}
(The sliders of *Try it* above are ipywidgets: they need a running kernel, and on the static page they
only show their saved state.)

Things to try:
- Pick **Edit layer** `features.0` of `alexnet` and set its padding to 0: at 224 px the first `Linear`
  now gets 6,400 features instead of the 9,216 it was built for (an error), while 227 px gives 55×55
  again. That is the 224-or-227 puzzle: the paper's 224 only works with padding.
- Press **32 px**: the maps shrink to 1×1 and the last max-pool's formula gives 0, the collapse of the
  32×32 section below. Any edit that makes a layer's output smaller than 1 is shown as an error.
- Tick **Resize the first Linear to fit** and change a stride: the parameters of `classifier.1` follow
  the size of the last feature map, while the convolutions' parameters do not depend on the input size.""",
        "# explorer: conv_arithmetic\nfrom alexnet_lib.explore import conv_arithmetic\n\n"
        "conv_arithmetic(model=\"alexnet\", input_size=224)",
    )],
    "02_lenet_vs_alexnet.ipynb": [(
        "receptive_field", ("before", "### What changed between 1998 and 2012"),
        f"""### Explore: how much of the image one unit sees

The receptive field of a unit is the patch of input pixels that can change it; the jump is the distance
in input pixels between neighbouring units. The explorer computes both after every convolution and
pooling layer of the library's models, as `alexnet_lib.receptive_fields` does, and draws the receptive
field of the centre unit on the input. {STATIC} (The sliders at the end of this chapter need a running
kernel.)

Things to try: with `lenet5` at 28 px, a unit after the last pooling layer sees 16×16 pixels, one every
4 px. With `alexnet` at 224 px, a unit of the last pooling layer sees 195×195 pixels, one every 32 px:
the depth and the strides, not the kernel sizes alone, make AlexNet's last units see most of the image.
With `alexnet` at 32 px, the map of the last pooling layer is empty (shown in red).""",
        "# explorer: receptive_field\nfrom alexnet_lib.explore import receptive_field\n\n"
        "receptive_field(model=\"lenet5\", input_size=28)",
    )],
    "03_relu.ipynb": [(
        "depth_signal", ("before", "## 3.4"),
        f"""### Explore: signal and gradient through depth, in the page

The sliders above redraw their figure only with a running kernel. The explorer below computes a smaller
version of the same experiment in the page: a stack of 64-wide linear layers without bias, weights drawn
from a seeded generator with standard deviation *scale*/√64, 16 random inputs, forward and backward
passes in JavaScript (`tests/test_explorers.py` checks them against PyTorch's autograd). {STATIC}

Things to try: with **sigmoid** at depth 20 the gradient of the first layer's weights is about $10^{{-12}}$
times that of the last layer's. Switch to **relu**: the two are within a factor of about 1, and moving
the weight scale does not change that ratio; it changes the size of the activations instead, which
shrink or grow geometrically with depth unless the scale is near √2 (He initialisation). **tanh**
also keeps the ratio near 1 here, but its activations shrink with depth at scale 1 (from about 0.65
after layer 1 to 0.15 after layer 20).""",
        "# explorer: depth_signal\nfrom alexnet_lib.explore import depth_signal\n\n"
        "depth_signal(activation=\"sigmoid\", depth=20)",
    )],
    "04_dropout.ipynb": [(
        "dropout", ("after", "widgets.interact(_draw"),
        f"""### Explore: masks and scaling without a kernel

The sliders above need a running kernel. The explorer below applies dropout to a stored vector of 16
activations. {STATIC}

Things to try: press **New mask** a few times: each mask keeps a different subset, and the kept units are
divided by $1-p$ (inverted dropout), so the output sum equals the input sum on average (one mask over 16
units can be far off), while the paper's training output (`a·m`, no division) is $(1-p)$ times as large on
average. Switch **Show** to the test view:
inverted dropout uses the activations as they are, the paper multiplies them by $1-p$. Raise **Average
over**: the mean of the inverted-dropout output over many masks approaches the activations themselves,
its expected value, and the more so the more masks are averaged.""",
        "# explorer: dropout\nfrom alexnet_lib.explore import dropout\n\ndropout(p=0.5)",
    )],
    "05_data_augmentation.ipynb": [(
        "augmentation", ("before", "## 5.3"),
        f"""### Explore: crop, flip and colour shift in the page

A small synthetic picture (48×48, drawn by `alexnet_lib.explore.demo_image`) with a 40×40 crop window, a
horizontal flip and the PCA colour shift $\\sum_i \\mathbf p_i \\alpha_i \\lambda_i$ with the ImageNet
eigenvalues and eigenvectors of `alexnet_lib.augment` (the same shift as `FancyPCA.shift`).
{STATIC} (The sliders of section 5.7 need a running kernel.)

Things to try: **Draw like the paper** draws $\\alpha_i \\sim \\mathcal N(0, 0.1^2)$, a random crop and a coin
for the flip; the printed shift is a few grey levels out of 255. Move $\\alpha_1$ to ±1 (ten standard
deviations): the first eigenvector, almost equal in R, G and B, makes the whole image brighter or darker;
$\\alpha_2$ and $\\alpha_3$ change the hue, but their eigenvalues are about {{glue:text}}`imagenet_ratio` and
{{glue:text}}`imagenet_ratio3` times smaller.""",
        "# explorer: augmentation\nfrom alexnet_lib.explore import augmentation\n\naugmentation()",
    )],
    "06_lrn_vs_batchnorm.ipynb": [(
        "lrn", ("before", "## Summary"),
        f"""### Explore: when LRN is a constant factor

The widget above redraws only with a running kernel. The explorer below applies the paper's LRN (the formula
of `alexnet_lib.LocalResponseNorm`) to the 32 first channels at one position of conv1 + ReLU of the
paper's network (its initialisation, seeded) on a small demo image, with inputs either normalised or
centred raw pixels (values 0..255 minus ImageNet's mean colour, the paper's input scale). {STATIC}

Things to try: with the paper's constants and normalised inputs, $\\alpha \\sum a^2$ is far below $k = 2$
and every channel is divided by the same $k^{{\\beta}}$: the ratio $b/a$ is $k^{{-\\beta}} \\approx 0.59$ for
all of them (the line above the chart prints the largest $\\alpha \\sum a^2$ and the range of $b/a$).
Switch to centred raw pixels: the activations are much larger, $\\alpha \\sum a^2$ is no longer
negligible against $k$, and the ratio varies across channels: LRN now divides a channel by more where it
and its neighbours are strong. At normalised scale, $k = 0.1$ with $\\alpha = 0.1$ makes it act too.""",
        "# explorer: lrn\nfrom alexnet_lib.explore import lrn\n\nlrn()",
    )],
    "08_training_fast.ipynb": [(
        "epoch_time", ("before", "## Time to accuracy"),
        f"""### Explore: the calculator without a kernel

The widget above needs a running kernel. The calculator below does the same arithmetic in the page:
FLOPs of one training step per image (3 × the forward FLOPs, as `alexnet_lib.arithmetic.train_flops`, counted
layer by layer for any input size) × images per epoch ÷ the GFLOP/s you type in. {STATIC}

Things to try: type the GFLOP/s measured above for your loop; compare `alexnet_d2l` on Fashion-MNIST
resized to 224 px with `alexnet_small` at 28 px at the same GFLOP/s; press **ImageNet at 224 px** to see
what an epoch of the paper's 1.28 million images costs at that speed.""",
        "# explorer: epoch_time\nfrom alexnet_lib.explore import epoch_time\n\n"
        "epoch_time(model=\"alexnet_d2l\", image_size=224)",
    )],
}


def _marker_md(name: str) -> str:
    return f"<!-- explorer: {name} -->"


def _marker_code(name: str) -> str:
    return f"# explorer: {name}"


def _find(cells, pred) -> int | None:
    return next((i for i, c in enumerate(cells) if pred(c)), None)


def _line_starts(cell, text: str) -> bool:
    return any(line.startswith(text) for line in cell.source.splitlines())


def execute(codes: list[str]) -> list[tuple[list, int]]:
    """Run the code cells in one fresh kernel (cwd notebooks/, repository first on PYTHONPATH)."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in codes])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    for c in nb.cells:
        errors = [o for o in c.outputs if o.get("output_type") == "error"]
        if errors:
            e = errors[0]
            raise RuntimeError(f"{c.source.splitlines()[0]}: {e.get('ename')}: {e.get('evalue')}")
    return [(c.outputs, c.execution_count) for c in nb.cells]


def apply(path: Path, specs, check: bool = False) -> bool:
    """Insert/update the explorer cells of one notebook; returns True if it changed (or would change)."""
    nb = nbformat.read(path, as_version=4)
    before = copy.deepcopy(nb)
    for name, (where, anchor), md, code in specs:
        md_src = f"{_marker_md(name)}\n{md}"
        mmd, mcode = _marker_md(name), _marker_code(name)
        i_md = _find(nb.cells, lambda c, m=mmd: c.cell_type == "markdown" and m in c.source)
        i_code = _find(nb.cells, lambda c, m=mcode: c.cell_type == "code" and c.source.startswith(m))
        if i_code is None:
            i = _find(nb.cells, lambda c, a=anchor: _line_starts(c, a))
            if i is None:
                raise SystemExit(f"{path.name}: no cell with a line starting with {anchor!r} "
                                 f"to put {name} {where}")
            at = i if where == "before" else i + 1
            cell = nbformat.v4.new_code_cell(code)
            cell.id = f"explorer-{name.replace('_', '-')}"
            nb.cells.insert(at, cell)
            i_code = at
            if i_md is not None and i_md >= at:
                i_md += 1
        else:
            nb.cells[i_code].source = code
        if i_md is None:
            cell = nbformat.v4.new_markdown_cell(md_src)
            cell.id = f"explorer-{name.replace('_', '-')}-md"
            nb.cells.insert(i_code, cell)
        else:
            nb.cells[i_md].source = md_src
    changed_source = [c.source for c in nb.cells] != [c.source for c in before.cells]
    if check:
        return changed_source
    codes = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and
             any(c.source.startswith(_marker_code(n)) for n, *_ in specs)]
    for (i, _), (outputs, count) in zip(codes, execute([c.source for _, c in codes])):
        nb.cells[i].outputs = outputs
        nb.cells[i].execution_count = count
        nb.cells[i].metadata = {}
    nbformat.validate(nb)
    if nb != before:
        nbformat.write(nb, path)
        return True
    return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("chapters", nargs="*", help="file-name prefixes (01, 06, ...); all when none")
    ap.add_argument("--check", action="store_true", help="only report notebooks whose explorer cells differ")
    args = ap.parse_args(argv)
    todo = {n: s for n, s in CELLS.items()
            if not args.chapters or any(n.startswith(c) for c in args.chapters)}
    stale = []
    for name, specs in todo.items():
        changed = apply(NOTEBOOKS / name, specs, check=args.check)
        print(f"{name}: {'differs' if args.check and changed else 'updated' if changed else 'up to date'}")
        if changed:
            stale.append(name)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
