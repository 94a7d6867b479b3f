#!/usr/bin/env python3
"""Write the Colab bootstrap cell, the first code cell of every chapter notebook, from one template.

The cell makes ``alexnet_lib`` importable: in a checkout (the notebook runs in ``notebooks/``) it puts the
checkout on ``sys.path``; elsewhere (Colab, a bare Jupyter) it installs the package from the repository,
whose URL is read from ``_config.yml`` (``repository: url:``), the only place it is written; when the
package is already importable the cell does nothing.

    python tools/sync_bootstrap.py            # rewrite the cell where it differs (or insert it)
    python tools/sync_bootstrap.py --check    # exit 1, listing them, when any notebook differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "alexnet_lib"
MARKER = f"# Make {PACKAGE} importable"

TEMPLATE = """\
# Make {package} importable: in a checkout use it in place, elsewhere (Colab) install it.
import importlib.util, os, sys
if importlib.util.find_spec("{package}") is None:
    if os.path.isdir("../{package}"):
        sys.path.insert(0, os.path.abspath(".."))
    else:
        %pip install -q "{target}\""""


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    url = (yaml.safe_load(config.read_text()) or {}).get("repository", {}).get("url")
    if not url:
        raise SystemExit(f"{config}: no `repository: url:`")
    return url.rstrip("/")


def install_target(url: str) -> str:
    """The pip requirement that installs the package from the repository (its default branch)."""
    return f"{PACKAGE} @ git+{url}"


def render_cell(target: str | None = None) -> str:
    """The cell's source; ``target`` (a pip requirement) defaults to the repository of _config.yml."""
    return TEMPLATE.format(package=PACKAGE, target=target or install_target(repository_url()))


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    return sorted((root / "notebooks").glob("*.ipynb"))


def sync(path: Path, source: str, write: bool) -> str | None:
    """None when the notebook's first code cell is ``source``; else what differs (fixed when ``write``)."""
    nb = nbformat.read(path, as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    first = nb.cells[code[0]] if code else None
    if first is not None and first.source == source:
        return None
    if first is not None and first.source.lstrip().startswith(MARKER):
        problem = "the bootstrap cell differs from the template"
        if write:
            first.source = source
            first.outputs = []
    else:
        problem = "the first code cell is not the bootstrap cell"
        if write:
            cell = nbformat.v4.new_code_cell(source)
            if nb.nbformat_minor < 5:  # cell ids came with nbformat 4.5
                del cell["id"]
            nb.cells.insert(code[0] if code else len(nb.cells), cell)
    if write:
        nbformat.validate(nb)
        nbformat.write(nb, path)
    return problem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any notebook differs")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args(argv)
    source = render_cell()
    paths = args.notebooks or chapter_notebooks()
    differ = 0
    for path in paths:
        problem = sync(path, source, write=not args.check)
        if problem:
            differ += 1
            print(f"{path}: {problem}" + ("" if args.check else " (rewritten)"))
    if args.check and differ:
        print(f"{differ} of {len(paths)} notebooks differ: run python tools/sync_bootstrap.py",
              file=sys.stderr)
        return 1
    print(f"sync_bootstrap: {len(paths)} notebooks, {differ} {'differ' if args.check else 'rewritten'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
