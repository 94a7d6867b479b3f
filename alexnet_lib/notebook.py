"""What every chapter notebook shares: the QUICK switch and a report of the hardware and settings.

``ALEXNET_QUICK=1`` in the environment makes the long cells of every chapter short (fewer images,
epochs and seeds) so that ``pytest --nbval`` runs the whole book in minutes. The stored outputs in the
notebooks come from full runs (``make notebooks``); each notebook prints what produced them.
"""

from __future__ import annotations

import os

from .device import describe

__all__ = ["QUICK", "quick", "pick", "glue", "read_glue", "report_environment"]


def quick() -> bool:
    """True when ``ALEXNET_QUICK`` is set to 1/true/yes (short runs for tests)."""
    return os.environ.get("ALEXNET_QUICK", "").strip().lower() in {"1", "true", "yes", "on"}


QUICK = quick()


def pick(full, short):
    """``short`` in QUICK mode, else ``full``: ``epochs = pick(10, 1)``."""
    return short if QUICK else full


def report_environment(**settings) -> dict:
    """Print (and return) the hardware, library versions and run settings behind a notebook's outputs."""
    info = {
        **describe(),
        "mode": "QUICK (ALEXNET_QUICK=1: short runs)" if QUICK else "full",
        **settings,
    }
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}} : {v}")
    return info


# myst-nb's glue format: the book's {glue:text} roles (and book/paper.md's table of the paper's claims)
# read outputs stored under this mime prefix with the "scrapbook" metadata. Written here so that the
# notebooks also run where myst-nb is not installed (Colab, a plain Jupyter).
_GLUE_PREFIX = "application/papermill.record/"


def glue(name: str, value, display: bool = False):
    """Store ``value`` in the cell's output under ``name``, as myst-nb's ``glue`` does, and return it.

    The prose then writes ``{glue:text}`name``` instead of typing the number, so the page always shows
    what the run computed. ``display=True`` also shows the value in the cell's output.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"glue: name must be an identifier such as 'relu_speedup', got {name!r}")
    from IPython.core.formatters import format_display_data
    from IPython.display import display as ipy_display

    bundle, metadata = format_display_data(value)
    prefix = "" if display else _GLUE_PREFIX
    metadata = dict(metadata or {}, scrapbook=dict(name=name, mime_prefix=prefix))
    ipy_display({prefix + k: v for k, v in bundle.items()}, raw=True, metadata=metadata)
    return value


def read_glue(path) -> dict:
    """The values glued in a notebook's stored outputs, ``{name: text}`` (their ``text/plain`` form, quotes
    of a glued string removed): how book/paper.md fills its table of the paper's claims from the chapters."""
    import ast
    import json
    from pathlib import Path

    values = {}
    for cell in json.loads(Path(path).read_text(encoding="utf-8")).get("cells", []):
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            text = out.get("data", {}).get(_GLUE_PREFIX + "text/plain", out.get("data", {}).get("text/plain"))
            if name and text is not None:
                text = "".join(text) if isinstance(text, list) else text
                try:
                    value = ast.literal_eval(text)
                    values[name] = value if isinstance(value, str) else text
                except (ValueError, SyntaxError):
                    values[name] = text
    return values
