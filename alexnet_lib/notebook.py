"""What every chapter notebook shares: the QUICK switch and a report of the hardware and settings.

``ALEXNET_QUICK=1`` in the environment makes the long cells of every chapter short (fewer images,
epochs and seeds) so that ``pytest --nbval`` runs the whole book in minutes. The stored outputs in the
notebooks come from full runs (``make notebooks``); each notebook prints what produced them.
"""

from __future__ import annotations

import os
import platform

import torch

__all__ = ["QUICK", "quick", "pick", "report_environment", "cpu_name"]


def quick() -> bool:
    """True when ``ALEXNET_QUICK`` is set to 1/true/yes (short runs for tests)."""
    return os.environ.get("ALEXNET_QUICK", "").strip().lower() in {"1", "true", "yes", "on"}


QUICK = quick()


def pick(full, short):
    """``short`` in QUICK mode, else ``full``: ``epochs = pick(10, 1)``."""
    return short if QUICK else full


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report_environment(**settings) -> dict:
    """Print (and return) the hardware, library versions and run settings behind a notebook's outputs."""
    from .train import amp_dtype, select_device

    device = select_device()
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "cpu": f"{cpu_name()} ({os.cpu_count()} logical cores; torch threads: {torch.get_num_threads()})",
        "torch": torch.__version__,
        "precision": str(amp_dtype("auto", device) or torch.float32).replace("torch.", ""),
        "mode": "QUICK (ALEXNET_QUICK=1: short runs)" if QUICK else "full",
        **settings,
    }
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}} : {v}")
    return info
