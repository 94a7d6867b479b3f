"""Device, precision and hardware facts (alexnet_lib.device)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnet_lib.device import (
    DTYPE_NAMES,
    amp_dtype,
    autocast,
    autocast_dtype,
    bf16_hardware,
    cpu_flags,
    cpu_name,
    describe,
    keep_freed_memory,
    model_device,
    page_faults,
    peak_stats,
    select_device,
)


def test_select_device_and_autocast_dtype():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device().type in ("cuda", "mps", "cpu")
    assert autocast_dtype("cpu") in (torch.bfloat16, None)
    assert autocast_dtype("meta") is None
    if {"avx512_bf16", "amx_bf16"} & cpu_flags():
        assert autocast_dtype("cpu") == torch.bfloat16
        assert bf16_hardware("cpu") in ("AMX", "AVX-512 BF16")
    elif autocast_dtype("cpu") is None:
        assert bf16_hardware("cpu") == "none"


@pytest.mark.parametrize("device, match", [("tpu", "not a device"), ("gpu", "not a device"),
                                           (3.5, "not a device")])
def test_select_device_refuses_what_does_not_exist(device, match):
    with pytest.raises(ValueError, match=match):
        select_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device exists here")
def test_select_device_refuses_missing_cuda():
    with pytest.raises(ValueError, match="not available on this machine; available: cpu"):
        select_device("cuda")


def test_amp_dtype_per_precision():
    assert amp_dtype("fp32", "cpu") is None
    assert amp_dtype("bf16", "cpu") == torch.bfloat16 and amp_dtype("fp16", "cpu") == torch.float16
    assert amp_dtype("auto", "cpu") == autocast_dtype("cpu")
    if torch.cuda.is_available():  # fp16 (with loss scaling) where the GPU has no bf16
        assert amp_dtype("auto", "cuda") in (torch.bfloat16, torch.float16)
    with pytest.raises(ValueError, match="precision must be one of"):
        amp_dtype("int8", "cpu")
    assert DTYPE_NAMES[amp_dtype("fp32", "cpu")] == "fp32"


def test_autocast_context():
    lin = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with autocast("cpu", torch.bfloat16):
        assert lin(x).dtype == torch.bfloat16
    with autocast("cpu", None):
        assert lin(x).dtype == torch.float32


def test_model_device_and_description():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")
    assert model_device(nn.BatchNorm1d(2, affine=False)) == torch.device("cpu")
    info = describe("cpu")
    assert info["device"] == "cpu" and cpu_name() in info["cpu"] and info["torch"] == torch.__version__


def test_peak_stats_positive_and_rejects_unknown_kind():
    for kind in ("matmul", "conv"):
        st = peak_stats(torch.float32, "cpu", kind, n=128, seconds=0.01, repeats=1)
        assert st["wall"] > 0 and st["cpu"] > 0
    with pytest.raises(ValueError, match="kind must be one of 'matmul', 'conv'"):
        peak_stats(kind="fft")


def test_keep_freed_memory_reuses_large_blocks_and_restores():
    from alexnet_lib import device as D

    def faults_of_large_tensors():  # 64 MiB each, freed at once: above glibc's largest mmap threshold
        before = page_faults()
        for _ in range(4):
            torch.ones(16 * 2**20).sum()
        return page_faults() - before

    if D._glibc() is None or page_faults() is None:
        with keep_freed_memory() as kept:
            assert kept is False
        pytest.skip("glibc's mallopt or getrusage is not available here")
    outside = faults_of_large_tensors()
    with keep_freed_memory() as kept:
        with keep_freed_memory():  # nested: only the outermost block restores
            faults_of_large_tensors()  # the first one grows the heap
        inside = faults_of_large_tensors()
        assert D._kept["depth"] == 1
    assert kept is True and D._kept["depth"] == 0
    assert outside > 0 and inside < outside / 10, (outside, inside)
