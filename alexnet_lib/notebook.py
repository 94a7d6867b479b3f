"""What every chapter notebook shares: the QUICK switch and a report of the hardware and settings.

``ALEXNET_QUICK=1`` in the environment makes the long cells of every chapter short (fewer images,
epochs and seeds) so that ``pytest --nbval`` runs the whole book in minutes. The stored outputs in the
notebooks come from full runs (``make notebooks``); each notebook prints what produced them.
"""

from __future__ import annotations

import os

from .device import describe

__all__ = ["QUICK", "quick", "pick", "report_environment"]


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
